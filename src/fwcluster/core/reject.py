"""Answers for REJECT: a TCP RST for TCP, an ICMP/ICMPv6 port unreachable for everything else.

Built as raw IP packets (checksums included) that the datapath sends back to the packet's
source, the way the kernel's REJECT target answers.
"""

from __future__ import annotations

from struct import Struct

from fwcluster.core.packet import ACK, FIN, RST, SYN, Parsed
from fwcluster.core.rules import PROTO_ICMPV6, PROTO_TCP

_IP4 = Struct("!BBHHHBBH4s4s")
_IP6 = Struct("!IHBB16s16s")
_TCP = Struct("!HHIIBBHHH")
_SEQ_ACK = Struct("!II")
_ICMP = Struct("!BBHI")

_TTL = 64
_ICMP_UNREACH, _ICMP_PORT_UNREACH = 3, 3
_ICMP6_UNREACH, _ICMP6_PORT_UNREACH = 1, 4
_ICMP4_QUOTE = 8  # RFC 792: the IP header plus the first 8 bytes of its payload
_IPV6_MIN_MTU = 1280


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) & 1:
        data += b"\x00"
    total = sum(int.from_bytes(data[i : i + 2]) for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo(p: Parsed, proto: int, length: int) -> bytes:
    """The pseudo-header of the answer (source and destination swapped)."""
    if p.version == 4:
        return p.dst + p.src + bytes([0, proto]) + length.to_bytes(2)
    return p.dst + p.src + length.to_bytes(4) + bytes([0, 0, 0, proto])


def _ip(p: Parsed, proto: int, payload: bytes) -> bytes:
    if p.version == 4:
        hdr = _IP4.pack(0x45, 0, 20 + len(payload), 0, 0x4000, _TTL, proto, 0, p.dst, p.src)
        return hdr[:10] + checksum(hdr).to_bytes(2) + hdr[12:] + payload
    return _IP6.pack(0x60000000, len(payload), proto, _TTL, p.dst, p.src) + payload


def tcp_rst(p: Parsed, buf: bytes) -> bytes:
    """RST for a refused TCP segment (RFC 9293 3.10.7.1, as the kernel's nf_reject builds it)."""
    off = p.l4
    seq, ack = _SEQ_ACK.unpack_from(buf, off + 4)
    doff = (buf[off + 12] >> 4) << 2
    if p.flags & ACK:
        rseq, rack, rflags = ack, 0, RST
    else:
        # The segment ends where the IP packet does, not where the buffer does (link-layer padding).
        end = int.from_bytes(buf[2:4]) if p.version == 4 else 40 + int.from_bytes(buf[4:6])
        seg_len = end - off - doff + (1 if p.flags & SYN else 0) + (1 if p.flags & FIN else 0)
        rseq, rack, rflags = 0, (seq + seg_len) & 0xFFFFFFFF, RST | ACK
    hdr = _TCP.pack(p.dport, p.sport, rseq, rack, 5 << 4, rflags, 0, 0, 0)
    csum = checksum(_pseudo(p, PROTO_TCP, 20) + hdr)
    return _ip(p, PROTO_TCP, hdr[:16] + csum.to_bytes(2) + hdr[18:])


def icmp_unreachable(p: Parsed, buf: bytes) -> bytes:
    if p.version == 4:
        ihl = (buf[0] & 0x0F) << 2
        quote = buf[: ihl + _ICMP4_QUOTE]
        msg = _ICMP.pack(_ICMP_UNREACH, _ICMP_PORT_UNREACH, 0, 0) + quote
        return _ip(p, 1, msg[:2] + checksum(msg).to_bytes(2) + msg[4:])
    quote = buf[: _IPV6_MIN_MTU - 40 - 8]
    msg = _ICMP.pack(_ICMP6_UNREACH, _ICMP6_PORT_UNREACH, 0, 0) + quote
    csum = checksum(_pseudo(p, PROTO_ICMPV6, len(msg)) + msg)
    return _ip(p, PROTO_ICMPV6, msg[:2] + csum.to_bytes(2) + msg[4:])


def build_reject(p: Parsed, buf: bytes) -> bytes | None:
    """The answer to send for a rejected packet; none for ICMP errors (never answer an error)."""
    if p.proto == PROTO_TCP:
        if p.flags & RST:
            return None  # never answer a RST
        return tcp_rst(p, buf)
    if p.related is not None:
        return None
    return icmp_unreachable(p, buf)
