"""``parse()``: the fields of well-formed packets and the explicit Reason for each kind of bad one."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.packet import Raw

from fwcluster.core.decision import Reason
from fwcluster.core.packet import KEY4, KEY6, Parsed, parse
from fwcluster.core.rules import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP

from .builders import ACK, CLIENT4, CLIENT6, CPORT, SERVER4, SERVER6, SPORT, SYN, echo, icmp_error, ip, parsed
from .builders import tcp as tcp_bytes
from .builders import udp as udp_bytes

V4 = IP(src=CLIENT4, dst=SERVER4)
V6 = IPv6(src=CLIENT6, dst=SERVER6)
SYN4 = bytes(V4 / TCP(sport=CPORT, dport=SPORT, flags="S"))
SYN6 = bytes(V6 / TCP(sport=CPORT, dport=SPORT, flags="S"))


def with_ip_options(opts: bytes) -> bytes:
    """SYN4 with ``opts`` (a multiple of 4 bytes) as IPv4 options."""
    pkt = IP(src=CLIENT4, dst=SERVER4, ihl=5 + len(opts) // 4, len=20 + len(opts) + 20, proto=PROTO_TCP)
    return bytes(pkt)[:20] + opts + SYN4[20:]


def with_tcp_options(opts: bytes, v6: bool = False) -> bytes:
    """A SYN whose TCP header carries ``opts`` (a multiple of 4 bytes)."""
    seg = bytes(TCP(sport=CPORT, dport=SPORT, flags="S", dataofs=5 + len(opts) // 4))[:20] + opts
    head = IPv6(src=CLIENT6, dst=SERVER6, nh=PROTO_TCP) if v6 else IP(src=CLIENT4, dst=SERVER4, proto=6)
    return bytes(head / Raw(seg))


def v6_chain(first: int, ext: bytes, payload: bytes) -> bytes:
    """An IPv6 packet with a hand-made extension-header chain."""
    body = ext + payload
    return bytes(IPv6(src=CLIENT6, dst=SERVER6, nh=first, plen=len(body))) + body


def ext(nh: int, body: bytes) -> bytes:
    """A generic extension header (hop-by-hop, routing, destination options) of 8n bytes."""
    assert (len(body) + 2) % 8 == 0
    return bytes([nh, (len(body) + 2) // 8 - 1]) + body


UDP6 = bytes(UDP(sport=CPORT, dport=SPORT, len=8))  # checksum left zero: the core does not check it


# --------------------------------------------------------------------------- well-formed packets
def test_tcp_fields_v4() -> None:
    p = parsed(tcp_bytes(SYN | ACK, reply=True))
    assert (p.version, p.proto, p.sport, p.dport, p.flags, p.l4) == (
        4,
        PROTO_TCP,
        SPORT,
        CPORT,
        SYN | ACK,
        20,
    )
    assert (p.src, p.dst, p.related) == (bytes([198, 51, 100, 2]), bytes([192, 0, 2, 1]), None)
    assert p.from_lo is False  # 192.0.2.1 sorts first: the client is the key's lo end
    assert p.key == KEY4.pack(PROTO_TCP, p.dst, CPORT, p.src, SPORT)


def test_tcp_fields_v6() -> None:
    p = parsed(tcp_bytes(SYN, v6=True))
    assert (p.version, p.proto, p.sport, p.dport, p.l4, p.from_lo) == (6, PROTO_TCP, CPORT, SPORT, 40, True)
    assert len(p.src) == len(p.dst) == 16
    assert p.key == KEY6.pack(PROTO_TCP, p.src, CPORT, p.dst, SPORT)


def test_same_address_both_ends_orders_by_port() -> None:
    a = parsed(bytes(IP(src=CLIENT4, dst=CLIENT4) / UDP(sport=9, dport=7)))
    b = parsed(bytes(IP(src=CLIENT4, dst=CLIENT4) / UDP(sport=7, dport=9)))
    assert a.key == b.key
    assert (a.from_lo, b.from_lo) == (False, True)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_udp_and_echo_fields(v6: bool) -> None:
    u = parsed(udp_bytes(v6=v6))
    assert (u.proto, u.sport, u.dport, u.flags) == (PROTO_UDP, 5353, 53, 0)
    e = parsed(echo(v6=v6, ident=777))
    assert (e.proto, e.sport, e.dport) == (PROTO_ICMPV6 if v6 else PROTO_ICMP, 777, 777)
    assert e.flags == (128 if v6 else 8)
    r = parsed(echo(v6=v6, reply=True, ident=777))
    assert r.key == e.key
    assert r.from_lo != e.from_lo


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_icmp_error_names_the_quoted_flow(v6: bool) -> None:
    quoted = tcp_bytes(SYN, v6=v6)
    err = parsed(icmp_error(quoted, icmp_type=3 if not v6 else 1, code=1, v6=v6))
    assert err.related == parsed(quoted).key
    assert err.related == parsed(tcp_bytes(SYN | ACK, v6=v6, reply=True)).key


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_icmp_error_quoting_only_eight_bytes_is_enough(v6: bool) -> None:
    quoted = tcp_bytes(SYN, v6=v6)
    short = quoted[: (40 if v6 else 20) + 8]
    assert parsed(icmp_error(short, icmp_type=3, v6=v6)).related == parsed(quoted).key


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_link_layer_padding_is_ignored(v6: bool) -> None:
    for buf in (tcp_bytes(ACK, v6=v6, data=b"abc"), udp_bytes(v6=v6), echo(v6=v6)):
        assert parse(buf + bytes(18)) == parse(buf)


def test_ipv4_options_are_walked() -> None:
    for opts in (
        b"\x01\x01\x01\x01",  # NOPs
        b"\x00\x00\x00\x00",  # end of list
        b"\x01\x00\xff\xff",  # NOP, end of list, then anything
        b"\x94\x04\x00\x00",  # router alert
        b"\x07\x07\x04" + bytes(5),  # record route, one slot
    ):
        assert isinstance(parse(with_ip_options(opts)), Parsed), opts


def test_tcp_options_are_walked() -> None:
    syn = tcp_bytes(SYN, options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("WScale", 7)])
    assert parsed(syn).flags == SYN
    ts_only = tcp_bytes(ACK, options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
    assert parsed(ts_only).l4 == 20
    for opts in (b"\x01\x01\x01\x01", b"\x00\xff\xff\xff", b"\x02\x04\x05\xb4"):
        assert isinstance(parse(with_tcp_options(opts)), Parsed), opts


def test_ipv6_extension_headers_are_walked() -> None:
    chain = V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()
    p = parsed(bytes(chain / TCP(sport=CPORT, dport=SPORT, flags="S")))
    assert (p.proto, p.dport, p.l4) == (PROTO_TCP, SPORT, 40 + 8 + 8 + 8)
    p = parsed(bytes(V6 / AH(nh=PROTO_TCP, payloadlen=4, icv=bytes(12)) / TCP(dport=SPORT, flags="S")))
    assert (p.proto, p.l4) == (PROTO_TCP, 64)
    # Pad1 and PadN options, seven headers deep
    hbh = ext(60, b"\x00\x01\x02\x00\x00\x00")
    chain7 = hbh + b"".join(ext(60, b"\x01\x04" + bytes(4)) for _ in range(5)) + ext(PROTO_UDP, bytes(6))
    assert parsed(v6_chain(0, chain7, UDP6)).l4 == 40 + 7 * 8


def test_first_fragments_carry_the_l4_header() -> None:
    p = parsed(bytes(IP(src=CLIENT4, dst=SERVER4, flags="MF", frag=0) / TCP(dport=SPORT, flags="S")))
    assert p.dport == SPORT
    p = parsed(bytes(V6 / IPv6ExtHdrFragment(offset=0, m=1, nh=PROTO_UDP) / UDP(dport=53) / Raw(b"q")))
    assert (p.dport, p.l4) == (53, 48)


# --------------------------------------------------------------------------- explicit reasons
def set_bytes(buf: bytes, at: int, value: bytes) -> bytes:
    return buf[:at] + value + buf[at + len(value) :]


BAD = {
    "empty": (b"", Reason.TRUNCATED),
    "version 5": (b"\x50" + SYN4[1:], Reason.BAD_VERSION),
    "version 0": (bytes(40), Reason.BAD_VERSION),
    "v4 shorter than its header": (SYN4[:19], Reason.TRUNCATED),
    "v6 shorter than its header": (SYN6[:39], Reason.TRUNCATED),
    "IHL 4 (16 bytes)": (set_bytes(SYN4, 0, b"\x44"), Reason.BAD_HEADER_LENGTH),
    "IHL 0": (set_bytes(SYN4, 0, b"\x40"), Reason.BAD_HEADER_LENGTH),
    "IHL beyond the buffer": (set_bytes(SYN4, 0, b"\x4f")[:50], Reason.TRUNCATED),
    "total length beyond the buffer": (set_bytes(SYN4, 2, (len(SYN4) + 1).to_bytes(2)), Reason.TRUNCATED),
    "total length below the header": (set_bytes(SYN4, 2, (19).to_bytes(2)), Reason.BAD_TOTAL_LENGTH),
    "v6 payload length zero (jumbogram)": (set_bytes(SYN6, 4, b"\x00\x00"), Reason.BAD_TOTAL_LENGTH),
    "v6 payload length beyond the buffer": (set_bytes(SYN6, 4, b"\x00\x15"), Reason.TRUNCATED),
    "IPv4 option length 0": (with_ip_options(b"\x07\x00\x00\x00"), Reason.BAD_OPTIONS),
    "IPv4 option length 1": (with_ip_options(b"\x07\x01\x00\x00"), Reason.BAD_OPTIONS),
    "IPv4 option past the header": (with_ip_options(b"\x07\x08\x00\x00"), Reason.BAD_OPTIONS),
    "IPv4 option kind without length": (with_ip_options(b"\x01\x01\x01\x07"), Reason.BAD_OPTIONS),
    "TCP option length 0": (with_tcp_options(b"\x02\x00\x00\x00"), Reason.BAD_OPTIONS),
    "TCP option length 1": (with_tcp_options(b"\x08\x01\x00\x00"), Reason.BAD_OPTIONS),
    "TCP option past the header": (with_tcp_options(b"\x02\x05\x05\xb4"), Reason.BAD_OPTIONS),
    "TCP option kind without length": (with_tcp_options(b"\x01\x01\x01\x03"), Reason.BAD_OPTIONS),
    "v6 TCP option past the header": (with_tcp_options(b"\x08\x0a\x00\x00", v6=True), Reason.BAD_OPTIONS),
    "TCP data offset 4": (set_bytes(SYN4, 32, b"\x40"), Reason.BAD_L4_HEADER),
    "TCP data offset 0": (set_bytes(SYN6, 52, b"\x00"), Reason.BAD_L4_HEADER),
    "TCP data offset beyond the packet": (set_bytes(SYN4, 32, b"\xf0"), Reason.BAD_L4_HEADER),
    "TCP header cut short": (
        bytes(IP(src=CLIENT4, dst=SERVER4, proto=6) / Raw(SYN4[20:30])),
        Reason.TRUNCATED,
    ),
    "UDP length below 8": (bytes(V4 / UDP(len=7) / Raw(b"abc")), Reason.BAD_L4_HEADER),
    "UDP length beyond the packet": (bytes(V4 / UDP(len=100) / Raw(b"abc")), Reason.BAD_L4_HEADER),
    "UDP header cut short": (
        bytes(IP(src=CLIENT4, dst=SERVER4, proto=17) / Raw(b"abcdef")),
        Reason.TRUNCATED,
    ),
    "ICMP header cut short": (
        bytes(IP(src=CLIENT4, dst=SERVER4, proto=1) / Raw(b"\x08\x00\x00")),
        Reason.TRUNCATED,
    ),
    "v4 non-first fragment": (bytes(IP(src=CLIENT4, dst=SERVER4, frag=1) / TCP(flags="S")), Reason.FRAGMENT),
    "v4 last fragment": (
        bytes(IP(src=CLIENT4, dst=SERVER4, frag=185, proto=6) / Raw(bytes(40))),
        Reason.FRAGMENT,
    ),
    "v6 non-first fragment": (
        bytes(V6 / IPv6ExtHdrFragment(offset=1, nh=6) / Raw(bytes(40))),
        Reason.FRAGMENT,
    ),
    "v6 fragment after hop-by-hop": (
        bytes(V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=100, nh=17) / Raw(bytes(8))),
        Reason.FRAGMENT,
    ),
    "GRE over v4": (bytes(IP(src=CLIENT4, dst=SERVER4, proto=47) / Raw(bytes(8))), Reason.UNKNOWN_PROTOCOL),
    "SCTP over v4": (
        bytes(IP(src=CLIENT4, dst=SERVER4, proto=132) / Raw(bytes(12))),
        Reason.UNKNOWN_PROTOCOL,
    ),
    "GRE over v6": (bytes(IPv6(src=CLIENT6, dst=SERVER6, nh=47) / Raw(bytes(8))), Reason.UNKNOWN_PROTOCOL),
    "SCTP over v6": (bytes(IPv6(src=CLIENT6, dst=SERVER6, nh=132) / Raw(bytes(12))), Reason.UNKNOWN_PROTOCOL),
    "ICMPv6 over v4": (
        bytes(IP(src=CLIENT4, dst=SERVER4, proto=58) / Raw(bytes(8))),
        Reason.UNKNOWN_PROTOCOL,
    ),
    "ICMP over v6": (bytes(IPv6(src=CLIENT6, dst=SERVER6, nh=1) / Raw(bytes(8))), Reason.UNKNOWN_PROTOCOL),
    "v6 no next header": (
        bytes(IPv6(src=CLIENT6, dst=SERVER6, nh=59) / Raw(bytes(8))),
        Reason.UNKNOWN_PROTOCOL,
    ),
    "v6 no next header after dest opts": (v6_chain(60, ext(59, bytes(6)), bytes(8)), Reason.UNKNOWN_PROTOCOL),
    "v6 bad hop-by-hop option": (v6_chain(0, ext(17, b"\x01\x05" + bytes(4)), UDP6), Reason.BAD_OPTIONS),
    "v6 hop-by-hop option without length": (
        v6_chain(0, ext(17, bytes(5) + b"\x05"), UDP6),
        Reason.BAD_OPTIONS,
    ),
    "v6 extension header cut short": (v6_chain(0, b"\x11\x00\x00\x00", b""), Reason.TRUNCATED),
    "v6 nine extension headers": (
        v6_chain(60, b"".join(ext(60, bytes(6)) for _ in range(8)) + ext(17, bytes(6)), UDP6),
        Reason.BAD_OPTIONS,
    ),
}


@pytest.mark.parametrize(("buf", "reason"), BAD.values(), ids=BAD.keys())
def test_malformed_input_gives_its_reason(buf: bytes, reason: Reason) -> None:
    assert parse(buf) == reason


def test_extension_header_longer_than_the_packet_is_refused() -> None:
    assert parse(v6_chain(60, bytes([17, 5]) + bytes(6), UDP6)) in (Reason.TRUNCATED, Reason.BAD_OPTIONS)


ICMP_QUOTE_BAD = {
    "quote without ports": (tcp_bytes(SYN)[:22], Reason.TRUNCATED),
    "quote of a non-first fragment": (
        bytes(IP(src=CLIENT4, dst=SERVER4, frag=3, proto=6) / Raw(bytes(8))),
        Reason.BAD_L4_HEADER,
    ),
    "quote of an ICMP error": (icmp_error(tcp_bytes(SYN), icmp_type=3)[:56], Reason.BAD_L4_HEADER),
    "quote of GRE": (bytes(IP(proto=47) / Raw(bytes(8))), Reason.BAD_L4_HEADER),
    "quote with IHL 3": (b"\x43" + tcp_bytes(SYN)[1:28], Reason.BAD_L4_HEADER),
}


@pytest.mark.parametrize(("quoted", "reason"), ICMP_QUOTE_BAD.values(), ids=ICMP_QUOTE_BAD.keys())
def test_icmp_error_with_a_bad_quote(quoted: bytes, reason: Reason) -> None:
    assert parse(icmp_error(quoted, icmp_type=11)) == reason


def test_icmpv6_error_quoting_a_truncated_header() -> None:
    assert parse(bytes(ip(True) / ICMPv6DestUnreach() / Raw(SYN6[:30]))) == Reason.TRUNCATED


def test_other_icmp_types_parse_without_ports() -> None:
    p = parsed(bytes(V4 / ICMP(type=13)))  # timestamp request
    assert (p.flags, p.sport, p.dport, p.related) == (13, 0, 0, None)
