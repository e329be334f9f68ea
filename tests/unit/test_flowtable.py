"""The flow table: per-state timeouts, instant invisibility of expired flows, the bounded expiry
sweep (``Firewall.expire``), and the bound on the number of flows."""

from __future__ import annotations

import pytest

from fwcluster.core.decision import Reason, StateChange, Verdict
from fwcluster.core.firewall import Firewall
from fwcluster.core.flowtable import FlowTable, pack, unpack
from fwcluster.core.rules import PROTO_TCP, PROTO_UDP
from fwcluster.core.states import FlowState
from fwcluster.core.timeouts import Timeouts

from .builders import ACK, FIN, SYN, T0, check, drive, echo, firewall, key_of, tcp, udp

S = FlowState

# Distinct small timeouts, so a flow that expires at the wrong one shows.
SMALL = Timeouts(
    tcp_syn_sent=1.0,
    tcp_syn_recv=2.0,
    tcp_established=3.0,
    tcp_fin_wait=4.0,
    tcp_close_wait=5.0,
    tcp_last_ack=6.0,
    tcp_time_wait=7.0,
    tcp_close=8.0,
    tcp_syn_sent2=9.0,
    udp=1.5,
    udp_stream=2.5,
    icmp=3.5,
)
TIMEOUT = {
    S.SYN_SENT: SMALL.tcp_syn_sent,
    S.SYN_RECV: SMALL.tcp_syn_recv,
    S.ESTABLISHED: SMALL.tcp_established,
    S.FIN_WAIT: SMALL.tcp_fin_wait,
    S.CLOSE_WAIT: SMALL.tcp_close_wait,
    S.LAST_ACK: SMALL.tcp_last_ack,
    S.TIME_WAIT: SMALL.tcp_time_wait,
    S.CLOSE: SMALL.tcp_close,
    S.SYN_SENT2: SMALL.tcp_syn_sent2,
}


# --------------------------------------------------------------------------- timeouts
@pytest.mark.parametrize("state", TIMEOUT, ids=[s.name for s in TIMEOUT])
def test_flow_expires_after_its_states_timeout(state: FlowState) -> None:
    fw = firewall(timeouts=SMALL)
    key = drive(fw, state)
    assert key is not None
    timeout = TIMEOUT[state]
    assert fw.state_of(key, T0 + timeout - 0.001) == state
    assert fw.state_of(key, T0 + timeout) is None
    # invisible at once, before any sweep: a data packet meets no flow
    d = check(fw.decide(tcp(ACK, data=b"late"), T0 + timeout))
    assert (d.verdict, d.reason, d.before) == (Verdict.DROP, Reason.NO_FLOW, S.NONE)
    assert fw.state_of(key, T0 + timeout) is None


def test_every_packet_restarts_the_timeout_of_the_new_state() -> None:
    fw = firewall(timeouts=SMALL)
    key = drive(fw, S.ESTABLISHED)
    assert key is not None
    for i in range(1, 5):  # an established flow with traffic every 2.5 s outlives its 3 s timeout
        check(fw.decide(tcp(ACK), T0 + i * 2.5))
    assert fw.state_of(key, T0 + 10 + 2.999) == S.ESTABLISHED
    check(fw.decide(tcp(FIN | ACK), T0 + 12))
    assert fw.state_of(key, T0 + 12 + SMALL.tcp_fin_wait - 0.001) == S.FIN_WAIT
    assert fw.state_of(key, T0 + 12 + SMALL.tcp_fin_wait) is None


def test_ignored_and_invalid_packets_do_not_restart_the_timeout() -> None:
    fw = firewall(timeouts=SMALL)
    key = drive(fw, S.ESTABLISHED)
    assert check(fw.decide(tcp(SYN), T0 + 2)).reason == Reason.IGNORED
    assert check(fw.decide(tcp(SYN, reply=True), T0 + 2)).reason == Reason.INVALID_TRANSITION
    assert key is not None
    assert fw.state_of(key, T0 + SMALL.tcp_established) is None


def test_expired_flow_is_reopened_by_a_new_syn() -> None:
    fw = firewall(timeouts=SMALL)
    drive(fw, S.ESTABLISHED)
    d = check(fw.decide(tcp(SYN), T0 + 100))
    assert (d.reason, d.before, d.after) == (Reason.RULE_ACCEPT, S.NONE, S.SYN_SENT)
    assert len(fw.table) == 1


# --------------------------------------------------------------------------- the sweep
def open_udp(fw: Firewall, ports: range, now: float) -> list[bytes]:
    keys = []
    for port in ports:
        buf = udp(cport=port)
        check(fw.decide(buf, now))
        keys.append(key_of(buf))
    return keys


def test_expire_removes_expired_flows_in_bounded_steps() -> None:
    fw = firewall(timeouts=SMALL)
    old = open_udp(fw, range(1000, 1010), T0)
    young = open_udp(fw, range(2000, 2005), T0 + 1)
    now = T0 + SMALL.udp + 0.5  # the old flows are expired, the young ones are not
    events: list[StateChange] = []
    calls = 0
    while len(fw.table) > len(young):
        step = fw.expire(now, 3)
        assert len(step) <= 3  # never more than the budget per call
        events += step
        calls += 1
        assert calls < 20
    assert calls >= 4  # ten removals at three per call
    assert sorted(e.key for e in events) == sorted(old)
    for e in events:
        assert e is not None and e[:6] == StateChange(e.key, PROTO_UDP, S.UNREPLIED, S.REMOVED, True, now)[:6]
    assert all(fw.state_of(k, now) == S.UNREPLIED for k in young)
    for _ in range(10):
        assert fw.expire(now, 3) == []  # nothing more to remove, no event twice


