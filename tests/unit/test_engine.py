"""The engine, driven with bytes, store outcomes and time (no root, no sockets, no store).

The transaction rule: a change sync confirmation waits for is part of the table only once the
store confirmed it; a held packet that is dropped leaves its flow exactly as it was. Every packet
gets exactly one verdict. Records never move a flow backwards, across a version wrap too.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwcluster.core.decision import Reason
from fwcluster.core.flowtable import VERSION_MOD, version_newer
from fwcluster.core.states import FlowState
from fwcluster.engine.engine import NO_TICKET, Engine, EnginePolicy, Outcome
from fwcluster.statetable.record import FlowRecord, clean_allows
from fwcluster.statetable.settings import SyncLevel
from fwcluster.statetable.shared import LOOKUP_RETRY, PUBLISHED, opening_hints

from .builders import ACK, FIN, RST, SYN, T0, firewall, key_of, tcp, udp

S = FlowState
SYN_PKT = tcp(SYN)
SYNACK = tcp(SYN | ACK, reply=True, ack=1001)
ACK_PKT = tcp(ACK, seq=1001, ack=1)
KEY = key_of(SYN_PKT)


def engine(
    level: SyncLevel = SyncLevel.FULL, confirm: bool = True, rules: str | None = None, **kw: object
) -> Engine:
    policy = EnginePolicy(publish=PUBLISHED[level], confirm=confirm, **kw)  # type: ignore[arg-type]
    return Engine(firewall(rules) if rules else firewall(), policy, now=T0)


def verdicts(e: Engine) -> tuple[list[int], list[int]]:
    out = (list(e.accepts), list(e.drops))
    e.accepts.clear()
    e.drops.clear()
    return out


def rec(state: FlowState, version: int, orig_is_lo: bool = True, key: bytes = KEY) -> FlowRecord:
    return FlowRecord(key, state, orig_is_lo, version, key[0], "fw9")


def state(e: Engine, key: bytes = KEY, now: float = T0 + 0.01) -> FlowState | None:
    return e.firewall.state_of(key, now)


# --------------------------------------------------------------------------- without confirmation
def test_level_none_accepts_at_once_and_writes_nothing() -> None:
    e = engine(SyncLevel.NONE, confirm=False)
    for pid, buf in enumerate((SYN_PKT, SYNACK, ACK_PKT)):
        e.packet(pid, buf, T0)
    assert verdicts(e) == ([0, 1, 2], [])
    assert e.writes == [] and e.lookups == [] and not e.held
    assert state(e) == S.ESTABLISHED


def test_async_confirmation_commits_at_once_and_queues_the_write() -> None:
    e = engine(confirm=False)
    e.packet(1, SYN_PKT, T0)
    assert verdicts(e) == ([1], [])
    assert state(e) == S.SYN_SENT
    assert [(t, ev.after) for t, ev in e.writes] == [(NO_TICKET, S.SYN_SENT)]


# --------------------------------------------------------------------------- sync confirmation
def test_a_held_packet_commits_only_on_confirmation() -> None:
    e = engine()
    e.packet(7, SYN_PKT, T0)
    assert verdicts(e) == ([], []) and 7 in e.held
    assert state(e) is None  # decided, not yet part of the table
    assert [(t, ev.after) for t, ev in e.writes] == [(7, S.SYN_SENT)]
    e.write_done(7, Outcome.CONFIRMED, None, T0 + 0.001)
    assert verdicts(e) == ([7], []) and not e.held
    assert state(e) == S.SYN_SENT
    assert e.counters.by_reason[Reason.RULE_ACCEPT] == 1


def test_a_failed_write_drops_the_packet_and_leaves_the_flow_as_it_was() -> None:
    for outcome in (Outcome.FAILED, Outcome.REFUSED):
        e = engine()
        e.packet(1, SYN_PKT, T0)
        e.write_done(1, outcome, None, T0 + 0.001)  # REFUSED without a record: as a failure
        assert verdicts(e) == ([], [1])
        assert state(e) is None
        # The client retransmits: decided, held and written again (not passed as a TRACKED packet).
        e.writes.clear()
        e.packet(2, SYN_PKT, T0 + 1)
        assert 2 in e.held and [(t, ev.after) for t, ev in e.writes] == [(2, S.SYN_SENT)]
        e.write_done(2, Outcome.CONFIRMED, None, T0 + 1.001)
        assert verdicts(e) == ([2], [])
        assert state(e, now=T0 + 1.01) == S.SYN_SENT


def test_a_write_that_times_out_is_dropped_unless_on_timeout_accepts() -> None:
    e = engine()
    e.packet(1, SYN_PKT, T0)
    e.tick(T0 + 0.049)
    assert 1 in e.held
    e.tick(T0 + 0.05)
    assert verdicts(e) == ([], [1])
    assert state(e) is None
    assert e.counters.by_reason[Reason.STORE_TIMEOUT] == 1
    e.write_done(1, Outcome.CONFIRMED, None, T0 + 0.06)  # too late: no second verdict
    assert verdicts(e) == ([], []) and state(e) is None

    lenient = engine(accept_on_timeout=True)
    lenient.packet(1, SYN_PKT, T0)
    lenient.tick(T0 + 1)
    assert verdicts(lenient) == ([1], [])
    assert state(lenient, now=T0 + 1) == S.SYN_SENT  # it passed, so its flow moved on


def test_a_refused_clean_write_decides_the_packet_again_on_the_stores_state() -> None:
    # The SYN-ACK's write is refused: the store already holds ESTABLISHED (another instance saw
    # the client's ACK). The SYN-ACK is a retransmission there: it passes, nothing more to write.
    e = engine()
    e.firewall.merge(rec(S.SYN_SENT, 1), T0)
    e.packet(3, SYNACK, T0)
    assert [(t, ev.after) for t, ev in e.writes] == [(3, S.SYN_RECV)]
    e.writes.clear()
    e.write_done(3, Outcome.REFUSED, rec(S.ESTABLISHED, 3), T0 + 0.001)
    assert verdicts(e) == ([3], [])
    assert state(e) == S.ESTABLISHED
    assert e.counters.write_refused == 1


def test_an_async_syn_over_a_closed_earlier_life_goes_on_past_the_stores_version() -> None:
    # The client reused its port; the store holds the earlier life, closed at version 7, that
    # another instance carried. The SYN passed here (async) and its write is refused.
    e = engine(confirm=False)
    e.packet(1, SYN_PKT, T0)
    ((_, ev),) = e.writes
    e.writes.clear()
    sent = rec(ev.after, ev.version)
    e.write_done(NO_TICKET, Outcome.REFUSED, rec(S.CLOSE, 7), T0 + 0.001, sent)
    assert state(e) == S.SYN_SENT  # not the closed record: the new life goes on
    assert [(t, w.after, w.version) for t, w in e.writes] == [(NO_TICKET, S.SYN_SENT, 8)]
    assert e.counters.renumbered == 1 and e.counters.write_refused == 1
    e.writes.clear()
    e.packet(2, SYNACK, T0 + 0.002)  # the SYN-ACK passes, and its change is newer than the store's
    assert verdicts(e) == ([1, 2], [])
    assert [(w.after, w.version) for _, w in e.writes] == [(S.SYN_RECV, 9)]
    # A later write of the same flow refused on the old record changes nothing now.
    e.write_done(NO_TICKET, Outcome.REFUSED, rec(S.CLOSE, 7), T0 + 0.003, rec(S.SYN_RECV, 2))
    assert state(e) == S.SYN_RECV and e.counters.renumbered == 1


def test_a_refused_async_write_of_a_known_life_takes_the_stores_close() -> None:
    # Not a SYN: the other direction's instance closed this very connection (an RST) after our
    # change was sent; the store's close wins, as before.
    e = engine(confirm=False)
    e.firewall.merge(rec(S.SYN_RECV, 2), T0)
    e.packet(1, ACK_PKT, T0)
    e.writes.clear()
    e.write_done(NO_TICKET, Outcome.REFUSED, rec(S.CLOSE, 4), T0 + 0.001, rec(S.ESTABLISHED, 3))
    assert state(e) == S.CLOSE and e.writes == [] and e.counters.renumbered == 0


def test_a_write_the_store_keeps_refusing_is_dropped_after_the_retries() -> None:
    e = engine()
    e.firewall.merge(rec(S.SYN_SENT, 1), T0)
    e.packet(3, SYNACK, T0)
    for _ in range(e.policy.retries):
        e.write_done(3, Outcome.REFUSED, rec(S.SYN_SENT, 1), T0 + 0.001)  # nothing newer to learn
        assert 3 in e.held  # decided again and written again
    e.write_done(3, Outcome.REFUSED, rec(S.SYN_SENT, 1), T0 + 0.002)
    assert verdicts(e) == ([], [3])
    assert state(e) == S.SYN_SENT
    assert e.counters.by_reason[Reason.STORE_FAILED] == 1


def test_outage_local_tracks_new_flows_here_and_commits_a_held_write_the_outage_cut() -> None:
    # outage "local" with sync confirmation: a packet held for its write when the store goes
    # down was inspected and is valid: it passes and its change is committed (resync shares it).
    e = engine(refuse_new_in_outage=False)
    e.packet(7, SYN_PKT, T0)
    assert 7 in e.held and state(e) is None
    e.set_store_up(False)  # as SharedTable does before the outcomes of the failed batch
    e.write_done(7, Outcome.FAILED, None, T0 + 0.001)
    assert verdicts(e) == ([7], []) and state(e) == S.SYN_SENT
    assert e.counters.unshared == 1
    # while it is down, a new flow is decided and committed here, not held
    other = tcp(SYN, cport=40001)
    e.packet(8, other, T0 + 0.002)
    assert verdicts(e) == ([8], []) and not e.held
    assert state(e, key_of(other)) == S.SYN_SENT and e.counters.unshared == 2


def test_outage_refuse_drops_a_held_write_the_outage_cut_and_leaves_no_trace() -> None:
    e = engine()
    e.packet(7, SYN_PKT, T0)
    e.set_store_up(False)
    e.write_done(7, Outcome.FAILED, None, T0 + 0.001)
    assert verdicts(e) == ([], [7]) and state(e) is None


def test_a_write_the_store_is_up_for_but_did_not_confirm_keeps_the_timeout_verdict() -> None:
    e = engine(refuse_new_in_outage=False)  # "local", store up: e.g. too few replicas acknowledged
    e.packet(7, SYN_PKT, T0)
    e.write_done(7, Outcome.FAILED, None, T0 + 0.001)
    assert verdicts(e) == ([], [7]) and state(e) is None


def test_the_store_down_refuses_new_flows_and_leaves_no_trace() -> None:
    e = engine(confirm=False)
    e.set_store_up(False)
    e.packet(1, SYN_PKT, T0)
    assert verdicts(e) == ([], [1])
    assert state(e) is None and e.counters.refused_in_outage == 1
    assert e.counters.by_reason[Reason.OUTAGE] == 1
    e.set_store_up(True)
    e.packet(2, SYN_PKT, T0 + 1)
    assert verdicts(e) == ([2], [])


# --------------------------------------------------------------------------- look-ups
def test_a_packet_with_no_local_flow_waits_for_a_look_up_and_is_decided_again() -> None:
    e = engine()
    e.packet(5, SYNACK, T0)  # the SYN crossed another instance
    assert e.lookups == [(5, KEY)] and 5 in e.held
    e.lookup_done(5, rec(S.SYN_SENT, 1), T0 + 0.001)
    # decided again: SYN_SENT -> SYN_RECV, which sync confirmation holds for its write
    assert [(t, ev.after) for t, ev in e.writes] == [(5, S.SYN_RECV)]
    e.write_done(5, Outcome.CONFIRMED, None, T0 + 0.002)
    assert verdicts(e) == ([5], [])
    assert state(e) == S.SYN_RECV
    assert e.counters.by_reason[Reason.NO_FLOW] == 0  # counted once, with the final reason
    assert e.counters.resolved_by_store == 1


def test_a_look_up_that_finds_nothing_drops_and_is_cached() -> None:
    e = engine()
    e.packet(5, SYNACK, T0)
    e.lookup_done(5, None, T0 + 0.001)
    assert verdicts(e) == ([], [5])
    assert e.counters.by_reason[Reason.NO_FLOW] == 1
    e.lookups.clear()
    e.packet(6, SYNACK, T0 + 0.01)  # within the negative cache: no second look-up
    assert e.lookups == [] and verdicts(e) == ([], [6])


def test_a_look_up_that_times_out_is_always_a_drop() -> None:
    e = engine(accept_on_timeout=True, rules='[policy]\ndefault = "drop"\n')
    e.packet(5, udp(reply=True), T0)  # a UDP reply with no request: rule-refused, looked up
    assert e.lookups
    e.tick(T0 + 1)
    assert verdicts(e) == ([], [5])  # never decided, so on_timeout does not apply
    assert e.counters.by_reason[Reason.LOOKUP_TIMEOUT] == 1
    e.lookup_done(5, None, T0 + 2)
    assert verdicts(e) == ([], [])


# --------------------------------------------------------------------------- ECMP: split handshakes
def ecmp_engine(level: SyncLevel = SyncLevel.ESTABLISHED, confirm: bool = False) -> Engine:
    """An instance behind ECMP steering, as instance/process.py builds its policy."""
    return engine(level, confirm, hints=opening_hints(level, True), lookup_retry=LOOKUP_RETRY)


def test_ecmp_writes_the_opening_states_at_established_without_holding_them() -> None:
    e = ecmp_engine(confirm=True)
    e.packet(1, SYN_PKT, T0)
    assert verdicts(e) == ([1], []) and not e.held  # a hint: never waited for
    assert [(t, ev.after) for t, ev in e.writes] == [(NO_TICKET, S.SYN_SENT)]
    assert opening_hints(SyncLevel.ESTABLISHED, False) == frozenset()  # symmetric: as the level says
    assert opening_hints(SyncLevel.FULL, True) == frozenset()  # full publishes them anyway
    assert opening_hints(SyncLevel.NONE, True) == frozenset()  # none shares nothing


def test_a_syn_ack_that_beats_the_syns_write_is_asked_about_again() -> None:
    # The SYN crossed another instance, whose async write of SYN_SENT is not in the store yet.
    e = ecmp_engine()
    e.packet(5, SYNACK, T0)
    assert e.lookups == [(5, KEY)]
    e.lookups.clear()
    e.lookup_done(5, None, T0 + 0.0003)
    assert verdicts(e) == ([], []) and 5 in e.held and e.lookups == []  # held, not dropped
    assert e.next_deadline() == T0 + 0.0003 + LOOKUP_RETRY
    e.tick(T0 + 0.0003 + LOOKUP_RETRY)
    assert e.lookups == [(5, KEY)]  # asked again
    e.lookup_done(5, rec(S.SYN_SENT, 1), T0 + 0.002)
    assert verdicts(e) == ([5], [])
    assert state(e) == S.SYN_RECV
    assert [(t, ev.after) for t, ev in e.writes] == [(NO_TICKET, S.SYN_RECV)]  # the client's ACK needs it
    assert e.counters.by_reason[Reason.NO_FLOW] == 0 and e.counters.lookup_retries == 1
    assert not e.gate.recently_unknown(KEY, T0 + 0.003)  # the first miss was not cached


def test_the_clients_ack_on_a_stale_syn_sent_is_asked_about_again() -> None:
    e = ecmp_engine()
    e.packet(1, SYN_PKT, T0)  # this instance saw the SYN; the SYN-ACK crossed another one
    e.packet(2, ACK_PKT, T0 + 0.0002)  # invalid on SYN_SENT: looked up
    assert e.lookups == [(2, KEY)]
    e.lookups.clear()
    e.lookup_done(2, rec(S.SYN_SENT, 1), T0 + 0.0005)  # only our own write is there yet
    assert 2 in e.held
    e.tick(T0 + 0.002)
    e.lookup_done(2, rec(S.SYN_RECV, 2, orig_is_lo=True), T0 + 0.0025)
    assert verdicts(e) == ([1, 2], [])
    assert state(e) == S.ESTABLISHED


def test_a_feed_record_that_arrives_between_two_asks_places_the_packet() -> None:
    e = ecmp_engine()
    e.packet(5, SYNACK, T0)
    e.lookup_done(5, None, T0 + 0.0003)
    e.record(rec(S.SYN_SENT, 1), T0 + 0.0005)
    e.tick(T0 + 0.002)
    e.lookup_done(5, rec(S.SYN_SENT, 1), T0 + 0.0025)  # nothing newer: the table has it now
    assert verdicts(e) == ([5], []) and state(e) == S.SYN_RECV
    # decided once: the change is written (a second decision would have seen no change)
    assert [(t, ev.after) for t, ev in e.writes] == [(NO_TICKET, S.SYN_RECV)]


def held_syn_ack(e: Engine, store: Callable[[float], FlowRecord | None]) -> float:
    """A SYN-ACK held for look-ups, each answered 0.3 ms later with what the store holds then;
    returns the time its verdict came."""
    e.packet(5, SYNACK, T0)
    now = T0
    while 5 in e.held and now < T0 + 1:
        if e.lookups:
            e.lookups.clear()
            now += 0.0003
            e.lookup_done(5, store(now), now)
        else:
            now = e.next_deadline() or now + 0.001
            e.tick(now)
    return now


def test_the_retries_end_before_the_deadline_and_the_last_miss_is_cached() -> None:
    e = ecmp_engine()
    now = held_syn_ack(e, lambda _: None)
    assert verdicts(e) == ([], [5])
    assert now < T0 + e.policy.retry_window  # decided on a miss, not timed out
    assert e.counters.by_reason[Reason.NO_FLOW] == 1 and e.counters.hold_timeouts == 0
    assert 5 <= e.counters.lookup_retries <= 8  # 1, 2, 4, ... 64 ms within 250
    e.packet(6, SYNACK, now + 0.01)
    assert e.lookups == [] and verdicts(e) == ([], [6])  # cached: the retransmission is not asked


def test_a_syn_ack_waits_for_a_late_write_longer_than_the_store_timeout() -> None:
    # A busy machine: the SYN's async write reaches the store 100 ms after the SYN-ACK came here
    # (past timeout_ms, 50 ms; within handshake_wait_ms, 250). Dropping it would cost 1 s.
    e = ecmp_engine()
    now = held_syn_ack(e, lambda t: rec(S.SYN_SENT, 1) if t >= T0 + 0.1 else None)
    assert verdicts(e) == ([5], []) and state(e, now=now) == S.SYN_RECV
    assert e.counters.hold_timeouts == 0 and e.counters.by_reason[Reason.NO_FLOW] == 0
    # Packets that answer no opening keep the store's own bound.
    plain = engine(confirm=False)
    plain.packet(6, ACK_PKT, T0)
    assert plain.held[6].deadline == T0 + plain.policy.hold_timeout


def test_a_syn_ack_on_an_old_copy_of_its_four_tuple_finds_the_new_life_in_the_store() -> None:
    # The server's side crossed this instance in the earlier life of the four-tuple, and the
    # close of it crossed another: the copy here stays ESTABLISHED. The client reuses its port;
    # the new SYN crosses another instance, which stores SYN_SENT past the old life's version.
    for old in (S.SYN_RECV, S.ESTABLISHED, S.FIN_WAIT, S.TIME_WAIT):
        e = ecmp_engine()
        e.firewall.merge(rec(old, 8), T0)
        e.packet(5, SYNACK, T0)
        assert e.lookups == [(5, KEY)] and 5 in e.held, old  # not passed as ignored
        e.lookup_done(5, rec(S.SYN_SENT, 9), T0 + 0.0003)
        assert verdicts(e) == ([5], []), old
        assert state(e) == S.SYN_RECV, old
        assert [(t, ev.after, ev.version) for t, ev in e.writes] == [(NO_TICKET, S.SYN_RECV, 10)], old
        assert e.counters.stale_lookups == 1 and e.counters.by_reason[Reason.TRACKED] == 1


def test_a_syn_ack_on_an_old_copy_waits_for_the_new_lifes_write() -> None:
    # The new SYN's write is not in the store yet: the store still holds the old life.
    e = ecmp_engine()
    e.firewall.merge(rec(S.ESTABLISHED, 8), T0)
    now = held_syn_ack(e, lambda t: rec(S.SYN_SENT, 9) if t >= T0 + 0.05 else rec(S.ESTABLISHED, 8))
    assert verdicts(e) == ([5], []) and state(e, now=now) == S.SYN_RECV
    assert e.counters.lookup_retries >= 1 and e.counters.hold_timeouts == 0


def test_a_syn_on_a_copy_that_missed_the_close_reopens_from_the_stores_close() -> None:
    # The client's side of the earlier life crossed this instance; the rest of its close crossed
    # the other direction's instance, which stored TIME_WAIT. The reused port's SYN comes here.
    for old in (S.ESTABLISHED, S.FIN_WAIT, S.CLOSE_WAIT, S.LAST_ACK):
        e = ecmp_engine()
        e.firewall.merge(rec(old, 8), T0)
        e.packet(1, SYN_PKT, T0)
        assert e.lookups == [(1, KEY)] and 1 in e.held, old
        e.lookup_done(1, rec(S.TIME_WAIT, 10), T0 + 0.0003)
        assert verdicts(e) == ([1], []) and state(e) == S.SYN_SENT, old
        assert [(ev.after, ev.version) for _, ev in e.writes] == [(S.SYN_SENT, 11)], old
    # The store knows no close either: the SYN passes as ignored (as in the kernel), asked once.
    e = ecmp_engine()
    e.firewall.merge(rec(S.ESTABLISHED, 8), T0)
    e.packet(1, SYN_PKT, T0)
    e.lookup_done(1, rec(S.ESTABLISHED, 8), T0 + 0.0003)
    assert verdicts(e) == ([1], []) and state(e) == S.ESTABLISHED and e.writes == []
    assert e.counters.lookup_retries == 0 and e.counters.by_reason[Reason.IGNORED] == 1


def test_a_refused_syn_over_an_earlier_life_still_closing_in_the_store_goes_on_past_it() -> None:
    # ECMP: the earlier life's close did not end in the store (CLOSE_WAIT, version 9); this
    # instance had no copy, and the reused port's SYN passed here as a new connection.
    for old in (S.FIN_WAIT, S.CLOSE_WAIT, S.LAST_ACK):
        e = ecmp_engine(SyncLevel.FULL)
        e.packet(1, SYN_PKT, T0)
        e.writes.clear()
        e.write_done(NO_TICKET, Outcome.REFUSED, rec(old, 9), T0 + 0.001, rec(S.SYN_SENT, 1))
        assert state(e) == S.SYN_SENT and e.counters.renumbered == 1, old
        assert [(w.before, w.after, w.version) for _, w in e.writes] == [(old, S.SYN_SENT, 10)], old
        assert clean_allows(rec(old, 9), rec(S.SYN_SENT, 10)) and not clean_allows(
            rec(old, 9), rec(S.SYN_SENT, 9)
        )
    # The store's ESTABLISHED is a live connection: taken, as before; so is a close with symmetric
    # steering (one instance saw the whole earlier life).
    e = ecmp_engine(SyncLevel.FULL)
    e.packet(1, SYN_PKT, T0)
    e.write_done(NO_TICKET, Outcome.REFUSED, rec(S.ESTABLISHED, 9), T0 + 0.001, rec(S.SYN_SENT, 1))
    assert e.counters.renumbered == 0 and not clean_allows(rec(S.ESTABLISHED, 9), rec(S.SYN_SENT, 10))
    sym = engine(SyncLevel.FULL, confirm=False)
    sym.packet(1, SYN_PKT, T0)
    sym.write_done(NO_TICKET, Outcome.REFUSED, rec(S.CLOSE_WAIT, 9), T0 + 0.001, rec(S.SYN_SENT, 1))
    assert sym.counters.renumbered == 0 and state(sym) == S.CLOSE_WAIT


def test_a_retransmitted_syn_ack_on_a_live_flow_still_passes_as_ignored() -> None:
    # Nothing newer in the store: the SYN-ACK is the retransmission the kernel ignores.
    e = ecmp_engine()
    e.firewall.merge(rec(S.ESTABLISHED, 3), T0)
    now = held_syn_ack(e, lambda _: rec(S.ESTABLISHED, 3))
    assert verdicts(e) == ([5], []) and state(e, now=now) == S.ESTABLISHED and e.writes == []
    assert now < T0 + e.policy.retry_window and e.counters.by_reason[Reason.IGNORED] == 1
    # An older SYN_SENT (the flow's own opening) never takes the flow back.
    e.packet(6, SYNACK, now + 0.01)
    if e.lookups:
        e.lookup_done(6, rec(S.SYN_SENT, 1), now + 0.011)
    e.tick(now + 1)
    assert state(e, now=now + 0.02) == S.ESTABLISHED
    # With symmetric steering the SYN crossed this instance too: an ignored SYN-ACK passes at once.
    sym = engine(SyncLevel.ESTABLISHED, confirm=False)
    sym.firewall.merge(rec(S.ESTABLISHED, 3), T0)
    sym.packet(7, SYNACK, T0)
    assert verdicts(sym) == ([7], []) and sym.lookups == [] and sym.counters.stale_lookups == 0


def test_a_step_refused_for_the_other_directions_concurrent_step_is_replayed_on_it() -> None:
    # ECMP: the server's FIN crossed the other instance (ESTABLISHED -> FIN_WAIT, version 4) at
    # the moment the client's FIN crossed this one (also ESTABLISHED -> FIN_WAIT, version 4).
    # The store kept the other's; both FINs seen make LAST_ACK, not FIN_WAIT.
    e = ecmp_engine(SyncLevel.FULL)
    e.firewall.merge(rec(S.ESTABLISHED, 3), T0)
    e.packet(1, tcp(FIN | ACK, seq=1001, ack=1), T0)
    ((_, ev),) = e.writes
    e.writes.clear()
    assert (ev.after, ev.version) == (S.FIN_WAIT, 4)
    e.write_done(NO_TICKET, Outcome.REFUSED, rec(S.FIN_WAIT, 4), T0 + 0.001, rec(S.FIN_WAIT, 4))
    assert state(e) == S.LAST_ACK and e.counters.rebased == 1
    assert [(t, w.before, w.after, w.version) for t, w in e.writes] == [
        (NO_TICKET, S.FIN_WAIT, S.LAST_ACK, 5)
    ]
    e.writes.clear()
    # Refused again (the server's last ACK made TIME_WAIT meanwhile): nothing moves it on from there.
    e.write_done(NO_TICKET, Outcome.REFUSED, rec(S.TIME_WAIT, 5), T0 + 0.002, rec(S.LAST_ACK, 5))
    assert state(e) == S.TIME_WAIT and e.writes == [] and e.counters.rebased == 1
    # A confirmed write leaves no step behind.
    e2 = ecmp_engine(SyncLevel.FULL)
    e2.firewall.merge(rec(S.ESTABLISHED, 3), T0)
    e2.packet(1, tcp(FIN | ACK, seq=1001, ack=1), T0)
    e2.write_done(NO_TICKET, Outcome.CONFIRMED, None, T0 + 0.001, rec(S.FIN_WAIT, 4))
    assert e2._steps == {}


def test_a_refused_step_is_not_replayed_once_the_flow_moved_on_here() -> None:
    e = ecmp_engine(SyncLevel.FULL)
    e.firewall.merge(rec(S.ESTABLISHED, 3), T0)
    e.packet(1, tcp(FIN | ACK, seq=1001, ack=1), T0)
    e.record(rec(S.LAST_ACK, 5), T0 + 0.0005)  # the feed brought a newer state meanwhile
    e.writes.clear()
    e.write_done(NO_TICKET, Outcome.REFUSED, rec(S.FIN_WAIT, 4), T0 + 0.001, rec(S.FIN_WAIT, 4))
    assert state(e) == S.LAST_ACK and e.writes == [] and e.counters.rebased == 0
    # Symmetric steering: one instance sees both directions, a refusal takes the store's state.
    sym = engine(SyncLevel.FULL, confirm=False)
    sym.firewall.merge(rec(S.ESTABLISHED, 3), T0)
    sym.packet(1, tcp(FIN | ACK, seq=1001, ack=1), T0)
    sym.writes.clear()
    sym.write_done(NO_TICKET, Outcome.REFUSED, rec(S.FIN_WAIT, 4), T0 + 0.001, rec(S.FIN_WAIT, 4))
    assert state(sym) == S.FIN_WAIT and sym.writes == [] and not sym.replays


def test_only_packets_that_answer_an_opening_are_asked_again() -> None:
    e = ecmp_engine()
    e.packet(5, ACK_PKT, T0)  # a bare ACK nobody knows: no handshake it could answer
    e.lookup_done(5, None, T0 + 0.0003)
    assert verdicts(e) == ([], [5]) and e.counters.lookup_retries == 0


def test_the_batch_floor_is_the_lowest_held_id() -> None:
    e = engine()
    e.firewall.merge(rec(S.ESTABLISHED, 3), T0)
    e.packet(5, tcp(FIN | ACK, seq=1001, ack=1), T0)  # held for its write
    e.packet(6, tcp(ACK, seq=1001, ack=1, cport=1), T0)  # another flow: looked up
    assert e.batch_floor() == 5
    e.write_done(5, Outcome.CONFIRMED, None, T0)
    assert e.batch_floor() == 6


# --------------------------------------------------------------------------- records and versions
@given(st.integers(0, VERSION_MOD - 1), st.integers(0, VERSION_MOD - 1))
def test_records_never_move_a_flow_backwards_across_a_wrap(have: int, new: int) -> None:
    e = engine()
    e.firewall.merge(rec(S.ESTABLISHED, have), T0)
    changed = e.record(rec(S.ESTABLISHED if new % 2 else S.FIN_WAIT, new), T0)
    cur = e.firewall.flows(T0)
    (flow,) = list(cur)
    if version_newer(new, have):
        assert changed and flow[3] == new
    elif new != have or new % 2:
        assert not changed and flow[3] == have


@given(
    st.sampled_from([S.SYN_RECV, S.ESTABLISHED, S.FIN_WAIT, S.CLOSE_WAIT, S.LAST_ACK]),
    st.integers(0, VERSION_MOD - 1),
    st.sampled_from([S.SYN_SENT, S.SYN_RECV, S.ESTABLISHED]),
    st.integers(0, VERSION_MOD - 1),
)
def test_a_new_life_over_an_old_copy_is_only_a_newer_syn_sent(
    have_state: FlowState, have: int, new_state: FlowState, new: int
) -> None:
    # What a held SYN-ACK's look-up may take over a live copy (Firewall.merge, new_life): only a
    # newer SYN_SENT; anything else follows the plain rule, and the version never goes back.
    e = engine()
    e.firewall.merge(rec(have_state, have), T0)
    plain = engine()
    plain.firewall.merge(rec(have_state, have), T0)
    changed = e.firewall.merge(rec(new_state, new), T0, new_life=True)
    expected = plain.firewall.merge(rec(new_state, new), T0) or (
        new_state == S.SYN_SENT and version_newer(new, have)
    )
    assert changed == expected
    ((_, _, _, version, *_),) = list(e.firewall.flows(T0))
    assert version == (new if changed else have)


def test_a_flow_keeps_replicating_past_4096_changes() -> None:
    e = engine()
    for v in range(1, 3 * VERSION_MOD):
        assert e.record(rec(S.ESTABLISHED, v % VERSION_MOD), T0)
    assert not e.record(rec(S.ESTABLISHED, (3 * VERSION_MOD - 5) % VERSION_MOD), T0)


def test_a_reopen_is_taken_whatever_its_version() -> None:
    e = engine()
    e.firewall.merge(rec(S.TIME_WAIT, 9), T0)
    assert e.record(rec(S.SYN_SENT, 2), T0)
    assert state(e) == S.SYN_SENT


# --------------------------------------------------------------------------- random event orders
PACKETS = [SYN_PKT, SYNACK, ACK_PKT, tcp(FIN | ACK, seq=1001, ack=1), tcp(RST, seq=1001), udp()]
event = st.one_of(
    st.tuples(st.just("packet"), st.integers(0, len(PACKETS) - 1)),
    st.tuples(st.just("write"), st.sampled_from(list(Outcome))),
    st.tuples(st.just("lookup"), st.sampled_from([None, S.SYN_SENT, S.ESTABLISHED, S.CLOSE])),
    st.tuples(st.just("tick"), st.floats(0, 0.1)),
    st.tuples(st.just("feed"), st.sampled_from([S.SYN_RECV, S.ESTABLISHED, S.TIME_WAIT])),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(event, max_size=40), st.booleans(), st.booleans(), st.booleans())
def test_every_packet_gets_exactly_one_verdict_in_any_event_order(
    events: list[tuple[str, object]], confirm: bool, lenient: bool, retry: bool
) -> None:
    e = engine(confirm=confirm, accept_on_timeout=lenient, lookup_retry=LOOKUP_RETRY if retry else 0.0)
    now = T0
    pid = 0
    version = 50
    accepted: list[int] = []
    dropped: list[int] = []
    failed: set[int] = set()  # packets whose required write failed or timed out
    for kind, arg in events:
        if kind == "packet":
            pid += 1
            e.packet(pid, PACKETS[arg], now)  # type: ignore[index]
        elif kind == "write" and e.writes:
            ticket, ev = e.writes.pop(0)
            outcome: Outcome = arg  # type: ignore[assignment]
            current = (
                rec(S.ESTABLISHED, (ev.version + 1) % VERSION_MOD) if outcome is Outcome.REFUSED else None
            )
            if outcome is Outcome.FAILED and ticket in e.held:
                failed.add(ticket)
            e.write_done(ticket, outcome, current, now)
        elif kind == "lookup" and e.lookups:
            lpid, key = e.lookups.pop(0)
            st_: FlowState | None = arg  # type: ignore[assignment]
            version += 1
            e.lookup_done(lpid, None if st_ is None else rec(st_, version % VERSION_MOD, key=key), now)
        elif kind == "tick":
            now += arg  # type: ignore[operator]
            before = set(e.held)
            e.tick(now)
            failed |= before - set(e.held)
        elif kind == "feed":
            version += 1
            e.record(rec(arg, version % VERSION_MOD), now)  # type: ignore[arg-type]
        a, d = verdicts(e)
        accepted += a
        dropped += d
    # the rest of time passes: every held packet gets its verdict
    held_writes = {p for p, h in e.held.items() if h.change is not None}
    e.tick(now + 10)
    failed |= held_writes
    a, d = verdicts(e)
    accepted += a
    dropped += d
    assert not e.held
    assert sorted(accepted + dropped) == list(range(1, pid + 1))  # exactly one verdict each
    if not lenient:
        assert not failed & set(accepted)  # a packet whose write failed or timed out never passes


# --------------------------------------------------------------------------- the fast path
def marks(e: Engine) -> list[int]:
    out = list(e.marks)
    e.marks.clear()
    return out


def test_established_flows_are_marked_for_the_kernel_and_closes_are_not() -> None:
    e = engine(SyncLevel.NONE, confirm=False, fast_path=True)
    e.packet(1, SYN_PKT, T0)
    e.packet(2, SYNACK, T0)
    e.packet(3, ACK_PKT, T0)  # ESTABLISHED: from here the kernel may forward the flow
    e.packet(4, tcp(ACK, seq=1001, ack=1, data=b"GET /"), T0)
    e.packet(5, tcp(FIN | ACK, seq=1006, ack=1), T0)  # a state change: comes up, not marked
    assert marks(e) == [3, 4]
    assert verdicts(e) == ([1, 2, 5], [])


def test_a_held_change_is_marked_only_once_the_store_confirmed_it() -> None:
    e = engine(fast_path=True)
    e.firewall.merge(rec(S.SYN_RECV, 2), T0)
    e.packet(3, ACK_PKT, T0)
    assert marks(e) == [] and 3 in e.held
    e.write_done(3, Outcome.CONFIRMED, None, T0)
    assert marks(e) == [3] and verdicts(e) == ([], [])


def test_a_replied_udp_flow_is_marked_and_the_fast_path_can_be_off() -> None:
    for fast in (True, False):
        e = engine(SyncLevel.NONE, confirm=False, fast_path=fast)
        e.packet(1, udp(), T0)
        e.packet(2, udp(reply=True), T0)
        e.packet(3, udp(), T0)
        assert marks(e) == ([2, 3] if fast else [])


# --------------------------------------------------------------------------- kernel tracking
def kernel_marks(e: Engine) -> list[int]:
    out = list(e.kernel_marks)
    e.kernel_marks.clear()
    return out


def test_kernel_tracking_hands_a_new_flow_to_the_kernel_and_keeps_nothing() -> None:
    e = engine(SyncLevel.NONE, confirm=False, fast_path=True, kernel_tracking=True)
    e.packet(1, SYN_PKT, T0)  # the rules decide the first packet ...
    e.packet(2, udp(), T0)
    assert kernel_marks(e) == [1, 2] and verdicts(e) == ([], []) and marks(e) == []
    assert state(e) is None and len(e.firewall.table) == 0  # ... and the kernel tracks the rest
    assert e.counters.kernel_tracked == 2
    assert e.counters.by_reason[Reason.RULE_ACCEPT] == 2
    e.packet(3, SYN_PKT, T0)  # a retransmitted SYN (conntrack: new) is decided again
    assert kernel_marks(e) == [3]
    e.packet(4, ACK_PKT, T0)  # what conntrack calls invalid meets no flow here
    assert verdicts(e) == ([], [4]) and e.counters.by_reason[Reason.NO_FLOW] == 1


def test_kernel_tracking_still_applies_the_rules() -> None:
    e = engine(
        SyncLevel.NONE,
        confirm=False,
        rules='[policy]\ndefault = "reject"\n',
        fast_path=True,
        kernel_tracking=True,
    )
    e.packet(1, SYN_PKT, T0)
    assert kernel_marks(e) == [] and verdicts(e) == ([], [1]) and len(e.replies) == 1


def test_kernel_tracking_is_off_when_the_level_shares() -> None:
    for level in (SyncLevel.ESTABLISHED, SyncLevel.FULL):
        e = engine(level, confirm=False, fast_path=True, kernel_tracking=True)
        assert not e.kernel_tracking
        e.packet(1, SYN_PKT, T0)
        assert kernel_marks(e) == [] and verdicts(e) == ([1], []) and state(e) == S.SYN_SENT


# --------------------------------------------------------------------------- a closed connection's next life
def test_a_handshake_over_a_close_in_the_store_goes_on_past_the_stores_version() -> None:
    """At established/clean/sync the SYN of a reused four-tuple is not shared: the store still
    holds the earlier life's TIME_WAIT when the new ESTABLISHED is written. Refused, the engine
    renumbers past the store's version and writes again; the held ACK passes once confirmed
    (before, it was decided against TIME_WAIT and dropped: 5% of connections failed)."""
    e = engine(SyncLevel.ESTABLISHED)
    e.packet(1, SYN_PKT, T0)
    e.packet(2, SYNACK, T0)
    e.packet(3, ACK_PKT, T0)
    assert verdicts(e) == ([1, 2], []) and 3 in e.held
    ((_, first),) = e.writes
    e.writes.clear()
    e.write_done(3, Outcome.REFUSED, rec(S.TIME_WAIT, first.version + 5), T0)
    ((ticket, again),) = e.writes
    assert (ticket, again.after, again.version) == (3, S.ESTABLISHED, first.version + 6)
    e.write_done(3, Outcome.CONFIRMED, None, T0)
    assert verdicts(e) == ([3], []) and state(e) == S.ESTABLISHED


def test_a_newer_state_from_the_store_replaces_a_local_close() -> None:
    e = engine(SyncLevel.ESTABLISHED)
    assert e.firewall.merge(rec(S.TIME_WAIT, 7), T0)
    assert not e.firewall.merge(rec(S.ESTABLISHED, 6), T0)  # the same life, late: ignored
    assert e.firewall.merge(rec(S.ESTABLISHED, 8), T0)  # the next life
    assert state(e) == S.ESTABLISHED


# --------------------------------------------------------------------------- handshake refresh
def test_refresh_asks_the_store_for_a_handshake_without_the_fast_path() -> None:
    """follow = "backup" with ECMP: the ESTABLISHED the peer direction's instance wrote comes in no
    stream this one follows, so a packet on a flow in SYN_RECV asks the store (nobody waits)."""
    for refresh in (False, True):
        e = engine(SyncLevel.FULL, confirm=False, refresh=refresh)
        e.packet(1, SYN_PKT, T0)
        e.packet(2, SYNACK, T0)
        # the server's first data, before the client's ACK crossed here: SYN_RECV stays
        e.packet(3, tcp(ACK, reply=True, seq=1000, ack=1001, data=b"x"), T0 + 0.001)
        assert state(e) == S.SYN_RECV
        assert verdicts(e) == ([1, 2, 3], [])
        assert ((NO_TICKET, KEY) in e.lookups) is refresh
        if refresh:
            e.lookup_done(NO_TICKET, rec(S.ESTABLISHED, 3), T0 + 0.002)
            assert state(e) == S.ESTABLISHED
