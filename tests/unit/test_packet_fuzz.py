"""Property tests: no byte string makes ``parse()`` or ``Firewall.decide()`` raise.

Inputs are random bytes, and valid packets (scapy: IPv4/IPv6 x TCP/UDP/ICMP/ICMPv6, with IP and
TCP options, IPv6 extension headers, fragments, ICMP errors quoting packets) then mutated: bit
flips, truncation, byte insertions, length fields set to random values. Every decision must keep
the invariants of ``builders.check``, and a REJECT answer must itself be a well-formed packet that
names the refused flow.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import (
    ICMP,
    IP,
    TCP,
    UDP,
    IPOption_EOL,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPOption_RR,
)
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    ICMPv6Unknown,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.packet import Packet, Raw

from fwcluster.core.decision import Reason, Verdict
from fwcluster.core.firewall import Firewall
from fwcluster.core.packet import Parsed, parse
from fwcluster.core.rules import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP

from .builders import ACK, FIN, RST, SYN, T0, check, echo, firewall, icmp_error, tcp, udp

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ADDR4 = ["192.0.2.1", "198.51.100.2", "203.0.113.9"]
ADDR6 = ["2001:db8::1", "2001:db8:1::2", "2001:db8:ffff::9"]
PORTS = [53, 80, 5353, 40000]


# --------------------------------------------------------------------------- valid packets
def ip_options() -> st.SearchStrategy[list[Packet]]:
    one = st.sampled_from(
        [IPOption_NOP(), IPOption_EOL(), IPOption_Router_Alert(), IPOption_RR(routers=["192.0.2.7"])]
    )
    return st.lists(one, max_size=3)


def tcp_options() -> st.SearchStrategy[list[tuple[str, object]]]:
    one = st.sampled_from(
        [
            ("MSS", 1460),
            ("SAckOK", b""),
            ("Timestamp", (12345, 678)),
            ("WScale", 7),
            ("NOP", None),
            ("SAck", (100, 200)),
            ("EOL", None),
        ]
    )
    return st.lists(one, max_size=5)


@st.composite
def transport(draw: st.DrawFn, v6: bool, quoting: bool = False) -> Packet:
    """A TCP, UDP or ICMP layer (with payload); ICMP errors quote a drawn packet."""
    sport, dport = draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS))
    payload = Raw(draw(st.binary(max_size=24)))
    kinds = ["tcp", "udp", "echo"] if quoting else ["tcp", "udp", "echo", "error", "other"]
    kind = draw(st.sampled_from(kinds))
    if kind == "tcp":
        flags = draw(st.sampled_from([SYN, SYN | ACK, ACK, FIN | ACK, 0x04, 0x18])) | draw(
            st.sampled_from([0, 0, 0x20, 0x40, 0x80, 0x01])
        )
        opts = draw(tcp_options())
        return TCP(sport=sport, dport=dport, flags=flags, seq=7, ack=9, options=opts) / payload
    if kind == "udp":
        return UDP(sport=sport, dport=dport) / payload
    if kind == "echo":
        ident = draw(st.sampled_from([1, 0x1234]))
        if v6:
            return (ICMPv6EchoRequest if draw(st.booleans()) else ICMPv6EchoReply)(id=ident) / payload
        return ICMP(type=draw(st.sampled_from([0, 8])), id=ident) / payload
    if kind == "error":
        inner = draw(packets(v6=v6, quoting=True))
        cut = st.integers(min_value=0, max_value=len(inner))
        inner = inner[: draw(st.one_of(st.just(len(inner)), cut))]  # whole or cut anywhere
        if v6:
            cls = draw(
                st.sampled_from(
                    [ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6TimeExceeded, ICMPv6ParamProblem]
                )
            )
            return cls() / Raw(inner)
        return ICMP(type=draw(st.sampled_from([3, 4, 5, 11, 12])), code=draw(st.integers(0, 15))) / Raw(inner)
    itype = draw(
        st.one_of(st.sampled_from([0, 8, 128, 129, 3, 1, 11]), st.integers(min_value=0, max_value=255))
    )
    return (ICMPv6Unknown(type=itype) if v6 else ICMP(type=itype)) / payload


@st.composite
def packets(draw: st.DrawFn, v6: bool | None = None, quoting: bool = False) -> bytes:
    if v6 is None:
        v6 = draw(st.booleans())
    addrs = ADDR6 if v6 else ADDR4
    src, dst = draw(st.sampled_from(addrs)), draw(st.sampled_from(addrs))
    l4 = draw(transport(v6, quoting))
    if v6:
        head: Packet = IPv6(src=src, dst=dst)
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            ext = draw(st.sampled_from(["hbh", "dst", "rt", "frag"]))
            if ext == "frag":
                offset = draw(st.sampled_from([0, 0, 0, 0, 1, 100]))
                head = head / IPv6ExtHdrFragment(offset=offset, m=draw(st.booleans()))
            else:
                head = (
                    head
                    / {"hbh": IPv6ExtHdrHopByHop, "dst": IPv6ExtHdrDestOpt, "rt": IPv6ExtHdrRouting}[ext]()
                )
    else:
        frag = draw(st.sampled_from([0, 0, 0, 0, 0, 0, 1, 185]))
        flags = draw(st.sampled_from([0, 1, 2]))  # none, MF, DF
        head = IP(src=src, dst=dst, options=draw(ip_options()), frag=frag, flags=flags)
    return bytes(head / l4)


# --------------------------------------------------------------------------- mutations
@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    buf = bytearray(draw(packets()))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "length", "length", "byte"]))
        n = len(buf)
        if op == "flip" and n:
            bit = draw(st.integers(min_value=0, max_value=n * 8 - 1))
            buf[bit // 8] ^= 1 << (bit % 8)
        elif op == "truncate":
            del buf[draw(st.integers(min_value=0, max_value=n)) :]
        elif op == "insert":
            at = draw(st.integers(min_value=0, max_value=n))
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "byte" and n:
            buf[draw(st.integers(min_value=0, max_value=n - 1))] = draw(st.integers(0, 255))
        elif op == "length":
            at, size = draw(st.sampled_from(length_fields(bytes(buf))))
            if at + size <= n:
                buf[at : at + size] = draw(st.integers(0, 256**size - 1)).to_bytes(size)
    return bytes(buf)


def length_fields(buf: bytes) -> list[tuple[int, int]]:
    """(offset, size) of the fields that say how long something is."""
    p = parse(buf)
    l4 = p.l4 if isinstance(p, Parsed) else 20
    fields = [(0, 1), (2, 2), (4, 2), (40 + 1, 1), (l4 + 12, 1), (l4 + 4, 2), (l4 + 8 + 2, 2)]
    if isinstance(p, Parsed) and p.proto == PROTO_TCP:
        fields.append((l4 + 21, 1))  # the length byte of the first TCP option
    return fields


# --------------------------------------------------------------------------- checks
def _flows() -> list[bytes]:
    """Packets that leave tracked flows between the fuzz addresses, for decide() to run into."""
    out = []
    for v6 in (False, True):
        out += [tcp(SYN, v6=v6), tcp(SYN | ACK, v6=v6, reply=True), tcp(ACK, v6=v6)]
        out += [udp(v6=v6), echo(v6=v6)]
    return out


FLOWS = _flows()


def firewalls() -> list[Firewall]:
    accept = firewall(max_flows=64)
    for buf in FLOWS:
        accept.decide(buf, T0)
    reject = firewall('[policy]\ndefault = "reject"\n')
    full = firewall(max_flows=2)
    full.decide(FLOWS[0], T0)
    full.decide(FLOWS[3], T0)
    return [accept, reject, full]


def parse_is_total(buf: bytes) -> Parsed | Reason:
    p = parse(buf)
    assert isinstance(p, Parsed | Reason), p
    if isinstance(p, Parsed):
        assert p.version in (4, 6)
        assert p.proto in (PROTO_TCP, PROTO_UDP, PROTO_ICMP if p.version == 4 else PROTO_ICMPV6)
        assert len(p.key) == (13 if p.version == 4 else 37)
        assert p.related is None or len(p.related) == len(p.key)
        assert 0 < p.l4 <= len(buf)
    return p


def opens_a_flow(p: Parsed) -> bool:
    """Only a SYN, any UDP datagram, or an echo request of the packet's own IP version."""
    if p.proto == PROTO_TCP:
        return p.flags & (SYN | ACK | FIN | RST) == SYN
    if p.proto == PROTO_UDP:
        return True
    return p.related is None and p.flags == (8 if p.version == 4 else 128)


