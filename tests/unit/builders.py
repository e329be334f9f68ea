"""Test packets built with scapy, firewalls built from TOML rules, and TCP state paths.

A client and a server talk over IPv4 or IPv6; ``reply=True`` turns a packet around (server to
client). Every builder returns the raw bytes of the IP packet, as the core receives them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
)
from scapy.packet import Packet, Raw

from fwcluster.config import parse_config
from fwcluster.core.decision import ACCEPT_REASONS, Decision, Reason, Verdict
from fwcluster.core.firewall import Firewall
from fwcluster.core.packet import Parsed, parse
from fwcluster.core.rules import RuleSet
from fwcluster.core.states import FlowState
from fwcluster.core.timeouts import Timeouts

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

CLIENT4, SERVER4, ROUTER4 = "192.0.2.1", "198.51.100.2", "203.0.113.9"
CLIENT6, SERVER6, ROUTER6 = "2001:db8::1", "2001:db8:1::2", "2001:db8:ffff::9"
CPORT, SPORT = 40000, 80
T0 = 1000.0  # the time of the first packet in most tests


def ends(v6: bool, reply: bool = False) -> tuple[str, str]:
    """(source, destination) of a client packet, or of a server packet with ``reply``."""
    c, s = (CLIENT6, SERVER6) if v6 else (CLIENT4, SERVER4)
    return (s, c) if reply else (c, s)


def ip(v6: bool, reply: bool = False) -> Packet:
    src, dst = ends(v6, reply)
    return IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)


def tcp(
    flags: int,
    *,
    v6: bool = False,
    reply: bool = False,
    data: bytes = b"",
    seq: int = 1000,
    ack: int = 0,
    options: Sequence[tuple[str, object]] = (),
    cport: int = CPORT,
    sport: int = SPORT,
) -> bytes:
    sp, dp = (sport, cport) if reply else (cport, sport)
    pkt = ip(v6, reply) / TCP(sport=sp, dport=dp, flags=flags, seq=seq, ack=ack, options=list(options))
    if data:
        pkt = pkt / Raw(data)
    return bytes(pkt)


def udp(
    *, v6: bool = False, reply: bool = False, data: bytes = b"query", cport: int = 5353, sport: int = 53
) -> bytes:
    sp, dp = (sport, cport) if reply else (cport, sport)
    return bytes(ip(v6, reply) / UDP(sport=sp, dport=dp) / Raw(data))


def echo(*, v6: bool = False, reply: bool = False, ident: int = 0x1234, seq: int = 1) -> bytes:
    """An echo request from the client, or with ``reply`` the server's echo reply."""
    if v6:
        msg = ICMPv6EchoReply(id=ident, seq=seq) if reply else ICMPv6EchoRequest(id=ident, seq=seq)
    else:
        msg = ICMP(type=0 if reply else 8, id=ident, seq=seq)
    return bytes(ip(v6, reply) / msg / Raw(b"ping" * 4))


_ICMP6_ERRORS = {1: ICMPv6DestUnreach, 2: ICMPv6PacketTooBig, 3: ICMPv6TimeExceeded, 4: ICMPv6ParamProblem}


def icmp_error(
    quoted: bytes, *, icmp_type: int, code: int = 0, v6: bool = False, to: str | None = None
) -> bytes:
    """A router's ICMP error about ``quoted``, sent back to the quoted packet's source (``to``
    overrides the destination: a misdirected error)."""
    if v6:
        cls = _ICMP6_ERRORS[icmp_type]
        head: Packet = IPv6(src=ROUTER6, dst=to or IPv6(quoted).src) / cls(code=code)
    else:
        head = IP(src=ROUTER4, dst=to or IP(quoted).src) / ICMP(type=icmp_type, code=code)
    return bytes(head / Raw(quoted))


def parsed(buf: bytes) -> Parsed:
    p = parse(buf)
    assert isinstance(p, Parsed), p
    return p


def key_of(buf: bytes) -> bytes:
    return parsed(buf).key


def ruleset(toml_text: str) -> RuleSet:
    """A rule set from the ``[policy]`` and ``[[rules]]`` part of a config file."""
    return parse_config(tomllib.loads(toml_text), "test").ruleset


ACCEPT_ALL = 'default = "accept"'


def firewall(
    rules: str = f"[policy]\n{ACCEPT_ALL}\n",
    timeouts: Timeouts | None = None,
    max_flows: int = 1024,
    windows: bool = False,
) -> Firewall:
    """A firewall for the state-table tests: their packets carry made-up sequence numbers, so
    window tracking is off unless asked for (as the kernel's be_liberal; tests/unit/test_window*
    and test_firewall_windows.py drive it with real ones)."""
    return Firewall(ruleset(rules), timeouts or Timeouts(), max_flows, windows=windows)


def check(d: Decision) -> Decision:
    """Invariants every decision keeps, whatever the packet."""
    assert (d.verdict == Verdict.ACCEPT) == (d.reason in ACCEPT_REASONS), d
    assert (d.verdict == Verdict.REJECT) == (d.reason == Reason.RULE_REJECT), d
    assert (d.verdict == Verdict.REJECT) == (d.reply is not None), d
    if d.event is None:
        assert d.before == d.after, d
    else:
        assert d.before != d.after, d
        assert (d.event.before, d.event.after) == (d.before, d.after), d
    return d


# --------------------------------------------------------------------------- TCP state paths
# One packet sequence per TCP state that leads there from nothing: (name, reply, flags).
# Reply-direction packets are named with an "r:" prefix.
Step = tuple[str, bool, int]
_SYN: Step = ("SYN", False, SYN)
_SYNACK: Step = ("r:SYN-ACK", True, SYN | ACK)
_ACK: Step = ("ACK", False, ACK)
_FIN: Step = ("FIN", False, FIN | ACK)
_RACK: Step = ("r:ACK", True, ACK)
_RFIN: Step = ("r:FIN", True, FIN | ACK)

STATE_PATHS: dict[FlowState, tuple[Step, ...]] = {
    FlowState.NONE: (),
    FlowState.SYN_SENT: (_SYN,),
    FlowState.SYN_SENT2: (_SYN, ("r:SYN", True, SYN)),
    FlowState.SYN_RECV: (_SYN, _SYNACK),
    FlowState.ESTABLISHED: (_SYN, _SYNACK, _ACK),
    FlowState.FIN_WAIT: (_SYN, _SYNACK, _ACK, _FIN),
    FlowState.CLOSE_WAIT: (_SYN, _SYNACK, _ACK, _FIN, _RACK),
    FlowState.LAST_ACK: (_SYN, _SYNACK, _ACK, _FIN, _RACK, _RFIN),
    FlowState.TIME_WAIT: (_SYN, _SYNACK, _ACK, _FIN, _RACK, _RFIN, _ACK),
    FlowState.CLOSE: (_SYN, _SYNACK, _ACK, ("RST", False, RST)),
}


def path_name(state: FlowState) -> str:
    return ",".join(name for name, _, _ in STATE_PATHS[state]) or "(nothing)"


def drive(fw: Firewall, state: FlowState, *, v6: bool = False, now: float = T0) -> bytes | None:
    """Send the packet sequence that brings a fresh flow to ``state``; returns the flow's key."""
    key = None
    for name, reply, flags in STATE_PATHS[state]:
        buf = tcp(flags, v6=v6, reply=reply)
        d = check(fw.decide(buf, now))
        assert d.verdict == Verdict.ACCEPT, (name, d)
        key = key_of(buf)
    if key is not None:
        assert fw.state_of(key, now) == state
    return key
