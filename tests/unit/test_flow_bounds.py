"""``conntrack.max_flows`` holds for every way into the flow table, not only for packets that open
a flow: the feed, a look-up's answer, a snapshot (join, refill, resync), a write's answer and a
confirmed deferred change. Refused ones are counted by source; tracked flows are never evicted.
The engine and core only (no root, no store)."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP

from fwcluster.core.decision import Reason
from fwcluster.core.flowtable import FlowTable, pack
from fwcluster.core.packet import KEY4
from fwcluster.core.rules import PROTO_TCP
from fwcluster.core.states import FlowState
from fwcluster.core.timeouts import Timeouts
from fwcluster.engine.engine import NO_TICKET, Engine, EnginePolicy, Outcome
from fwcluster.statetable.record import FlowRecord
from fwcluster.statetable.settings import SyncLevel
from fwcluster.statetable.shared import PUBLISHED

from .builders import firewall

S = FlowState
T0 = 1000.0
MAX = 4
SYN, ACK = 0x02, 0x10


def key(i: int) -> bytes:
    return KEY4.pack(PROTO_TCP, bytes([198, 18, 0, 1]), 1024 + i, bytes([198, 19, 0, 2]), 80)


def syn(i: int) -> bytes:
    return bytes(IP(src="198.18.0.1", dst="198.19.0.2") / TCP(sport=1024 + i, dport=80, flags="S", seq=1000))


def rec(i: int, state: FlowState = S.ESTABLISHED, version: int = 3) -> FlowRecord:
    return FlowRecord(key(i), state, True, version, PROTO_TCP, "fw9")


def engine(confirm: bool = False, max_flows: int = MAX, timeouts: Timeouts | None = None) -> Engine:
    policy = EnginePolicy(publish=PUBLISHED[SyncLevel.FULL], confirm=confirm)
    return Engine(firewall(max_flows=max_flows, timeouts=timeouts), policy, now=T0)


def test_the_feed_cannot_grow_the_table_beyond_its_bound() -> None:
    e = engine()
    applied = [e.record(rec(i), T0) for i in range(50)]
    assert applied == [True] * MAX + [False] * (50 - MAX)
    assert len(e) == MAX
    assert e.counters.flows_refused["feed"] == 50 - MAX
    # flows already held still take news, and a removal makes room for the next one
    assert e.record(rec(0, S.FIN_WAIT, 4), T0)
    assert e.firewall.state_of(key(0), T0) == S.FIN_WAIT
    assert e.record(rec(1, S.REMOVED, 4), T0)
    assert e.record(rec(40), T0)
    assert len(e) == MAX


def test_a_local_syn_still_finds_no_room_and_tracked_flows_stay() -> None:
    e = engine()
    for i in range(MAX):
        e.record(rec(i), T0)
    e.packet(1, syn(100), T0)
    assert e.drops == [1] and e.counters.by_reason[Reason.TABLE_FULL] == 1
    assert all(e.firewall.state_of(key(i), T0) == S.ESTABLISHED for i in range(MAX))


def test_look_up_answers_respect_the_bound() -> None:
    e = engine()
    for i in range(MAX):
        e.record(rec(i), T0)
    # a refresh (nobody waits) and a held packet's look-up, both answered with a new flow
    e.lookup_done(NO_TICKET, rec(10), T0)
    assert len(e) == MAX and e.counters.flows_refused["lookup"] == 1
    ack = bytes(IP(src="198.18.0.1", dst="198.19.0.2") / TCP(sport=1024 + 11, dport=80, flags="A", seq=1001))
    e.packet(5, ack, T0)
    assert 5 in e.held and e.lookups == [(5, key(11))]
    e.lookup_done(5, rec(11), T0)
    assert e.drops == [5]  # the store knew it, but there is no room: the packet finds no flow
    assert len(e) == MAX and e.counters.flows_refused["lookup"] == 2


def test_a_snapshot_loads_at_most_max_flows() -> None:
    e = engine()
    assert e.load([rec(i) for i in range(20)] + [rec(0)], T0) == MAX + 1  # the duplicate overwrote
    assert len(e) == MAX
    assert e.counters.flows_refused["load"] == 20 - MAX  # the duplicate of a loaded flow needs no room
    # into a table that holds flows already (a resync): merges, within the bound
    assert e.load([rec(i, S.FIN_WAIT, 4) for i in range(30, 40)], T0) == 0
    assert len(e) == MAX and e.counters.flows_refused["load"] == 20 - MAX + 10


def test_a_write_answer_cannot_grow_the_table() -> None:
    e = engine()
    for i in range(MAX):
        e.record(rec(i), T0)
    e.write_done(NO_TICKET, Outcome.REFUSED, rec(20), T0)
    assert len(e) == MAX and e.counters.flows_refused["write"] == 1


def test_a_confirmed_open_that_lost_its_room_meanwhile_is_dropped() -> None:
    """Sync confirmation: the SYN found room when it was decided (its change is deferred, so it
    takes no slot), then the feed filled the table before the store confirmed it."""
    e = engine(confirm=True)
    e.packet(1, syn(100), T0)
    assert 1 in e.held
    for i in range(MAX):
        e.record(rec(i), T0)
    e.write_done(1, Outcome.CONFIRMED, None, T0 + 0.001)
    assert e.drops == [1] and e.counters.by_reason[Reason.TABLE_FULL] == 1
    assert len(e) == MAX and e.counters.flows_refused["write"] == 1
    assert e.firewall.state_of(key(100), T0) is None


def test_a_full_table_reclaims_expired_flows_for_a_record() -> None:
    short = Timeouts(tcp_established=1.0)
    e = engine(timeouts=short)
    for i in range(MAX):
        e.record(rec(i), T0)
    assert not e.record(rec(10), T0 + 0.5)
    assert e.record(rec(10), T0 + 2.0)  # the others expired: the table sweeps for room first
    assert len(e) <= MAX


def test_room_for_is_bounded_and_counts() -> None:
    t = FlowTable(2)
    t.flows[key(0)] = pack(S.ESTABLISHED, True, 10_000)
    t.flows[key(1)] = pack(S.ESTABLISHED, True, 10_000)
    assert t.room_for(key(0), 1.0)  # present already
    assert not t.room_for(key(2), 1.0) and t.refused == 1
    assert not t.room_for(key(3), 1.0) and t.refused == 2  # the same millisecond: no second sweep
    assert t.room_for(key(2), 11.0)  # both expired by then


def test_the_sweep_survives_an_empty_key() -> None:
    """A key that is no flow key (only the strict decoder keeps them out) does not stop the sweep."""
    t = FlowTable(10)
    t.flows[b""] = pack(S.ESTABLISHED, True, 1000)
    t.flows[key(1)] = pack(S.ESTABLISHED, True, 1000)
    assert t.sweep(2.0, 100) == 2
    assert [ev.proto for ev in t.take_removed()] == [0, PROTO_TCP]
