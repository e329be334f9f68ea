"""REJECT answers: a TCP RST or an ICMP/ICMPv6 port unreachable, checked by parsing them with scapy."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, IPOption_Router_Alert, in4_chksum
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6, in6_chksum
from scapy.packet import Packet, Raw
from scapy.utils import checksum as scapy_checksum

from fwcluster.core.decision import Reason, Verdict
from fwcluster.core.reject import build_reject, checksum
from fwcluster.core.rules import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP

from .builders import (
    ACK,
    CLIENT4,
    CLIENT6,
    CPORT,
    FIN,
    PSH,
    RST,
    SERVER4,
    SERVER6,
    SPORT,
    SYN,
    T0,
    check,
    echo,
    firewall,
    icmp_error,
    key_of,
    parsed,
    tcp,
    udp,
)

V = pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
REJECT_ALL = '[policy]\ndefault = "reject"\n'


def rejected(buf: bytes) -> bytes:
    d = check(firewall(REJECT_ALL).decide(buf, T0))
    assert (d.verdict, d.reason, d.event) == (Verdict.REJECT, Reason.RULE_REJECT, None)
    assert d.reply is not None
    return d.reply


def packet(reply: bytes) -> Packet:
    return IPv6(reply) if reply[0] >> 4 == 6 else IP(reply)


def zeroed(data: bytes, at: int) -> bytes:
    return data[:at] + b"\x00\x00" + data[at + 2 :]


def assert_checksums(reply: bytes) -> None:
    """Recompute every checksum of the answer with scapy's own routines (pseudo-headers included)."""
    pkt = packet(reply)
    if isinstance(pkt, IP):
        hlen = pkt.ihl * 4
        assert scapy_checksum(zeroed(reply[:hlen], 10)) == pkt.chksum
        l4 = reply[hlen:]
        if pkt.proto == PROTO_TCP:
            assert in4_chksum(PROTO_TCP, pkt, zeroed(l4, 16)) == pkt[TCP].chksum
        else:
            assert scapy_checksum(zeroed(l4, 2)) == pkt[ICMP].chksum
    else:
        l4 = reply[40:]
        at = 16 if pkt.nh == PROTO_TCP else 2
        assert in6_chksum(pkt.nh, pkt, zeroed(l4, at)) == int.from_bytes(l4[at : at + 2])


def assert_addresses_swapped(reply: Packet, v6: bool) -> None:
    client, server = (CLIENT6, SERVER6) if v6 else (CLIENT4, SERVER4)
    assert (reply.src, reply.dst) == (server, client)
    assert (reply.hlim if v6 else reply.ttl) == 64


# --------------------------------------------------------------------------- TCP
@V
@pytest.mark.parametrize("data", [b"", b"early data"], ids=["syn", "syn+data"])
def test_rst_for_a_syn(v6: bool, data: bytes) -> None:
    reply = rejected(tcp(SYN, v6=v6, seq=0xFFFFFFF0, data=data))
    r = packet(reply)
    assert_addresses_swapped(r, v6)
    t = r[TCP]
    assert (t.sport, t.dport) == (SPORT, CPORT)
    assert int(t.flags) == RST | ACK
    assert t.seq == 0
    assert t.ack == (0xFFFFFFF0 + 1 + len(data)) & 0xFFFFFFFF  # wraps around 2**32
    assert (t.dataofs, len(t.payload)) == (5, 0)
    assert_checksums(reply)
    assert parsed(reply).key == key_of(tcp(SYN, v6=v6))  # the RST belongs to the refused flow


@V
def test_rst_ignores_link_layer_padding(v6: bool) -> None:
    buf = tcp(SYN, v6=v6, seq=100, data=b"abcd")
    padded = firewall(REJECT_ALL).decide(buf + bytes(10), T0).reply
    assert padded is not None
    assert packet(padded)[TCP].ack == 100 + 1 + 4
    assert padded == rejected(buf)


@V
def test_rst_with_tcp_options(v6: bool) -> None:
    buf = tcp(SYN, v6=v6, seq=5, options=[("MSS", 1460), ("WScale", 7), ("SAckOK", b"")])
    assert packet(rejected(buf))[TCP].ack == 6


