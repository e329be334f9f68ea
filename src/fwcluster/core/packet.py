"""Parse raw IPv4/IPv6 packets into a direction-independent flow key plus the packet's direction.

Every input yields either a :class:`Parsed` or a :class:`~fwcluster.core.decision.Reason` that
says why the bytes are not a packet we can track; no input raises. All header reads use
precompiled :mod:`struct` formats, and every length is checked before it is trusted.

Flow key layout (bytes): ``proto | addr_lo | port_lo | addr_hi | port_hi`` where ``lo`` is the
endpoint whose (address, port) sorts first, so both directions of a flow share one key.
For ICMP echo the identifier stands in for both ports.
"""

from __future__ import annotations

from struct import Struct
from typing import NamedTuple

from fwcluster.core.decision import Reason
from fwcluster.core.rules import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP

_IP4 = Struct("!BxHxxHxB2x4s4s")  # ver/ihl, total length, flags/fragment, protocol, src, dst
_IP6 = Struct("!4xHBx16s16s")  # payload length, next header, src, dst
_PORTS = Struct("!HH")
_TCP = Struct("!HH8xBB")  # sport, dport, data offset, flags
_UDP = Struct("!HHH")  # sport, dport, length
_ICMP = Struct("!BBxxH")  # type, code, identifier (for echo)
KEY4 = Struct("!B4sH4sH")
KEY6 = Struct("!B16sH16sH")

# TCP flag bits
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

# ICMP types: echo request/reply open and answer a flow; errors quote another packet.
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
ICMP_ERRORS = frozenset({3, 4, 5, 11, 12})  # unreachable, source quench, redirect, time exceeded, param
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129
ICMP6_ERRORS = frozenset({1, 2, 3, 4})  # unreachable, packet too big, time exceeded, param problem

# IPv6 extension headers we walk through (RFC 8200 order); anything else ends the chain.
_EXT_GENERIC = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options: (len+1)*8
_EXT_FRAGMENT, _EXT_AH, _EXT_NONE = 44, 51, 59
_MAX_EXT_HEADERS = 8

_TCP_TS_ONLY = b"\x01\x01\x08\x0a"  # NOP NOP TIMESTAMP(10): the options of almost every data segment


class Parsed(NamedTuple):
    version: int  # 4 or 6
    proto: int
    key: bytes
    from_lo: bool  # the packet travels from the key's lo endpoint to its hi endpoint
    src: bytes  # 4 or 16 bytes
    dst: bytes
    sport: int  # 0 for ICMP
    dport: int
    flags: int  # TCP flags; ICMP type for ICMP
    related: bytes | None  # for ICMP errors: the key of the quoted flow
    l4: int  # offset of the transport header


_new = tuple.__new__


class KeyParts(NamedTuple):
    """A flow key taken apart (for people: status dumps, logs); addresses as bytes."""

    proto: int
    addr_lo: bytes
    port_lo: int
    addr_hi: bytes
    port_hi: int


def key_parts(key: bytes) -> KeyParts | None:
    """The parts of a flow key (layout in the module doc); None for bytes of another length."""
    if len(key) == KEY4.size:
        return KeyParts(*KEY4.unpack(key))
    if len(key) == KEY6.size:
        return KeyParts(*KEY6.unpack(key))
    return None


def parse(buf: bytes) -> Parsed | Reason:
    """Parse one packet starting at its IP header."""
    n = len(buf)
    if n < 1:
        return Reason.TRUNCATED
    version = buf[0] >> 4
    if version == 4:
        return _parse4(buf, n, True)
    if version == 6:
        return _parse6(buf, n, True)
    return Reason.BAD_VERSION


def _parse4(buf: bytes, n: int, outer: bool) -> Parsed | Reason:
    if n < 20:
        return Reason.TRUNCATED
    ver_ihl, total, frag, proto, src, dst = _IP4.unpack_from(buf)
    hlen = (ver_ihl & 0x0F) << 2
    if hlen < 20:
        return Reason.BAD_HEADER_LENGTH
    if hlen > n:
        return Reason.TRUNCATED
    if outer:
        if total < hlen:
            return Reason.BAD_TOTAL_LENGTH
        if total > n:
            return Reason.TRUNCATED
        n = total  # ignore link-layer padding
    if hlen > 20 and not _options_ok(buf, 20, hlen):
        return Reason.BAD_OPTIONS
    if frag & 0x1FFF:
        return Reason.FRAGMENT
    return _l4(buf, hlen, n, 4, proto, src, dst, outer)


def _parse6(buf: bytes, n: int, outer: bool) -> Parsed | Reason:
    if n < 40:
        return Reason.TRUNCATED
    plen, nexthdr, src, dst = _IP6.unpack_from(buf)
    if outer:
        if plen == 0:
            return Reason.BAD_TOTAL_LENGTH  # jumbograms are not forwarded here
        if 40 + plen > n:
            return Reason.TRUNCATED
        n = 40 + plen
    off = 40
    for _ in range(_MAX_EXT_HEADERS):
        if nexthdr in _EXT_GENERIC or nexthdr == _EXT_AH:
            if off + 8 > n:
                return Reason.TRUNCATED
            step = (buf[off + 1] + 2) << 2 if nexthdr == _EXT_AH else (buf[off + 1] + 1) << 3
            if nexthdr != _EXT_AH and not _options_ok6(buf, nexthdr, off, off + step, n):
                return Reason.BAD_OPTIONS
            nexthdr = buf[off]
            off += step
        elif nexthdr == _EXT_FRAGMENT:
            if off + 8 > n:
                return Reason.TRUNCATED
            if ((buf[off + 2] << 8) | buf[off + 3]) & 0xFFF8:
                return Reason.FRAGMENT
            nexthdr = buf[off]
            off += 8
        else:
            break
    else:
        return Reason.BAD_OPTIONS  # an extension-header chain this long is an attack, not traffic
    if off > n:
        return Reason.TRUNCATED
    if nexthdr == _EXT_NONE:
        return Reason.UNKNOWN_PROTOCOL
    return _l4(buf, off, n, 6, nexthdr, src, dst, outer)


