"""Whole TCP connections through ``Firewall.decide``: handshake, data, teardown, reopen."""

from __future__ import annotations

import pytest

from fwcluster.core.decision import Reason, StateChange, Verdict
from fwcluster.core.rules import PROTO_TCP
from fwcluster.core.states import FlowState

from .builders import ACK, FIN, PSH, RST, SYN, T0, check, drive, firewall, key_of, parsed, ruleset, tcp

S = FlowState

# (reply, flags, data, state after, reason)
HTTP_GET = [
    (False, SYN, b"", S.SYN_SENT, Reason.RULE_ACCEPT),
    (True, SYN | ACK, b"", S.SYN_RECV, Reason.TRACKED),
    (False, ACK, b"", S.ESTABLISHED, Reason.TRACKED),
    (False, PSH | ACK, b"GET / HTTP/1.1\r\nHost: s\r\n\r\n", S.ESTABLISHED, Reason.TRACKED),
    (True, ACK, b"", S.ESTABLISHED, Reason.TRACKED),
    (True, PSH | ACK, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", S.ESTABLISHED, Reason.TRACKED),
    (False, ACK, b"", S.ESTABLISHED, Reason.TRACKED),
    (False, FIN | ACK, b"", S.FIN_WAIT, Reason.TRACKED),
    (True, ACK, b"", S.CLOSE_WAIT, Reason.TRACKED),
    (True, FIN | ACK, b"", S.LAST_ACK, Reason.TRACKED),
    (False, ACK, b"", S.TIME_WAIT, Reason.TRACKED),
]


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_handshake_data_and_teardown(v6: bool) -> None:
    fw = firewall()
    before = S.NONE
    key = key_of(tcp(SYN, v6=v6))
    for i, (reply, flags, data, after, reason) in enumerate(HTTP_GET):
        now = T0 + i * 0.01
        d = check(fw.decide(tcp(flags, v6=v6, reply=reply, data=data), now))
        assert (d.verdict, d.reason, d.before, d.after) == (Verdict.ACCEPT, reason, before, after), i
        if after != before:
            assert (
                d.event is not None
                and d.event[:6] == StateChange(key, PROTO_TCP, before, after, True, now)[:6]
            )
        assert fw.state_of(key, now) == after
        before = after
    assert len(fw.table) == 1


def test_server_closes_first() -> None:
    fw = firewall()
    drive(fw, S.ESTABLISHED)
    steps = [(True, FIN | ACK, S.FIN_WAIT), (False, ACK, S.CLOSE_WAIT), (False, FIN | ACK, S.LAST_ACK)]
    steps.append((True, ACK, S.TIME_WAIT))
    for reply, flags, after in steps:
        d = check(fw.decide(tcp(flags, reply=reply), T0 + 1))
        assert (d.verdict, d.after) == (Verdict.ACCEPT, after)


def test_simultaneous_open() -> None:
    fw = firewall()
    key = drive(fw, S.SYN_SENT2)
    d = check(fw.decide(tcp(SYN | ACK, reply=True), T0 + 1))
    assert (d.before, d.after) == (S.SYN_SENT2, S.SYN_RECV)
    d = check(fw.decide(tcp(ACK), T0 + 1))
    assert (d.before, d.after) == (S.SYN_RECV, S.ESTABLISHED)
    assert key is not None
    assert fw.state_of(key, T0 + 1) == S.ESTABLISHED


def test_rst_from_the_server_closes_a_half_open_connection() -> None:
    fw = firewall()
    drive(fw, S.SYN_SENT)
    d = check(fw.decide(tcp(RST | ACK, reply=True), T0 + 1))
    assert (d.verdict, d.before, d.after) == (Verdict.ACCEPT, S.SYN_SENT, S.CLOSE)
    # the connection is closed: more data is judged by the CLOSE column, a data ACK stays CLOSE
    d = check(fw.decide(tcp(ACK), T0 + 1))
    assert (d.verdict, d.reason, d.after) == (Verdict.ACCEPT, Reason.TRACKED, S.CLOSE)


@pytest.mark.parametrize("state", [S.TIME_WAIT, S.CLOSE])
def test_syn_in_time_wait_or_close_reopens_through_the_rules(state: FlowState) -> None:
    fw = firewall()
    key = drive(fw, state)
    d = check(fw.decide(tcp(SYN, seq=99999), T0 + 1))
    assert (d.verdict, d.reason, d.before, d.after) == (Verdict.ACCEPT, Reason.RULE_ACCEPT, state, S.SYN_SENT)
    assert (
        d.event is not None
        and d.event[:6] == StateChange(key, PROTO_TCP, state, S.SYN_SENT, True, T0 + 1)[:6]
    )
    # and the new connection runs its course
    for reply, flags, after in [(True, SYN | ACK, S.SYN_RECV), (False, ACK, S.ESTABLISHED)]:
        assert check(fw.decide(tcp(flags, reply=reply), T0 + 2)).after == after
    assert len(fw.table) == 1


@pytest.mark.parametrize("state", [S.TIME_WAIT, S.CLOSE])
def test_reopen_is_refused_when_the_rules_now_drop(state: FlowState) -> None:
    fw = firewall()
    key = drive(fw, state)
    fw.ruleset = ruleset('[policy]\ndefault = "drop"\n')
    d = check(fw.decide(tcp(SYN), T0 + 1))
    assert (d.verdict, d.reason, d.event) == (Verdict.DROP, Reason.RULE_DROP, None)
    assert key is not None
    assert fw.state_of(key, T0 + 1) == state  # the old connection is left as it was


def test_reply_syn_in_time_wait_does_not_reopen() -> None:
    fw = firewall()
    key = drive(fw, S.TIME_WAIT)
    d = check(fw.decide(tcp(SYN, reply=True), T0 + 1))
    assert (d.verdict, d.reason) == (Verdict.DROP, Reason.INVALID_TRANSITION)
    assert key is not None
    assert fw.state_of(key, T0 + 1) == S.TIME_WAIT


def test_flows_are_independent() -> None:
    fw = firewall()
    a = tcp(SYN, cport=1111)
    b = tcp(SYN, cport=2222)
    check(fw.decide(a, T0))
    check(fw.decide(b, T0))
    check(fw.decide(tcp(SYN | ACK, reply=True, cport=1111), T0))
    assert fw.state_of(key_of(a), T0) == S.SYN_RECV
    assert fw.state_of(key_of(b), T0) == S.SYN_SENT
    # same ports, other address family: another flow
    assert fw.state_of(key_of(tcp(SYN, v6=True, cport=1111)), T0) is None


def test_both_directions_share_one_key() -> None:
    for v6 in (False, True):
        out, back = parsed(tcp(SYN, v6=v6)), parsed(tcp(SYN | ACK, v6=v6, reply=True))
        assert out.key == back.key
        assert out.from_lo != back.from_lo