def decide_is_total(buf: bytes) -> None:
    p = parse_is_total(buf)
    for fw in firewalls():
        d = check(fw.decide(buf, T0 + 1))
        if isinstance(p, Reason):
            assert (d.verdict, d.reason) == (Verdict.DROP, p)
        assert len(fw.table) <= fw.table.max_flows
        if d.reason in (Reason.RULE_ACCEPT, Reason.RULE_REJECT, Reason.RULE_DROP, Reason.TABLE_FULL):
            assert isinstance(p, Parsed)
            assert opens_a_flow(p), (p, d)
        if d.reply is not None:
            assert isinstance(p, Parsed)
            answer = parse(d.reply)
            assert isinstance(answer, Parsed), answer
            if p.proto == PROTO_TCP:
                assert answer.key == p.key
            else:
                assert answer.related == p.key
        fw.expire(T0 + 10**7, 8)


# --------------------------------------------------------------------------- the properties
@FUZZ
@given(st.binary(max_size=160))
def test_random_bytes(buf: bytes) -> None:
    decide_is_total(buf)


@FUZZ
@given(st.sampled_from([b"\x45", b"\x46", b"\x4f", b"\x60"]), st.binary(max_size=120))
def test_random_bytes_behind_an_ip_version(first: bytes, rest: bytes) -> None:
    decide_is_total(first + rest)


