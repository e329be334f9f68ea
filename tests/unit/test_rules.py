"""Rule matching for every field kind, first match wins, default policy, rules only for new flows."""

from __future__ import annotations

import ipaddress

import pytest

from fwcluster.core.decision import Reason, Verdict
from fwcluster.core.rules import PROTO_ICMP, PROTO_TCP, PROTO_UDP, Action, Rule, RuleSet
from fwcluster.core.states import FlowState

from .builders import ACK, PSH, SYN, T0, check, drive, echo, firewall, key_of, ruleset, tcp, udp

OPEN = Reason.RULE_ACCEPT
DROP = Reason.RULE_DROP
REJECT = Reason.RULE_REJECT


def first_packet(rules: str, buf: bytes) -> Reason:
    d = check(firewall(rules).decide(buf, T0))
    return d.reason


def rules(*bodies: str, default: str = "drop") -> str:
    text = f'[policy]\ndefault = "{default}"\n'
    for body in bodies:
        text += f"[[rules]]\n{body}\n"
    return text


def accept(**fields: object) -> str:
    """One accept rule with the given fields (TOML values written with repr-like quoting)."""
    lines = ['action = "accept"']
    for name, value in fields.items():
        lines.append(f"{name} = {toml_value(value)}")
    return "\n".join(lines)