def test_expire_reports_the_state_the_flow_had() -> None:
    fw = firewall(timeouts=SMALL)
    key = drive(fw, S.TIME_WAIT)
    echo_key = key_of(echo())
    fw.decide(echo(), T0)
    events = fw.expire(T0 + 100, 10)
    assert {(e.key, e.proto, e.before, e.after) for e in events} == {
        (key, PROTO_TCP, S.TIME_WAIT, S.REMOVED),
        (echo_key, 1, S.UNREPLIED, S.REMOVED),
    }
    assert len(fw.table) == 0


def test_expire_with_budget_zero_removes_nothing() -> None:
    fw = firewall(timeouts=SMALL)
    open_udp(fw, range(1000, 1005), T0)
    assert fw.expire(T0 + 100, 0) == []
    assert len(fw.table) == 5


def test_expired_flow_stays_invisible_until_swept() -> None:
    fw = firewall(timeouts=SMALL)
    (key,) = open_udp(fw, range(7, 8), T0)
    assert len(fw.table) == 1  # still stored ...
    assert fw.state_of(key, T0 + 10) is None  # ... but gone for every lookup
    assert fw.table.get(key, int((T0 + 10) * 1000)) is None


# --------------------------------------------------------------------------- the bound
def test_table_full_refuses_new_flows_and_keeps_existing_ones() -> None:
    fw = firewall(timeouts=SMALL, max_flows=3)
    for port in (1, 2, 3):
        assert check(fw.decide(tcp(SYN, cport=port), T0)).reason == Reason.RULE_ACCEPT
    for buf in (tcp(SYN, cport=4), udp(), echo(), tcp(SYN, v6=True)):
        d = check(fw.decide(buf, T0))
        assert (d.verdict, d.reason, d.event) == (Verdict.DROP, Reason.TABLE_FULL, None)
    assert len(fw.table) == 3
    # the tracked flows carry on
    for port in (1, 2, 3):
        assert check(fw.decide(tcp(SYN | ACK, reply=True, cport=port), T0 + 0.5)).after == S.SYN_RECV
        assert check(fw.decide(tcp(ACK, cport=port), T0 + 0.5)).after == S.ESTABLISHED


def test_expired_flows_make_room_again() -> None:
    fw = firewall(timeouts=SMALL, max_flows=3)
    for port in (1, 2, 3):
        fw.decide(tcp(SYN, cport=port), T0)
    assert check(fw.decide(tcp(SYN, cport=4), T0 + 0.5)).reason == Reason.TABLE_FULL
    later = T0 + SMALL.tcp_syn_sent  # the three SYN_SENT flows have expired, nobody swept yet
    d = check(fw.decide(tcp(SYN, cport=4), later))
    assert (d.verdict, d.reason, d.after) == (Verdict.ACCEPT, Reason.RULE_ACCEPT, S.SYN_SENT)
    assert len(fw.table) <= 3
    removed = fw.expire(later, 0)  # the reclaimed entries were reported as REMOVED
    assert {e.after for e in removed} == {S.REMOVED}
    assert len(removed) == 3
    for port in (5, 6):
        assert check(fw.decide(udp(cport=port), later)).reason == Reason.RULE_ACCEPT
    assert check(fw.decide(udp(cport=7), later)).reason == Reason.TABLE_FULL


def test_reopening_a_closed_flow_needs_no_room() -> None:
    fw = firewall(max_flows=1)
    drive(fw, S.TIME_WAIT)
    d = check(fw.decide(tcp(SYN), T0 + 1))
    assert (d.reason, d.before, d.after) == (Reason.RULE_ACCEPT, S.TIME_WAIT, S.SYN_SENT)


# --------------------------------------------------------------------------- FlowTable itself
def test_pack_and_unpack() -> None:
    for state in (S.SYN_SENT, S.ESTABLISHED, S.SYN_SENT2, S.UNREPLIED, S.REPLIED):
        for lo in (False, True):
            for expiry in (0, 1, 2**40 + 7):
                for version in (1, 7, 4095):
                    assert unpack(pack(state, lo, expiry, version)) == (state, lo, version, expiry)


def test_flowtable_get_remove_and_len() -> None:
    t = FlowTable(10)
    t.flows[b"k"] = pack(S.ESTABLISHED, True, 5000)
    assert len(t) == 1
    assert t.get(b"k", 4999) == pack(S.ESTABLISHED, True, 5000)
    assert t.get(b"k", 5000) is None  # expired exactly at its expiry time
    assert t.get(b"other", 0) is None
    assert t.remove(b"k") == pack(S.ESTABLISHED, True, 5000)
    assert t.remove(b"k") is None
    assert len(t) == 0


def test_versions_count_state_changes_and_reopens() -> None:
    fw = firewall()
    versions = []
    for flags, reply in (
        (SYN, False),
        (SYN | ACK, True),
        (ACK, False),
        (ACK, False),  # no change: no event
        (FIN | ACK, False),
        (FIN | ACK, True),
        (ACK, False),
        (SYN, False),  # reopen from TIME_WAIT: the version keeps counting
    ):
        d = check(fw.decide(tcp(flags, reply=reply), T0))
        if d.event is not None:
            versions.append(d.event.version)
    assert versions == [1, 2, 3, 4, 5, 6, 7]