@FUZZ
@given(packets())
def test_valid_packets(buf: bytes) -> None:
    p = parse_is_total(buf)
    # a well-formed packet is parsed or refused for a reason of policy, never as malformed by accident
    assert not isinstance(p, Reason) or p in (
        Reason.FRAGMENT,  # non-first fragments were drawn
        Reason.BAD_OPTIONS,  # an end-of-list IPv4 option followed by record route
        Reason.ICMP_MISDIRECTED,  # an ICMP error not sent back to its quote's source
        Reason.BAD_L4_HEADER,  # an ICMP error whose quote was drawn too short or quoting a fragment
        Reason.TRUNCATED,
    ), p
    decide_is_total(buf)


@FUZZ
@given(mutated())
def test_mutated_packets(buf: bytes) -> None:
    decide_is_total(buf)


# --------------------------------------------------------------------------- exhaustive sweeps
def _corpus() -> list[bytes]:
    out = []
    for v6 in (False, True):
        out += [
            tcp(SYN, v6=v6, options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 2)), ("WScale", 7)]),
            tcp(ACK, v6=v6, data=b"data", options=[("NOP", None), ("NOP", None), ("Timestamp", (3, 4))]),
            tcp(FIN | ACK, v6=v6, reply=True),
            udp(v6=v6),
            echo(v6=v6),
            echo(v6=v6, reply=True),
            icmp_error(tcp(SYN, v6=v6), icmp_type=3 if not v6 else 1, v6=v6),
            icmp_error(udp(v6=v6), icmp_type=11 if not v6 else 3, v6=v6),
        ]
    out.append(bytes(IP(options=[IPOption_RR(routers=["192.0.2.9"]), IPOption_NOP()]) / UDP() / Raw(b"x")))
    out.append(bytes(IP(flags=1, frag=0) / TCP(flags="S")))
    out.append(bytes(IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt() / TCP()))
    out.append(bytes(IPv6() / IPv6ExtHdrFragment(m=1) / UDP() / Raw(b"frag")))
    return out


CORPUS = _corpus()


def _sweep_firewalls() -> tuple[Firewall, Firewall]:
    accept = firewall()
    for buf in FLOWS:
        accept.decide(buf, T0)
    return accept, firewall('[policy]\ndefault = "reject"\n')


def test_truncation_at_every_length() -> None:
    fws = _sweep_firewalls()
    for buf in CORPUS:
        assert isinstance(parse(buf), Parsed)
        for n in range(len(buf)):
            # a valid packet cut anywhere is short of its own length fields: always TRUNCATED
            assert parse(buf[:n]) == Reason.TRUNCATED, (buf.hex(), n)
            for fw in fws:
                assert check(fw.decide(buf[:n], T0 + 1)).reason == Reason.TRUNCATED


def test_every_byte_and_bit_changed() -> None:
    fws = _sweep_firewalls()
    for buf in CORPUS:
        for i in range(len(buf)):
            for value in {0x00, 0xFF, buf[i] + 1 & 0xFF, *(buf[i] ^ 1 << bit for bit in range(8))}:
                mutant = buf[:i] + bytes([value]) + buf[i + 1 :]
                parse_is_total(mutant)
                for fw in fws:
                    check(fw.decide(mutant, T0 + 1))


def test_length_fields_set_to_every_small_value() -> None:
    fws = _sweep_firewalls()
    for buf in CORPUS:
        for at, size in length_fields(buf):
            if at + size > len(buf):
                continue
            for value in [*range(len(buf) + 9), 256**size - 1]:
                if value >= 256**size:
                    break
                mutant = buf[:at] + value.to_bytes(size) + buf[at + size :]
                parse_is_total(mutant)
                for fw in fws:
                    check(fw.decide(mutant, T0 + 1))


def test_padding_and_insertions_never_raise() -> None:
    fws = _sweep_firewalls()
    for buf in CORPUS:
        for i in range(0, len(buf) + 1, 3):
            for extra in (b"\x00", b"\xff" * 4, bytes(range(16))):
                mutant = buf[:i] + extra + buf[i:]
                parse_is_total(mutant)
                for fw in fws:
                    check(fw.decide(mutant, T0 + 1))