def toml_value(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


# --------------------------------------------------------------------------- actions and policy
@pytest.mark.parametrize(
    ("action", "verdict", "reason"),
    [("accept", Verdict.ACCEPT, OPEN), ("drop", Verdict.DROP, DROP), ("reject", Verdict.REJECT, REJECT)],
)
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_rule_actions(action: str, verdict: Verdict, reason: Reason, v6: bool) -> None:
    fw = firewall(
        rules(f'action = "{action}"\nproto = "tcp"', default="accept" if action != "accept" else "drop")
    )
    d = check(fw.decide(tcp(SYN, v6=v6), T0))
    assert (d.verdict, d.reason) == (verdict, reason)
    assert (d.reply is not None) == (action == "reject")
    assert fw.state_of(key_of(tcp(SYN, v6=v6)), T0) == (FlowState.SYN_SENT if action == "accept" else None)
    assert len(fw.table) == (action == "accept")


@pytest.mark.parametrize(("default", "reason"), [("accept", OPEN), ("drop", DROP), ("reject", REJECT)])
def test_default_policy_when_nothing_matches(default: str, reason: Reason) -> None:
    text = rules(accept(proto="tcp", dport=22), default=default)
    for buf in (tcp(SYN), udp(), echo(), echo(v6=True)):
        assert first_packet(text, buf) == reason
    assert first_packet(text, tcp(SYN, sport=22)) == OPEN


def test_first_match_wins() -> None:
    drop80 = 'action = "drop"\nproto = "tcp"\ndport = 80'
    any_tcp = accept(proto="tcp")
    assert first_packet(rules(drop80, any_tcp, default="accept"), tcp(SYN)) == DROP
    assert first_packet(rules(any_tcp, drop80, default="drop"), tcp(SYN)) == OPEN
    rs = ruleset(rules(any_tcp, drop80))
    assert rs.evaluate(PROTO_TCP, 4, 1, 2, 3, 80) == (Action.ACCEPT, 0)
    assert rs.evaluate(PROTO_UDP, 4, 1, 2, 3, 80) == (Action.DROP, -1)


# --------------------------------------------------------------------------- protocols
PROTO_CASES = {
    "tcp": {"tcp4", "tcp6"},
    "udp": {"udp4", "udp6"},
    "icmp": {"echo4"},
    "icmpv6": {"echo6"},
    "any": {"tcp4", "tcp6", "udp4", "udp6", "echo4", "echo6"},
}
PACKETS = {
    "tcp4": tcp(SYN),
    "tcp6": tcp(SYN, v6=True),
    "udp4": udp(),
    "udp6": udp(v6=True),
    "echo4": echo(),
    "echo6": echo(v6=True),
}


@pytest.mark.parametrize(("proto", "matching"), PROTO_CASES.items(), ids=PROTO_CASES.keys())
def test_proto(proto: str, matching: set[str]) -> None:
    text = rules(accept(proto=proto))
    for name, buf in PACKETS.items():
        assert first_packet(text, buf) == (OPEN if name in matching else DROP), name


# --------------------------------------------------------------------------- addresses
# (value, matches the client's v4 address, matches the client's v6 address)
ADDRESSES = [
    ("192.0.2.1", True, False),
    ("192.0.2.2", False, False),
    ("192.0.2.0/24", True, False),
    ("192.0.2.1/32", True, False),
    ("192.0.3.0/24", False, False),
    ("0.0.0.0/0", True, False),  # an IPv4 rule never matches IPv6
    ("192.0.2.5/16", True, False),  # host bits are ignored
    (["10.0.0.0/8", "192.0.2.0/30"], True, False),
    (["10.0.0.0/8", "172.16.0.0/12"], False, False),
    ("2001:db8::1", False, True),
    ("2001:db8::/64", False, True),
    ("2001:db8:1::/48", False, False),
    ("::/0", False, True),  # an IPv6 rule never matches IPv4
    ("::ffff:192.0.2.1", False, False),  # not even the IPv4-mapped form of the address
    (["2001:db8:1::/48", "2001:db8::/126"], False, True),
    (["0.0.0.0/0", "::/0"], True, True),
]


@pytest.mark.parametrize(("value", "v4", "v6"), ADDRESSES, ids=[str(a[0]) for a in ADDRESSES])
@pytest.mark.parametrize("field", ["src", "dst"])
def test_addresses(field: str, value: object, v4: bool, v6: bool) -> None:
    text = rules(accept(**{field: value}))
    for is_v6, want in ((False, v4), (True, v6)):
        # The address under test is the client's: the source of a client packet, the destination
        # of a server packet (which, with no flow yet, opens one in its own right).
        buf = udp(v6=is_v6, reply=field == "dst")
        assert first_packet(text, buf) == (OPEN if want else DROP), (field, value, is_v6)


def test_src_and_dst_together() -> None:
    text = rules(accept(src="192.0.2.0/24", dst="198.51.100.0/24"))
    assert first_packet(text, udp()) == OPEN
    assert first_packet(text, udp(reply=True)) == DROP


# --------------------------------------------------------------------------- ports
# (value, ports that match, ports that don't)
PORTS = [
    (80, [80], [79, 81]),
    ("80", [80], [79, 81]),
    ("8000-8080", [8000, 8042, 8080], [7999, 8081]),
    ([22, "80-90", 443], [22, 80, 85, 90, 443], [21, 23, 79, 91, 444]),
    ("0-65535", [0, 1, 65535], []),
    ("1024-1024", [1024], [1023, 1025]),
]


@pytest.mark.parametrize(("value", "hits", "misses"), PORTS, ids=[str(p[0]) for p in PORTS])
@pytest.mark.parametrize("field", ["sport", "dport"])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_ports(proto: str, field: str, value: object, hits: list[int], misses: list[int]) -> None:
    text = rules(accept(proto=proto, **{field: value}))
    for port, want in [(p, OPEN) for p in hits] + [(p, DROP) for p in misses]:
        ports = {"cport": port, "sport": 9} if field == "sport" else {"cport": 9, "sport": port}
        buf = tcp(SYN, **ports) if proto == "tcp" else udp(**ports)
        assert first_packet(text, buf) == want, (proto, field, port)


def test_port_conditions_never_match_portless_protocols() -> None:
    # the config refuses sport/dport without tcp/udp; a Rule built by hand still never matches ICMP
    rule = Rule(Action.ACCEPT, proto=None, dport=((0, 65535),))
    assert not rule.matches(PROTO_ICMP, 4, 1, 2, 0, 0)
    assert rule.matches(PROTO_UDP, 4, 1, 2, 0, 0)
    rule = Rule(Action.ACCEPT, sport=((0, 0),))
    assert not rule.matches(PROTO_ICMP, 4, 1, 2, 0, 0)


def test_rule_built_by_hand() -> None:
    net = ipaddress.ip_network("192.0.2.0/24")
    rule = Rule(Action.DROP, proto=PROTO_TCP, src=(net,), dport=((80, 80), (443, 443)))
    addr = int(ipaddress.ip_address("192.0.2.77"))
    assert rule.matches(PROTO_TCP, 4, addr, 0, 1234, 443)
    assert not rule.matches(PROTO_TCP, 6, addr, 0, 1234, 443)  # same integer, other family
    assert not rule.matches(PROTO_TCP, 4, addr, 0, 1234, 444)
    assert RuleSet((rule,), Action.ACCEPT).evaluate(PROTO_TCP, 4, addr, 0, 1, 80) == (Action.DROP, 0)


# --------------------------------------------------------------------------- only new flows
def test_rules_are_only_consulted_for_packets_that_open_a_flow() -> None:
    fw = firewall(rules(accept(proto="tcp", dport=80), accept(proto="udp")))
    drive(fw, FlowState.ESTABLISHED)
    fw.decide(udp(), T0)
    fw.ruleset = ruleset(rules(default="drop"))  # the rule set now drops everything
    for buf in (tcp(PSH | ACK, data=b"more"), tcp(ACK, reply=True), udp(reply=True), udp()):
        d = check(fw.decide(buf, T0 + 1))
        assert (d.verdict, d.reason) == (Verdict.ACCEPT, Reason.TRACKED)
    # a new flow meets the new rules
    assert check(fw.decide(tcp(SYN, cport=1234), T0 + 1)).reason == DROP
    assert check(fw.decide(udp(cport=1234), T0 + 1)).reason == DROP


def test_server_answers_need_no_rule() -> None:
    fw = firewall(rules(accept(proto="tcp", dst="198.51.100.2", dport=80)))
    assert check(fw.decide(tcp(SYN), T0)).reason == OPEN
    d = check(fw.decide(tcp(SYN | ACK, reply=True), T0))
    assert (d.verdict, d.after) == (Verdict.ACCEPT, FlowState.SYN_RECV)
    # but the server cannot open a connection of its own
    assert check(fw.decide(tcp(SYN, reply=True, cport=5555), T0)).reason == DROP
