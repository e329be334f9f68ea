"""UDP and ICMP echo tracking (UNREPLIED -> REPLIED), ICMP errors (RELATED) and untracked ICMP."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP
from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6ND_RS, ICMPv6Unknown
from scapy.packet import Packet

from fwcluster.core.decision import Reason, StateChange, Verdict
from fwcluster.core.rules import PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP
from fwcluster.core.states import FlowState
from fwcluster.core.timeouts import Timeouts

from .builders import (
    ACK,
    SERVER4,
    SERVER6,
    SYN,
    T0,
    check,
    drive,
    echo,
    firewall,
    icmp_error,
    ip,
    key_of,
    tcp,
    udp,
)

V = pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
UNREPLIED, REPLIED = FlowState.UNREPLIED, FlowState.REPLIED


# --------------------------------------------------------------------------- UDP
@V
def test_udp_first_packet_opens_and_a_reply_answers(v6: bool) -> None:
    fw = firewall()
    key = key_of(udp(v6=v6))
    d = check(fw.decide(udp(v6=v6), T0))
    assert (d.verdict, d.reason, d.before, d.after) == (
        Verdict.ACCEPT,
        Reason.RULE_ACCEPT,
        FlowState.NONE,
        UNREPLIED,
    )
    assert (
        d.event is not None
        and d.event[:6] == StateChange(key, PROTO_UDP, FlowState.NONE, UNREPLIED, True, T0)[:6]
    )
    d = check(fw.decide(udp(v6=v6, data=b"again"), T0 + 1))  # more from the same side
    assert (d.reason, d.after, d.event) == (Reason.TRACKED, UNREPLIED, None)
    d = check(fw.decide(udp(v6=v6, reply=True), T0 + 2))
    assert (d.reason, d.before, d.after) == (Reason.TRACKED, UNREPLIED, REPLIED)
    assert (
        d.event is not None
        and d.event[:6] == StateChange(key, PROTO_UDP, UNREPLIED, REPLIED, True, T0 + 2)[:6]
    )
    for reply in (False, True):  # and from then on both ways stay REPLIED
        d = check(fw.decide(udp(v6=v6, reply=reply), T0 + 3))
        assert (d.reason, d.before, d.after, d.event) == (Reason.TRACKED, REPLIED, REPLIED, None)


def test_udp_opened_by_the_server_side() -> None:
    fw = firewall()
    d = check(fw.decide(udp(reply=True), T0))
    assert d.event is not None
    assert d.event.orig_is_lo is False  # the server's address sorts after the client's
    d = check(fw.decide(udp(), T0))
    assert (d.before, d.after) == (UNREPLIED, REPLIED)


@V
def test_udp_timeouts_unreplied_vs_stream(v6: bool) -> None:
    fw = firewall(timeouts=Timeouts(udp=2.0, udp_stream=10.0))
    one_way, both_ways = udp(v6=v6, cport=1111), udp(v6=v6, cport=2222)
    fw.decide(one_way, T0)
    fw.decide(both_ways, T0)
    fw.decide(udp(v6=v6, cport=2222, reply=True), T0)
    assert fw.state_of(key_of(one_way), T0 + 1.999) == UNREPLIED
    assert fw.state_of(key_of(one_way), T0 + 2.0) is None
    assert fw.state_of(key_of(both_ways), T0 + 9.999) == REPLIED
    assert fw.state_of(key_of(both_ways), T0 + 10.0) is None


def test_udp_reply_after_expiry_is_a_new_flow() -> None:
    fw = firewall(timeouts=Timeouts(udp=2.0))
    fw.decide(udp(), T0)
    d = check(fw.decide(udp(reply=True), T0 + 5))
    assert (d.reason, d.before, d.after) == (Reason.RULE_ACCEPT, FlowState.NONE, UNREPLIED)
    assert d.event is not None
    assert d.event.orig_is_lo is False


# --------------------------------------------------------------------------- ICMP echo
ICMP_ONLY = """
[policy]
default = "drop"
[[rules]]
action = "accept"
proto = "icmp"
[[rules]]
action = "accept"
proto = "icmpv6"
"""


@V
def test_echo_request_opens_when_a_rule_allows_icmp_and_the_reply_answers(v6: bool) -> None:
    fw = firewall(ICMP_ONLY)
    key = key_of(echo(v6=v6))
    proto = PROTO_ICMPV6 if v6 else PROTO_ICMP
    d = check(fw.decide(echo(v6=v6), T0))
    assert (d.verdict, d.reason, d.after) == (Verdict.ACCEPT, Reason.RULE_ACCEPT, UNREPLIED)
    assert (
        d.event is not None
        and d.event[:6] == StateChange(key, proto, FlowState.NONE, UNREPLIED, True, T0)[:6]
    )
    d = check(fw.decide(echo(v6=v6, reply=True), T0 + 0.5))
    assert (d.verdict, d.reason, d.before, d.after) == (Verdict.ACCEPT, Reason.TRACKED, UNREPLIED, REPLIED)
    assert (
        d.event is not None and d.event[:6] == StateChange(key, proto, UNREPLIED, REPLIED, True, T0 + 0.5)[:6]
    )
    d = check(fw.decide(echo(v6=v6, seq=2), T0 + 1))
    assert (d.reason, d.before, d.after, d.event) == (Reason.TRACKED, REPLIED, REPLIED, None)


@V
def test_echo_request_is_dropped_when_no_rule_allows_it(v6: bool) -> None:
    fw = firewall('[policy]\ndefault = "drop"\n[[rules]]\naction = "accept"\nproto = "tcp"\n')
    d = check(fw.decide(echo(v6=v6), T0))
    assert (d.verdict, d.reason) == (Verdict.DROP, Reason.RULE_DROP)
    assert len(fw.table) == 0


@V
def test_echo_reply_without_a_request_is_no_flow(v6: bool) -> None:
    fw = firewall()
    d = check(fw.decide(echo(v6=v6, reply=True), T0))
    assert (d.verdict, d.reason) == (Verdict.DROP, Reason.NO_FLOW)
    # a request with another identifier is another flow: its reply does not answer ours
    fw.decide(echo(v6=v6, ident=1), T0)
    d = check(fw.decide(echo(v6=v6, reply=True, ident=2), T0))
    assert d.reason == Reason.NO_FLOW


@V
def test_echo_flow_expires_after_the_icmp_timeout(v6: bool) -> None:
    fw = firewall(timeouts=Timeouts(icmp=3.0))
    fw.decide(echo(v6=v6), T0)
    fw.decide(echo(v6=v6, reply=True), T0 + 1)
    assert fw.state_of(key_of(echo(v6=v6)), T0 + 3.999) == REPLIED
    d = check(fw.decide(echo(v6=v6, reply=True), T0 + 4))
    assert d.reason == Reason.NO_FLOW


# --------------------------------------------------------------------------- ICMP errors
ERRORS = [(False, 3, 3), (False, 3, 1), (False, 11, 0), (False, 4, 0), (False, 12, 0)]
ERRORS += [(True, 1, 4), (True, 3, 0), (True, 2, 0), (True, 4, 0)]
ERROR_IDS = [f"{'v6' if v6 else 'v4'} type {t} code {c}" for v6, t, c in ERRORS]


@pytest.mark.parametrize(("v6", "icmp_type", "code"), ERRORS, ids=ERROR_IDS)
def test_icmp_error_quoting_a_tracked_flow_is_related(v6: bool, icmp_type: int, code: int) -> None:
    fw = firewall()
    key = drive(fw, FlowState.ESTABLISHED, v6=v6)
    assert key is not None
    for quoted in (tcp(ACK, v6=v6, data=b"x" * 40), tcp(SYN | ACK, v6=v6, reply=True)):
        d = check(fw.decide(icmp_error(quoted, icmp_type=icmp_type, code=code, v6=v6), T0 + 1))
        assert (d.verdict, d.reason, d.event) == (Verdict.ACCEPT, Reason.RELATED, None)
        assert d.before == d.after == FlowState.ESTABLISHED
    assert fw.state_of(key, T0 + 1) == FlowState.ESTABLISHED  # the error changes nothing


@pytest.mark.parametrize(("v6", "icmp_type", "code"), ERRORS, ids=ERROR_IDS)
def test_icmp_error_not_sent_back_to_the_quoted_source_is_dropped(
    v6: bool, icmp_type: int, code: int
) -> None:
    """As in the kernel (nf_conntrack_inet_error): an error about a packet goes back to that
    packet's source. One quoting a tracked flow but sent elsewhere (to the other endpoint, or to
    an unrelated address) is misdirected, whatever its outer source."""
    fw = firewall()
    drive(fw, FlowState.ESTABLISHED, v6=v6)
    quoted = tcp(ACK, v6=v6, data=b"x" * 40)  # from the client
    for to in (SERVER6, "2001:db8:2::7") if v6 else (SERVER4, "203.0.113.77"):
        d = check(fw.decide(icmp_error(quoted, icmp_type=icmp_type, code=code, v6=v6, to=to), T0 + 1))
        assert (d.verdict, d.reason) == (Verdict.DROP, Reason.ICMP_MISDIRECTED)


@pytest.mark.parametrize(("v6", "icmp_type", "code"), ERRORS, ids=ERROR_IDS)
def test_icmp_error_quoting_an_unknown_flow_is_dropped(v6: bool, icmp_type: int, code: int) -> None:
    fw = firewall()
    drive(fw, FlowState.ESTABLISHED, v6=v6)
    quoted = tcp(ACK, v6=v6, cport=1)  # same hosts, another port: no such flow
    d = check(fw.decide(icmp_error(quoted, icmp_type=icmp_type, code=code, v6=v6), T0 + 1))
    assert (d.verdict, d.reason) == (Verdict.DROP, Reason.NO_FLOW)


@V
def test_icmp_errors_about_udp_and_echo_flows(v6: bool) -> None:
    fw = firewall()
    fw.decide(udp(v6=v6), T0)
    fw.decide(echo(v6=v6), T0)
    for quoted in (udp(v6=v6), echo(v6=v6)):
        d = check(fw.decide(icmp_error(quoted, icmp_type=3 if not v6 else 1, v6=v6), T0))
        assert (d.verdict, d.reason, d.after) == (Verdict.ACCEPT, Reason.RELATED, UNREPLIED)


def test_icmp_error_quoting_an_expired_flow_is_dropped() -> None:
    fw = firewall(timeouts=Timeouts(udp=1.0))
    fw.decide(udp(), T0)
    d = check(fw.decide(icmp_error(udp(), icmp_type=3), T0 + 1))
    assert d.reason == Reason.NO_FLOW


def test_icmp_error_never_opens_a_flow() -> None:
    fw = firewall()
    fw.decide(icmp_error(udp(), icmp_type=3), T0)
    assert len(fw.table) == 0


# --------------------------------------------------------------------------- other ICMP types
OTHER: dict[str, tuple[bool, Packet]] = {
    "v4 timestamp (13)": (False, ICMP(type=13)),
    "v4 router advertisement (9)": (False, ICMP(type=9)),
    "v4 type 128 (echo request in ICMPv6 only)": (False, ICMP(type=128)),
    "v4 type 129 (echo reply in ICMPv6 only)": (False, ICMP(type=129)),
    "v6 router solicitation (133)": (True, ICMPv6ND_RS()),
    "v6 neighbour solicitation (135)": (True, ICMPv6ND_NS(tgt="2001:db8::5")),
    "v6 type 8 (echo request in ICMPv4 only)": (True, ICMPv6Unknown(type=8, msgbody=b"\0\0\0\0")),
    "v6 type 0 (echo reply in ICMPv4 only)": (True, ICMPv6Unknown(type=0, msgbody=b"\0\0\0\0")),
}


@pytest.mark.parametrize(("v6", "msg"), OTHER.values(), ids=OTHER.keys())
def test_other_icmp_types_are_untracked(v6: bool, msg: Packet) -> None:
    fw = firewall()
    d = check(fw.decide(bytes(ip(v6) / msg), T0))
    assert (d.verdict, d.reason, d.event) == (Verdict.DROP, Reason.UNTRACKED_ICMP, None)
    assert len(fw.table) == 0
