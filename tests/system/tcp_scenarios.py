"""Crafted TCP segment sequences for the differential test against the kernel's conntrack.

A scenario is a list of segments between a client (``C``, the endpoint that sends the first SYN:
the original direction) and a server (``S``). A segment is ``(direction, flags, seq offset, ack
offset, payload length, window, options)``: the sequence number is the sender's initial sequence
number plus the offset, the acknowledgement the peer's ISN plus its offset (``None``: the ack
field is 0), flags are scapy's letters (F S R P A U E C), the window the raw 16-bit field (scaled
by the window-scale option when both SYNs carried one), options scapy's TCP options. The
marker :data:`LATE` splits a scenario: what follows it is sent after a pause longer than the
CLOSE timeout (10 s, the shortest TCP timeout in both trackers), which shows whether an earlier
segment closed the connection.

Offsets are written relative to the ISNs so that a scenario reads like a trace: after the
default handshake and 100 bytes from the client (:data:`DATA`) the client's next sequence
offset is 101 and the server's 1. Nothing here needs root; the test sends the segments.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

LATE = "late"  # marker: the segments after it are sent after the CLOSE timeout has passed

SYN_OPTS = (("MSS", 1460), ("SAckOK", b""), ("NOP", None), ("WScale", 7))
SYN_OPTS_NO_WS = (("MSS", 1460), ("SAckOK", b""))
WIN_SYN_C, WIN_SYN_S = 64240, 65160  # what Linux puts in its SYN and SYN-ACK
WIN_C, WIN_S = 502, 509  # after the handshake, scaled by 2**7: 64256 and 65152 bytes
FAR = 200_000  # beyond any window in these scenarios (the largest is 128,000 bytes)


class Seg(NamedTuple):
    dir: str  # "C": client to server (original direction); "S": server to client
    flags: str
    seq: int
    ack: int | None
    length: int = 0
    window: int = 0
    options: tuple[tuple[str, object], ...] = ()
    bad_checksum: bool = False

    def describe(self) -> str:
        ack = "" if self.ack is None else f" ack {self.ack:+d}"
        extra = f" len {self.length}" if self.length else ""
        extra += f" win {self.window}" if self.window not in (WIN_C, WIN_S) else ""
        extra += " wscale" if any(o[0] == "WScale" for o in self.options) else ""
        extra += " bad-csum" if self.bad_checksum else ""
        arrow = "C>S" if self.dir == "C" else "S>C"
        return f"{arrow} {self.flags or '(none)'} seq {self.seq:+d}{ack}{extra}"


Step = Seg | str


def C(flags: str, seq: int, ack: int | None = None, n: int = 0, win: int = WIN_C,
      opts: tuple[tuple[str, object], ...] = (), bad: bool = False) -> Seg:  # fmt: skip
    return Seg("C", flags, seq, ack, n, win, opts, bad)


def S(flags: str, seq: int, ack: int | None = None, n: int = 0, win: int = WIN_S,
      opts: tuple[tuple[str, object], ...] = (), bad: bool = False) -> Seg:  # fmt: skip
    return Seg("S", flags, seq, ack, n, win, opts, bad)


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    steps: tuple[Step, ...]
    family: int = 4
    server_port_allowed: bool = True  # the rules let a SYN to the server's port open a flow
    client_port_allowed: bool = False  # ... and one to the client's port (roles swapped)
    client_isn: int | None = None
    server_isn: int | None = None

    def segments(self) -> list[tuple[Seg, bool]]:
        """The segments in order, each with whether it is sent in the late phase."""
        out: list[tuple[Seg, bool]] = []
        late = False
        for step in self.steps:
            if isinstance(step, str):
                late = True
            else:
                out.append((step, late))
        return out

    @property
    def has_late(self) -> bool:
        return LATE in self.steps


@dataclass(frozen=True)
class Endpoints:
    """Addresses, ports and ISNs of one scenario on one path."""

    client: str
    server: str
    cport: int
    sport: int
    cisn: int
    sisn: int


def endpoints(index: int, scn: Scenario, client: str, server: str) -> Endpoints:
    """A fresh pair of ports per scenario (so no two scenarios share a flow) and its ISNs."""
    cport = (7500 if scn.client_port_allowed else 40000) + index
    sport = (7000 if scn.server_port_allowed else 6000) + index
    cisn = scn.client_isn if scn.client_isn is not None else (0x1000_0000 + index * 0x0101_0101) & 0xFFFFFFFF
    sisn = scn.server_isn if scn.server_isn is not None else (0x8000_0000 + index * 0x0303_0303) & 0xFFFFFFFF
    return Endpoints(client, server, cport, sport, cisn, sisn)


def build_packet(seg: Seg, ep: Endpoints, family: int, tag: int) -> bytes:
    """The IP packet of ``seg``; ``tag`` goes into the IPv4 ID or the IPv6 flow label, where the
    sniffer finds it again (forwarding leaves both alone)."""
    mask = 0xFFFFFFFF
    if seg.dir == "C":
        src, dst, sp, dp, isn, peer = ep.client, ep.server, ep.cport, ep.sport, ep.cisn, ep.sisn
    else:
        src, dst, sp, dp, isn, peer = ep.server, ep.client, ep.sport, ep.cport, ep.sisn, ep.cisn
    ack = 0 if seg.ack is None else (peer + seg.ack) & mask
    tcp = TCP(sport=sp, dport=dp, flags=seg.flags, seq=(isn + seg.seq) & mask, ack=ack,
              window=seg.window, options=list(seg.options))  # fmt: skip
    l3 = IP(src=src, dst=dst, id=tag, ttl=64) if family == 4 else IPv6(src=src, dst=dst, fl=tag, hlim=64)
    pkt = l3 / tcp
    if seg.length:
        pkt = pkt / Raw(bytes((i % 251) + 1 for i in range(seg.length)))
    raw = bytearray(bytes(pkt))
    if seg.bad_checksum:
        off = 20 if family == 4 else 40
        raw[off + 16] ^= 0x5A  # the TCP checksum's first byte
    return bytes(raw)


# ---------------------------------------------------------------------------- building blocks
HANDSHAKE: tuple[Seg, ...] = (
    C("S", 0, None, win=WIN_SYN_C, opts=SYN_OPTS),
    S("SA", 0, 1, win=WIN_SYN_S, opts=SYN_OPTS),
    C("A", 1, 1),
)
# the handshake and 100 bytes from the client, acknowledged: next seq client +101, server +1
DATA: tuple[Seg, ...] = (*HANDSHAKE, C("PA", 1, 1, 100), S("A", 1, 101))


def close_client_first(c: int = 101, s: int = 1) -> tuple[Seg, ...]:
    """FIN from the client, its ACK, FIN from the server, the last ACK (ends in TIME_WAIT)."""
    return (C("FA", c, s), S("A", s, c + 1), S("FA", s, c + 1), C("A", c + 1, s + 1))


CLOSED: tuple[Seg, ...] = (*DATA, *close_client_first())  # next seq: client +102, server +2


# fmt: off
# (the scenarios read like traces: one segment after another, wrapped by hand)
def _scenarios() -> Iterator[Scenario]:
    # --------------------------------------------------------------- handshakes
    yield Scenario("handshake_basic", "handshake, data both ways, acks",
                   (*DATA, S("PA", 1, 101, 200), C("A", 101, 201)))
    yield Scenario("handshake_no_options", "handshake without options (no window scaling), data",
                   (C("S", 0, None, win=65535), S("SA", 0, 1, win=65535), C("A", 1, 1, win=65535),
                    C("PA", 1, 1, 100, win=65535), S("A", 1, 101, win=65535)))
    yield Scenario("handshake_syn_with_data", "SYN carrying 20 bytes (as TCP Fast Open does)",
                   (C("S", 0, None, 20, WIN_SYN_C, SYN_OPTS), S("SA", 0, 21, win=WIN_SYN_S, opts=SYN_OPTS),
                    C("A", 21, 1), C("PA", 21, 1, 50), S("A", 1, 71)))
    yield Scenario("handshake_ecn", "ECN setup: SYN with ECE+CWR, SYN-ACK with ECE",
                   (C("SEC", 0, None, win=WIN_SYN_C, opts=SYN_OPTS),
                    S("SAE", 0, 1, win=WIN_SYN_S, opts=SYN_OPTS),
                    C("A", 1, 1), C("PA", 1, 1, 100), S("A", 1, 101)))
    yield Scenario("syn_blocked_port", "SYN to a port the rules refuse, then the rest of a connection",
                   DATA, server_port_allowed=False)
    yield Scenario("synack_without_syn", "SYN-ACK, ACK and data with no SYN before",
                   (S("SA", 0, 1, win=WIN_SYN_S, opts=SYN_OPTS), C("A", 1, 1), C("PA", 1, 1, 100)))
    yield Scenario("midstream_ack", "ACK and data of a connection never seen (tcp_loose=0: no pickup)",
                   (C("A", 1, 1), C("PA", 1, 1, 100), S("A", 1, 101)))
    yield Scenario("fin_without_connection", "FIN and RST of a connection never seen",
                   (C("FA", 101, 1), S("RA", 1, 102), C("R", 102)))
    yield Scenario("ack_before_synack", "the client ACKs before the SYN-ACK came, then the handshake",
                   (HANDSHAKE[0], C("A", 1, 1), HANDSHAKE[1], HANDSHAKE[2], C("PA", 1, 1, 10)))
    yield Scenario("simultaneous_open", "both ends send a SYN, then both a SYN-ACK",
                   (C("S", 0, None, win=WIN_SYN_C, opts=SYN_OPTS),
                    S("S", 0, None, win=WIN_SYN_S, opts=SYN_OPTS),
                    C("SA", 0, 1, win=WIN_SYN_C, opts=SYN_OPTS), S("SA", 0, 1, win=WIN_SYN_S, opts=SYN_OPTS),
                    C("A", 1, 1), C("PA", 1, 1, 100), S("A", 1, 101)))
    # --------------------------------------------------------------- retransmissions
    yield Scenario("syn_retransmit", "the SYN twice, same sequence number",
                   (HANDSHAKE[0], HANDSHAKE[0], *HANDSHAKE[1:], C("PA", 1, 1, 10)))
    yield Scenario("syn_retransmit_higher_isn", "a second SYN with a higher ISN, answered",
                   (HANDSHAKE[0], C("S", 50_000, None, win=WIN_SYN_C, opts=SYN_OPTS),
                    S("SA", 0, 50_001, win=WIN_SYN_S, opts=SYN_OPTS), C("A", 50_001, 1),
                    C("PA", 50_001, 1, 10)))
    yield Scenario("syn_retransmit_lower_isn", "a second SYN with a lower ISN, answered",
                   (HANDSHAKE[0], C("S", -50_000, None, win=WIN_SYN_C, opts=SYN_OPTS),
                    S("SA", 0, -49_999, win=WIN_SYN_S, opts=SYN_OPTS), C("A", -49_999, 1),
                    C("PA", -49_999, 1, 10)))
    yield Scenario("synack_retransmit", "the SYN-ACK twice",
                   (*HANDSHAKE[:2], HANDSHAKE[1], HANDSHAKE[2], C("PA", 1, 1, 100), S("A", 1, 101)))
    yield Scenario("synack_bad_ack", "a SYN-ACK acknowledging the wrong sequence, then the right one",
                   (HANDSHAKE[0], S("SA", 0, 1001, win=WIN_SYN_S, opts=SYN_OPTS), *HANDSHAKE[1:],
                    C("PA", 1, 1, 10)))
    yield Scenario("synack_new_isn", "a second SYN-ACK with a different ISN; the client ACKs that one",
                   (*HANDSHAKE[:2], S("SA", 70_000, 1, win=WIN_SYN_S, opts=SYN_OPTS),
                    C("A", 1, 70_001), C("PA", 1, 70_001, 10), S("A", 70_001, 11)))
    yield Scenario("synack_after_established", "a retransmitted SYN-ACK after the handshake, then data",
                   (*DATA, HANDSHAKE[1], C("PA", 101, 1, 10)))
    yield Scenario("data_retransmit", "the same data segment twice, a duplicate ACK",
                   (*DATA, C("PA", 1, 1, 100), S("A", 1, 101)))
    yield Scenario("syn_in_established_restart", "the client restarts: a new SYN (new ISN) on an open "
                   "connection, the server answers it with a SYN-ACK, new data",
                   (*DATA, C("S", 0x4000_0000, None, win=WIN_SYN_C, opts=SYN_OPTS),
                    S("SA", 0x4000_0000, 0x4000_0001, win=WIN_SYN_S, opts=SYN_OPTS),
                    C("A", 0x4000_0001, 0x4000_0001), C("PA", 0x4000_0001, 0x4000_0001, 10)))
    # --------------------------------------------------------------- data, windows, acks
    yield Scenario("data_both_ways", "data each way, acknowledged",
                   (*DATA, S("PA", 1, 101, 300), C("A", 101, 301), C("PA", 101, 301, 50),
                    S("A", 301, 151)))
    yield Scenario("data_beyond_window", "client data far beyond the server's window, then in-window data",
                   (*DATA, C("PA", 101 + FAR, 1, 100), C("PA", 101, 1, 100)))
    yield Scenario("data_before_window", "client data far behind (old sequence numbers), then good data",
                   (*DATA, C("PA", 101 - FAR, 1, 100), C("PA", 101, 1, 100)))
    yield Scenario("server_data_beyond_window", "server data far beyond the client's window, then good data",
                   (*DATA, S("PA", 1 + FAR, 101, 100), S("PA", 1, 101, 100)))
    yield Scenario("data_at_window_edge", "client data just inside the server's advertised window",
                   (*DATA, C("PA", 101 + 64_000, 1, 100)))
    yield Scenario("data_one_window_ahead", "client data 66,000 bytes ahead: past the server's advertised "
                   "window (65,152) by less than a window (the kernel lets such overshoot through)",
                   (*DATA, C("PA", 101 + 66_000, 1, 100), C("PA", 101, 1, 10)))
    yield Scenario("data_two_windows_ahead", "client data 140,000 bytes ahead: past the window by more "
                   "than a window", (*DATA, C("PA", 101 + 140_000, 1, 100), C("PA", 101, 1, 10)))
    yield Scenario("ack_unsent_data", "the client acknowledges data the server never sent",
                   (*DATA, C("A", 101, 1 + FAR), C("PA", 101, 1, 10)))
    yield Scenario("ack_far_behind", "the client acknowledges a sequence far behind the server's",
                   (*DATA, C("A", 101, 1 - FAR), C("PA", 101, 1, 10)))
    yield Scenario("server_ack_unsent_data", "the server acknowledges data the client never sent",
                   (*DATA, S("A", 1, 101 + FAR), S("PA", 1, 101, 10)))
    yield Scenario("window_scale_both", "both SYNs scale by 2**7: data 300,000 bytes ahead fits the "
                   "server's window of 4000 << 7 (512,000 bytes; unscaled it would not)",
                   (*HANDSHAKE, S("A", 1, 1, win=4000), C("PA", 1 + 300_000, 1, 100), C("PA", 1, 1, 100)))
    yield Scenario("window_scale_client_only", "only the client offers window scaling, so none is used: "
                   "data 140,000 bytes ahead is beyond the server's 65,535 (scaled, it would fit)",
                   (C("S", 0, None, win=WIN_SYN_C, opts=SYN_OPTS),
                    S("SA", 0, 1, win=65535, opts=SYN_OPTS_NO_WS),
                    C("A", 1, 1, win=65535), S("A", 1, 1, win=65535), C("PA", 1 + 140_000, 1, 100, 65535),
                    C("PA", 1, 1, 100, 65535)))
    yield Scenario("sequence_wrap", "the client's sequence numbers wrap past 2**32 during the data",
                   (*HANDSHAKE, C("PA", 1, 1, 300), S("A", 1, 301), C("PA", 301, 1, 300), S("A", 1, 601)),
                   client_isn=0xFFFF_FF00)
    yield Scenario("bad_checksum", "a data segment with a wrong TCP checksum, then the same one intact",
                   (*DATA, C("PA", 101, 1, 100, bad=True), C("PA", 101, 1, 100)))
    yield Scenario("rst_bad_checksum", "a RST at the right sequence number but with a wrong checksum "
                   "(the receiver discards it), then the connection goes on",
                   (*DATA, C("R", 101, bad=True), LATE, C("PA", 101, 1, 10), S("A", 1, 111)))
    # --------------------------------------------------------------- RST
    yield Scenario("rst_answers_syn", "a closed port: the SYN is answered with RST-ACK; the client "
                   "tries again and that one is answered",
                   (HANDSHAKE[0], S("RA", 0, 1), HANDSHAKE[0], *HANDSHAKE[1:], C("PA", 1, 1, 10)))
    yield Scenario("rst_answers_syn_bad_ack", "a RST-ACK to the SYN acknowledging the wrong sequence, "
                   "then the real SYN-ACK",
                   (HANDSHAKE[0], S("RA", 0, 5001), *HANDSHAKE[1:], C("PA", 1, 1, 10)))
    yield Scenario("rst_answers_syn_without_ack", "a bare RST (no ACK) to the SYN, then the SYN-ACK",
                   (HANDSHAKE[0], S("R", 0), *HANDSHAKE[1:], C("PA", 1, 1, 10)))
    yield Scenario("rst_client_in_syn_sent", "the client aborts its SYN with a RST; a late SYN-ACK",
                   (HANDSHAKE[0], C("R", 1), HANDSHAKE[1], C("A", 1, 1)))
    yield Scenario("challenge_ack_to_syn", "the server answers a SYN with a bare ACK (it holds an old "
                   "connection), the client resets at that ACK and retries",
                   (HANDSHAKE[0], S("A", 777, 5000), C("R", 5000), *HANDSHAKE, C("PA", 1, 1, 10)))
    yield Scenario("fin_in_syn_sent", "a FIN from the client before any answer, then the handshake",
                   (HANDSHAKE[0], C("FA", 1, 1), *HANDSHAKE[1:]))
    yield Scenario("syn_retransmit_after_synack", "the client's SYN again after the SYN-ACK passed",
                   (*HANDSHAKE[:2], HANDSHAKE[0], HANDSHAKE[2], C("PA", 1, 1, 10)))
    yield Scenario("rst_client_in_syn_recv", "the client answers the SYN-ACK with a RST, then ACKs",
                   (*HANDSHAKE[:2], C("R", 1), C("A", 1, 1), LATE, C("PA", 1, 1, 10)))
    yield Scenario("rst_server_in_syn_recv", "the server resets after its SYN-ACK, then the client ACKs",
                   (*HANDSHAKE[:2], S("R", 1), C("A", 1, 1), LATE, C("PA", 1, 1, 10)))
    yield Scenario("rst_client_established", "a RST from the client at its next sequence number",
                   (*DATA, C("R", 101), S("PA", 1, 101, 10), LATE, C("PA", 101, 1, 10)))
    yield Scenario("rst_server_established", "a RST-ACK from the server at its next sequence number",
                   (*DATA, S("RA", 1, 101), C("PA", 101, 1, 10), LATE, C("PA", 101, 1, 10)))
    yield Scenario("rst_client_in_window_inexact", "a client RST inside the window but not at the next "
                   "sequence number: the server answers with a challenge ACK (RFC 5961), the connection "
                   "goes on",
                   (*DATA, C("R", 101 + 1000), S("A", 1, 101), C("PA", 101, 1, 10), S("A", 1, 111), LATE,
                    C("PA", 111, 1, 10), S("A", 1, 121)))
    yield Scenario("rst_server_in_window_inexact", "a server RST inside the window, not exact: challenge "
                   "ACK from the client, the connection goes on",
                   (*DATA, S("R", 1 + 1000), C("A", 101, 1), C("PA", 101, 1, 10), S("A", 1, 111), LATE,
                    C("PA", 111, 1, 10), S("A", 1, 121)))
    yield Scenario("rst_client_acked_seq", "a client RST 50 bytes behind its next sequence number (data "
                   "the server already acknowledged)",
                   (*DATA, C("R", 101 - 50), LATE, C("PA", 101, 1, 10), S("A", 1, 111)))
    yield Scenario("rst_client_out_of_window", "a client RST far beyond the window (a blind reset)",
                   (*DATA, C("R", 101 + FAR), C("PA", 101, 1, 10), LATE, C("PA", 111, 1, 10),
                    S("A", 1, 121)))
    yield Scenario("rst_server_out_of_window", "a server RST far beyond the window (a blind reset)",
                   (*DATA, S("R", 1 + FAR), S("PA", 1, 101, 10), LATE, C("PA", 101, 11, 10),
                    S("A", 11, 111)))
    yield Scenario("rst_client_behind_window", "a client RST with an old sequence number",
                   (*DATA, C("R", 101 - FAR), LATE, C("PA", 101, 1, 10), S("A", 1, 111)))
    yield Scenario("rst_server_in_fin_wait", "the client sent FIN; the server resets",
                   (*DATA, C("FA", 101, 1), S("R", 1)))
    yield Scenario("rst_client_in_fin_wait", "the client sent FIN, then resets",
                   (*DATA, C("FA", 101, 1), C("R", 102)))
    yield Scenario("rst_server_in_fin_wait_out_of_window", "the client sent FIN; a server RST far "
                   "beyond the window, then the server's real ACK and FIN",
                   (*DATA, C("FA", 101, 1), S("R", 1 + FAR), S("A", 1, 102), S("FA", 1, 102),
                    C("A", 102, 2)))
    yield Scenario("rst_client_in_close_wait", "FIN acknowledged (close wait); the client resets",
                   (*DATA, C("FA", 101, 1), S("A", 1, 102), C("R", 102)))
    yield Scenario("rst_server_in_close_wait", "FIN acknowledged (close wait); the server resets",
                   (*DATA, C("FA", 101, 1), S("A", 1, 102), S("R", 1)))
    yield Scenario("rst_client_in_last_ack", "both FINs sent (last ack); the client resets",
                   (*DATA, C("FA", 101, 1), S("A", 1, 102), S("FA", 1, 102), C("R", 102)))
    yield Scenario("rst_server_in_last_ack", "both FINs sent (last ack); the server resets",
                   (*DATA, C("FA", 101, 1), S("A", 1, 102), S("FA", 1, 102), S("R", 2)))
    yield Scenario("syn_in_last_ack_challenge_ack", "in last ack the client opens again; the server's "
                   "challenge ACK (RFC 5961) for the old connection, the client's RST, the SYN again",
                   (*DATA, C("FA", 101, 1), S("A", 1, 102), S("FA", 1, 102),
                    C("S", 0x1000_0000, None, win=WIN_SYN_C, opts=SYN_OPTS), S("A", 2, 102), C("R", 102),
                    C("S", 0x1000_0000, None, win=WIN_SYN_C, opts=SYN_OPTS),
                    S("SA", 0x1000_0000, 0x1000_0001, win=WIN_SYN_S, opts=SYN_OPTS),
                    C("A", 0x1000_0001, 0x1000_0001)))
    yield Scenario("rst_client_in_time_wait", "closed (time wait); the client resets",
                   (*CLOSED, C("R", 102)))
    yield Scenario("rst_server_in_time_wait", "closed (time wait); the server resets",
                   (*CLOSED, S("R", 2)))
    # --------------------------------------------------------------- FIN and half-close
    yield Scenario("fin_client_first", "the client closes first, the server follows",
                   CLOSED)
    yield Scenario("fin_server_first", "the server closes first, the client follows",
                   (*DATA, S("FA", 1, 101), C("A", 101, 2), C("FA", 101, 2), S("A", 2, 102)))
    yield Scenario("fin_simultaneous", "both FINs cross, then both ACKs",
                   (*DATA, C("FA", 101, 1), S("FA", 1, 101), C("A", 102, 2), S("A", 2, 102)))
    yield Scenario("fin_ack_combined", "the server's FIN acknowledges the client's FIN",
                   (*DATA, C("FA", 101, 1), S("FA", 1, 102), C("A", 102, 2)))
    yield Scenario("fin_with_data", "the client's last data segment carries the FIN",
                   (*DATA, C("FPA", 101, 1, 50), S("FA", 1, 152), C("A", 152, 2)))
    yield Scenario("fin_retransmit", "the client's FIN twice",
                   (*DATA, C("FA", 101, 1), C("FA", 101, 1), *close_client_first()[1:]))
    yield Scenario("half_close", "the client closes its side, the server keeps sending, then closes",
                   (*DATA, C("FA", 101, 1), S("A", 1, 102), S("PA", 1, 102, 500), C("A", 102, 501),
                    S("FA", 501, 102), C("A", 102, 502)))
    yield Scenario("fin_out_of_window", "a client FIN far beyond the window, then normal data",
                   (*DATA, C("FA", 101 + FAR, 1), C("PA", 101, 1, 10), S("A", 1, 111)))
    yield Scenario("data_after_own_fin", "the client sends data after its own FIN",
                   (*DATA, C("FA", 101, 1), C("PA", 102, 1, 10), S("A", 1, 102)))
    yield Scenario("segments_after_close", "closed (time wait); data and ACKs from both sides",
                   (*CLOSED, C("PA", 102, 2, 10), S("PA", 2, 102, 10), C("A", 102, 2)))
    yield Scenario("segments_after_rst", "reset; data and ACKs from both sides right after",
                   (*DATA, C("R", 101), C("PA", 101, 1, 10), S("PA", 1, 101, 10), S("A", 1, 101)))
    yield Scenario("syn_in_fin_wait", "a new SYN while the old connection is half closed",
                   (*DATA, C("FA", 101, 1), C("S", 0x2000_0000, None, win=WIN_SYN_C, opts=SYN_OPTS)))
    # --------------------------------------------------------------- reopening
    reopen = (C("S", 0x1000_0000, None, win=WIN_SYN_C, opts=SYN_OPTS),
              S("SA", 0x1000_0000, 0x1000_0001, win=WIN_SYN_S, opts=SYN_OPTS),
              C("A", 0x1000_0001, 0x1000_0001), C("PA", 0x1000_0001, 0x1000_0001, 10))
    yield Scenario("reopen_in_time_wait", "closed (time wait); the client opens again (new ISN)",
                   (*CLOSED, *reopen))
    yield Scenario("reopen_after_rst", "reset (close); the client opens again (new ISN)",
                   (*DATA, C("R", 101), *reopen))
    yield Scenario("reopen_after_rst_blocked_port", "to a port the rules refuse: nothing opens, before "
                   "or after a RST", (*HANDSHAKE, C("R", 1), *reopen), server_port_allowed=False)
    server_reopen = (S("S", 0x1000_0000, None, win=WIN_SYN_S, opts=SYN_OPTS),
                     C("SA", 0x1000_0000, 0x1000_0001, win=WIN_SYN_C, opts=SYN_OPTS),
                     S("A", 0x1000_0001, 0x1000_0001))
    yield Scenario("reopen_by_server_in_time_wait", "closed (time wait); the server opens a connection "
                   "to the client's port, which the rules allow (roles swapped)",
                   (*CLOSED, *server_reopen), client_port_allowed=True)
    yield Scenario("reopen_by_server_blocked_port", "closed (time wait); the server opens a connection to "
                   "the client's port, which the rules refuse", (*CLOSED, *server_reopen))
    # --------------------------------------------------------------- bad flag combinations
    yield Scenario("flags_null", "no flags at all on an open connection, then good data",
                   (*DATA, C("", 101, 1), C("PA", 101, 1, 10)))
    yield Scenario("flags_xmas", "every flag set (XMAS), then good data",
                   (*DATA, C("FSRPAU", 101, 1), C("PA", 101, 1, 10)))
    yield Scenario("flags_syn_fin_first", "SYN+FIN as the first segment, then a real handshake",
                   (C("SF", 0, None, win=WIN_SYN_C, opts=SYN_OPTS), *HANDSHAKE))
    yield Scenario("flags_syn_rst_first", "SYN+RST as the first segment, then a real handshake",
                   (C("SR", 0, None, win=WIN_SYN_C), *HANDSHAKE))
    yield Scenario("flags_fin_without_ack", "FIN without ACK on an open connection, then good data",
                   (*DATA, C("F", 101), C("PA", 101, 1, 10)))
    yield Scenario("flags_syn_fin_established", "SYN+FIN+ACK on an open connection",
                   (*DATA, C("SFA", 101, 1), C("PA", 101, 1, 10)))
    yield Scenario("flags_urg_only", "URG alone, then PSH alone, on an open connection",
                   (*DATA, C("U", 101), C("P", 101), C("PA", 101, 1, 10)))
    yield Scenario("flags_synack_rst", "SYN+ACK+RST from the server to a SYN",
                   (HANDSHAKE[0], S("SRA", 0, 1), *HANDSHAKE[1:]))


def _v6(names: tuple[str, ...], base: list[Scenario]) -> Iterator[Scenario]:
    by_name = {s.name: s for s in base}
    for name in names:
        s = by_name[name]
        yield Scenario(f"{name}_v6", f"{s.about} (IPv6)", s.steps, 6, s.server_port_allowed,
                       s.client_port_allowed, s.client_isn, s.server_isn)

# fmt: on


_V6_COPIES = (
    "handshake_basic",
    "syn_blocked_port",
    "data_beyond_window",
    "rst_client_out_of_window",
    "rst_server_established",
    "fin_client_first",
    "reopen_in_time_wait",
    "flags_xmas",
)

_BASE = list(_scenarios())
SCENARIOS: tuple[Scenario, ...] = (*_BASE, *_v6(_V6_COPIES, _BASE))