@V
@pytest.mark.parametrize("flags", [ACK, PSH | ACK, FIN | ACK], ids=["ACK", "PSH-ACK", "FIN-ACK"])
def test_rst_for_a_segment_with_ack_takes_its_sequence_from_the_ack(v6: bool, flags: int) -> None:
    buf = tcp(flags, v6=v6, seq=1000, ack=424242, data=b"xyz")
    reply = build_reject(parsed(buf), buf)
    assert reply is not None
    t = packet(reply)[TCP]
    assert (int(t.flags), t.seq, t.ack) == (RST, 424242, 0)
    assert_checksums(reply)


@V
def test_rst_for_a_fin_without_ack_counts_the_fin(v6: bool) -> None:
    buf = tcp(FIN, v6=v6, seq=50, data=b"ab")
    reply = build_reject(parsed(buf), buf)
    assert reply is not None
    t = packet(reply)[TCP]
    assert (int(t.flags), t.seq, t.ack) == (RST | ACK, 0, 50 + 2 + 1)


@V
def test_no_answer_to_a_rst_or_an_icmp_error(v6: bool) -> None:
    rst = tcp(RST, v6=v6)
    assert build_reject(parsed(rst), rst) is None
    err = icmp_error(udp(v6=v6), icmp_type=1 if v6 else 3, v6=v6)
    assert build_reject(parsed(err), err) is None


# --------------------------------------------------------------------------- UDP and ICMP
def test_icmp_port_unreachable_for_udp_v4() -> None:
    buf = udp(data=b"x" * 100)
    reply = rejected(buf)
    r = IP(reply)
    assert_addresses_swapped(r, False)
    assert (r.proto, r[ICMP].type, r[ICMP].code) == (PROTO_ICMP, 3, 3)
    assert reply[28:] == buf[: 20 + 8]  # the IP header and the first 8 bytes after it
    assert_checksums(reply)
    assert parsed(reply).related == key_of(buf)


def test_icmp_quote_includes_ip_options() -> None:
    buf = bytes(IP(src=CLIENT4, dst=SERVER4, proto=17, options=[IPOption_Router_Alert()]) / Raw(udp()[20:]))
    reply = rejected(buf)
    assert reply[28:] == buf[: 24 + 8]
    assert_checksums(reply)


def test_icmpv6_port_unreachable_for_udp_v6() -> None:
    buf = udp(v6=True, data=b"y" * 100)
    reply = rejected(buf)
    r = IPv6(reply)
    assert_addresses_swapped(r, True)
    assert r.nh == PROTO_ICMPV6
    u = r[ICMPv6DestUnreach]
    assert (u.type, u.code) == (1, 4)
    assert reply[48:] == buf  # the whole packet fits in the minimum MTU
    assert_checksums(reply)
    assert parsed(reply).related == key_of(buf)


def test_icmpv6_answer_fits_in_the_minimum_mtu() -> None:
    buf = udp(v6=True, data=bytes(1400))
    reply = rejected(buf)
    assert len(reply) == 1280
    assert reply[48:] == buf[: 1280 - 48]
    assert_checksums(reply)


@V
def test_echo_request_is_answered_with_unreachable(v6: bool) -> None:
    buf = echo(v6=v6)
    reply = rejected(buf)
    assert parsed(reply).related == key_of(buf)
    assert_checksums(reply)


# --------------------------------------------------------------------------- the checksum
def test_internet_checksum() -> None:
    # RFC 1071 section 3: the one's complement sum of 0001 f203 f4f5 f6f7 is ddf2
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    assert checksum(b"") == 0xFFFF
    assert checksum(b"\xff\xff") == 0
    assert checksum(b"\x01") == checksum(b"\x01\x00")  # odd lengths pad with a zero byte
    data = bytes(range(1, 40))
    c = checksum(data + b"\x00")
    assert checksum(data + b"\x00" + c.to_bytes(2)) == 0  # a packet with its checksum sums to zero


@V
def test_the_checksum_check_notices_a_corrupted_answer(v6: bool) -> None:
    for reply in (rejected(tcp(SYN, v6=v6)), rejected(udp(v6=v6))):
        assert_checksums(reply)
        bad = bytearray(reply)
        bad[-1] ^= 0x01
        with pytest.raises(AssertionError):
            assert_checksums(bytes(bad))
