"""Build raw IPv4/IPv6 packets for benchmarks: a realistic mix without any packet library.

IP and UDP checksums are left zero (the core does not verify them: the kernel did, before
NFQUEUE); TCP segments carry real ones, since the core verifies those of RST and FIN segments.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address
from struct import Struct

from fwcluster.core.reject import checksum

_IP4 = Struct("!BBHHHBBH4s4s")
_IP6 = Struct("!IHBB16s16s")
_TCP = Struct("!HHIIBBHHH")
_UDP = Struct("!HHHH")
_ICMP = Struct("!BBHHH")

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_TS_OPTS = b"\x01\x01\x08\x0a" + bytes(8)  # NOP NOP TIMESTAMP, as most data segments carry
_SYN_OPTS = b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + bytes(8) + b"\x01\x03\x03\x07"  # MSS SACKOK TS NOP WS


def ip(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    if len(src) == 4:
        return _IP4.pack(0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0, src, dst) + payload
    return _IP6.pack(0x60000000, len(payload), proto, 64, src, dst) + payload


def tcp(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    flags: int,
    data: bytes = b"",
    seq: int = 1000,
    ack: int = 2000,
) -> bytes:
    opts = _SYN_OPTS if flags & SYN else _TS_OPTS
    hdr = _TCP.pack(
        sport, dport, seq & 0xFFFFFFFF, (ack & 0xFFFFFFFF) if flags & ACK else 0, (5 + len(opts) // 4) << 4,
        flags, 64240, 0, 0,
    )  # fmt: skip
    seg = hdr + opts + data
    if len(src) == 4:
        pseudo = src + dst + b"\x00\x06" + len(seg).to_bytes(2)
    else:
        pseudo = src + dst + len(seg).to_bytes(4) + b"\x00\x00\x00\x06"
    csum = checksum(pseudo + seg)
    return ip(src, dst, 6, seg[:16] + csum.to_bytes(2) + seg[18:])


def udp(src: bytes, dst: bytes, sport: int, dport: int, data: bytes) -> bytes:
    return ip(src, dst, 17, _UDP.pack(sport, dport, 8 + len(data), 0) + data)


def echo(src: bytes, dst: bytes, ident: int, request: bool) -> bytes:
    v6 = len(src) == 16
    itype = (128 if request else 129) if v6 else (8 if request else 0)
    return ip(src, dst, 58 if v6 else 1, _ICMP.pack(itype, 0, 0, ident, 1) + bytes(56))


def client_addr(i: int, v6: bool) -> bytes:
    if v6:
        return IPv6Address(0x20010002000000000000000000000000 + 2 + (i % 65000)).packed
    return IPv4Address(0xC6120000 + 2 + (i % 250)).packed  # 198.18.0.x


SERVER4 = IPv4Address("198.19.0.2").packed
SERVER6 = IPv6Address("2001:2:0:300::2").packed


_GET = b"GET /index.html HTTP/1.1\r\nHost: s\r\n\r\n"
_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"


def http_connection(c: bytes, s: bytes, port: int) -> list[bytes]:
    """One short HTTP download as the study's workload makes it: 10 packets, with sequence
    numbers and acknowledgements as real TCPs send them (the core tracks windows)."""
    ci, si = (port * 2654435761) & 0xFFFFFFFF, (port * 40503 + 7) & 0xFFFFFFFF  # initial sequence numbers
    g, r = len(_GET), len(_RESPONSE)
    return [
        tcp(c, s, port, 80, SYN, seq=ci),
        tcp(s, c, 80, port, SYN | ACK, seq=si, ack=ci + 1),
        tcp(c, s, port, 80, ACK, seq=ci + 1, ack=si + 1),
        tcp(c, s, port, 80, PSH | ACK, _GET, seq=ci + 1, ack=si + 1),
        tcp(s, c, 80, port, ACK, seq=si + 1, ack=ci + 1 + g),
        tcp(s, c, 80, port, PSH | ACK, _RESPONSE, seq=si + 1, ack=ci + 1 + g),
        tcp(c, s, port, 80, ACK, seq=ci + 1 + g, ack=si + 1 + r),
        tcp(c, s, port, 80, FIN | ACK, seq=ci + 1 + g, ack=si + 1 + r),
        tcp(s, c, 80, port, FIN | ACK, seq=si + 1 + r, ack=ci + 2 + g),
        tcp(c, s, port, 80, ACK, seq=ci + 2 + g, ack=si + 2 + r),
    ]


def realistic_mix(connections: int, seed: int = 1) -> list[bytes]:
    """Handshakes, data and teardowns of interleaved connections, DNS-like UDP, pings, and ~5%
    invalid packets (stray SYN-ACKs and ACKs, NULL and XMAS probes, truncated headers)."""
    rng = random.Random(seed)
    streams: list[list[bytes]] = []
    for i in range(connections):
        v6 = i % 5 == 4  # one flow in five over IPv6
        c = client_addr(i, v6)
        s = SERVER6 if v6 else SERVER4
        port = 1024 + (i * 7) % 60000
        kind = i % 20
        if kind == 18:
            streams.append([udp(c, s, port, 53, bytes(40)), udp(s, c, 53, port, bytes(80))])
        elif kind == 19:
            streams.append([echo(c, s, i & 0xFFFF, True), echo(s, c, i & 0xFFFF, False)])
        else:
            streams.append(http_connection(c, s, port))
    invalid = []
    for i in range(connections // 2):
        c, s = client_addr(i, False), SERVER4
        invalid += [
            tcp(s, c, 80, 50000 + i % 1000, SYN | ACK),  # SYN-ACK with no connection
            tcp(c, s, 40000 + i % 1000, 80, ACK),  # bare ACK with no connection
            tcp(c, s, 40000 + i % 1000, 80, 0),  # NULL probe
            tcp(c, s, 40000 + i % 1000, 80, FIN | PSH | 0x20),  # XMAS probe
            tcp(c, s, 40000 + i % 1000, 80, SYN)[:30],  # truncated
        ][i % 5 : i % 5 + 1]
    # Interleave: keep ~25 connections open at once, like the study's load level.
    out: list[bytes] = []
    active: list[list[bytes]] = []
    pending = list(reversed(streams))
    while pending or active:
        while pending and len(active) < 25:
            active.append(list(reversed(pending.pop())))
        j = rng.randrange(len(active))
        out.append(active[j].pop())
        if not active[j]:
            active.pop(j)
        if invalid and rng.random() < 0.05:
            out.append(invalid.pop())
    return out
