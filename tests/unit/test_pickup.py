"""Mid-stream pickup just after a failover (Firewall.pickup, Engine.pickup).

Regression for the short requests `bench failover` lost at `established` and `full` (async): a
connection established on fw1 in the millisecond before its SIGKILL had its ESTABLISHED write
still queued; the new owner met the server's response with no state anywhere, the store said
"unknown", and every retransmission was dropped (`no_flow`) until the client timed out.
"""

from __future__ import annotations

from fwcluster.core.decision import Reason
from fwcluster.core.states import FlowState
from fwcluster.engine.engine import Engine, EnginePolicy
from fwcluster.statetable.record import FlowRecord
from fwcluster.statetable.settings import SyncLevel
from fwcluster.statetable.shared import PUBLISHED

from .builders import ACK, FIN, PSH, RST, SYN, T0, firewall, key_of, tcp

WEB = '[policy]\ndefault = "drop"\n[[rules]]\naction = "accept"\nproto = "tcp"\ndport = 80\n'
RESPONSE = tcp(FIN | PSH | ACK, reply=True, seq=5001, ack=2001, data=b"HTTP/1.1 200 OK\r\n\r\n")
KEY = key_of(RESPONSE)


def test_a_segment_of_an_unknown_connection_is_taken_in_the_direction_the_rules_admit() -> None:
    fw = firewall(WEB, windows=True)
    assert fw.pickup(RESPONSE, T0)  # server -> client: the client opened it (to port 80)
    assert fw.state_of(KEY, T0) == FlowState.ESTABLISHED
    d = fw.decide(RESPONSE, T0)  # the FIN moves it on
    assert d.reason == Reason.TRACKED and d.after == FlowState.FIN_WAIT
    ack = tcp(ACK, seq=2001, ack=5001 + 19 + 1)  # the client's answer passes too
    assert fw.decide(ack, T0).reason == Reason.TRACKED


def test_no_pickup_of_what_the_rules_refuse_a_syn_a_rst_or_a_known_flow() -> None:
    fw = firewall(WEB, windows=True)
    assert not fw.pickup(tcp(ACK, sport=22, reply=True), T0)  # port 22: no rule either way
    assert not fw.pickup(tcp(SYN), T0)
    assert not fw.pickup(tcp(SYN | ACK, reply=True), T0)
    assert not fw.pickup(tcp(RST | ACK, reply=True), T0)
    assert not fw.pickup(tcp(FIN, reply=True), T0)  # no ACK: not a segment of a connection
    assert len(fw) == 0
    assert fw.pickup(RESPONSE, T0)
    assert not fw.pickup(RESPONSE, T0)  # there now: not taken again


def _engine() -> Engine:
    policy = EnginePolicy(publish=PUBLISHED[SyncLevel.ESTABLISHED], confirm=False)
    return Engine(firewall(WEB, windows=True), policy, now=T0)


def test_without_a_failover_a_miss_is_a_drop() -> None:
    e = _engine()
    e.packet(1, RESPONSE, T0)
    assert e.lookups == [(1, KEY)]
    e.lookup_done(1, None, T0 + 0.001)
    assert e.drops == [1] and e.accepts == [] and e.counters.picked_up == 0
    e.packet(2, RESPONSE, T0 + 0.2)  # the retransmission: the store said no a moment ago
    assert e.drops == [1, 2]


def test_just_after_a_failover_the_store_s_miss_is_picked_up_and_its_retransmission_too() -> None:
    e = _engine()
    e.packet(1, RESPONSE, T0)
    e.lookup_done(1, None, T0 + 0.001)
    assert e.drops == [1]
    e.pickup = True  # the master's takeover key, read by the heartbeat
    e.packet(2, RESPONSE, T0 + 0.2)  # negatively cached: no second look-up, taken at once
    assert e.accepts == [2] and e.counters.picked_up == 1
    assert e.firewall.state_of(KEY, T0 + 0.2) == FlowState.FIN_WAIT
    assert [ev.after for _, ev in e.writes] == [FlowState.FIN_WAIT]  # shared from then on
    other = tcp(ACK | PSH, reply=True, cport=40001, seq=7001, ack=3001, data=b"x")
    e.packet(3, other, T0 + 0.3)  # a first miss: asked, then taken on the answer
    assert e.lookups[-1] == (3, key_of(other))
    e.lookup_done(3, None, T0 + 0.301)
    assert e.accepts == [2, 3] and e.counters.picked_up == 2


def test_at_full_a_flow_known_only_by_its_syn_is_taken_on_in_its_own_direction() -> None:
    """At `full` the SYN's write may have come through and the SYN-ACK's and ESTABLISHED's not:
    the server's response is then invalid in SYN_SENT, and the store knows no more."""
    policy = EnginePolicy(publish=PUBLISHED[SyncLevel.FULL], confirm=False)
    e = Engine(firewall(WEB, windows=True), policy, now=T0)
    syn_sent = FlowRecord(KEY, FlowState.SYN_SENT, True, 1, 6, "fw1")
    assert e.record(syn_sent, T0)  # from the feed
    e.packet(1, RESPONSE, T0 + 0.2)
    assert e.lookups == [(1, KEY)]
    e.lookup_done(1, syn_sent, T0 + 0.201)  # the store has the SYN only
    assert e.drops == [1] and e.counters.picked_up == 0  # no failover: dropped as before
    e.pickup = True
    e.packet(2, RESPONSE, T0 + 0.6)
    assert e.lookups[-1] == (2, KEY)
    e.lookup_done(2, syn_sent, T0 + 0.601)
    assert e.accepts == [2] and e.counters.picked_up == 1
    assert e.firewall.state_of(KEY, T0 + 0.6) == FlowState.FIN_WAIT
    (_, ev), *_ = e.writes
    assert ev.after == FlowState.FIN_WAIT and ev.orig_is_lo and ev.version == 3  # past the store's 1