def _l4(
    buf: bytes, off: int, end: int, version: int, proto: int, src: bytes, dst: bytes, outer: bool
) -> Parsed | Reason:
    """Parse the transport header at ``off``; ``end`` is the end of the IP packet."""
    avail = end - off
    related: bytes | None = None
    if proto == PROTO_TCP:
        if not outer:
            # An ICMP error quotes at least the first 8 bytes: the ports are all we need.
            if avail < 4:
                return Reason.TRUNCATED
            sport, dport = _PORTS.unpack_from(buf, off)
            flags = 0
        else:
            if avail < 20:
                return Reason.TRUNCATED
            sport, dport, doff, flags = _TCP.unpack_from(buf, off)
            thlen = (doff >> 4) << 2
            if thlen < 20 or thlen > avail:
                return Reason.BAD_L4_HEADER
            ts_only = thlen == 32 and buf[off + 20 : off + 24] == _TCP_TS_ONLY
            if thlen > 20 and not ts_only and not _options_ok(buf, off + 20, off + thlen):
                return Reason.BAD_OPTIONS
    elif proto == PROTO_UDP:
        if avail < (8 if outer else 4):
            return Reason.TRUNCATED
        if outer:
            sport, dport, ulen = _UDP.unpack_from(buf, off)
            if ulen < 8 or ulen > avail:
                return Reason.BAD_L4_HEADER
        else:
            sport, dport = _PORTS.unpack_from(buf, off)
        flags = 0
    elif proto == (PROTO_ICMP if version == 4 else PROTO_ICMPV6):
        if avail < 8:
            return Reason.TRUNCATED
        flags, _code, ident = _ICMP.unpack_from(buf, off)
        sport = dport = 0
        if version == 4:
            echo = flags in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
            error = flags in ICMP_ERRORS
        else:
            echo = flags in (ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY)
            error = flags in ICMP6_ERRORS
        if echo:
            sport = dport = ident
        elif error and outer:
            inner = (
                _parse4(buf[off + 8 : end], avail - 8, False)
                if version == 4
                else _parse6(buf[off + 8 : end], avail - 8, False)
            )
            if isinstance(inner, Reason):
                return Reason.BAD_L4_HEADER if inner != Reason.TRUNCATED else Reason.TRUNCATED
            if inner.src != dst:
                # An error goes back to the source of the packet it quotes (the kernel's
                # nf_conntrack_inet_error checks the same): anything else is misdirected.
                return Reason.ICMP_MISDIRECTED
            related = inner.key
        elif not outer:
            return Reason.UNKNOWN_PROTOCOL  # an error quoting an error is not tracked
    else:
        return Reason.UNKNOWN_PROTOCOL
    # Direction-independent key: the (address, port) that sorts first is "lo".
    from_lo = src < dst or (src == dst and sport <= dport)
    key_struct = KEY4 if version == 4 else KEY6
    if from_lo:
        key = key_struct.pack(proto, src, sport, dst, dport)
    else:
        key = key_struct.pack(proto, dst, dport, src, sport)
    return _new(Parsed, (version, proto, key, from_lo, src, dst, sport, dport, flags, related, off))


def _options_ok(buf: bytes, start: int, end: int) -> bool:
    """Walk IPv4 or TCP options (same TLV shape): kinds 0 (end) and 1 (no-op) are one byte."""
    i = start
    while i < end:
        kind = buf[i]
        if kind == 0:
            return True
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end:
            return False
        length = buf[i + 1]
        if length < 2 or i + length > end:
            return False
        i += length
    return True


def _options_ok6(buf: bytes, nexthdr: int, start: int, end: int, limit: int) -> bool:
    """Hop-by-hop and destination options hold TLVs (Pad1 is one byte); routing headers don't."""
    if end > limit:
        return False
    if nexthdr == 43:
        return True
    i = start + 2
    while i < end:
        kind = buf[i]
        if kind == 0:  # Pad1
            i += 1
            continue
        if i + 1 >= end:
            return False
        i += 2 + buf[i + 1]
    return i == end


def tcp_checksum_ok(buf: bytes, p: Parsed) -> bool:
    """Does the TCP segment of ``p`` carry a correct checksum (RFC 9293, with the pseudo-header)?

    The ones'-complement sum of 16-bit words is the big number's remainder modulo 0xFFFF (as
    2**16 = 1 modulo 0xFFFF), so the check is one C-level conversion and one division: a correct
    segment sums to 0xFFFF, that is to 0 modulo 0xFFFF (a sum of 0 would need all-zero words)."""
    if p.version == 4:
        end = (buf[2] << 8) | buf[3]
        pseudo = p.src + p.dst + b"\x00\x06" + (end - p.l4).to_bytes(2)
    else:
        end = 40 + ((buf[4] << 8) | buf[5])
        pseudo = p.src + p.dst + (end - p.l4).to_bytes(4) + b"\x00\x00\x00\x06"
    seg = buf[p.l4 : end]
    if len(seg) & 1:
        seg += b"\x00"
    return int.from_bytes(pseudo + seg) % 0xFFFF == 0
