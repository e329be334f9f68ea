"""Sequence-window tracking (core/window.py) against the kernel's tcp_in_window, case by case.

A :class:`Conv` plays a client and a server that keep their own sequence numbers, sends each
segment through the TCP state table and :func:`window.step`, and checks on every segment that
the header prediction and the full check agree.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from fwcluster.core import window as W
from fwcluster.core.states import FlowState
from fwcluster.core.tcp import CL, CW, ES, FW, IG, IV, LA, NO, S2, SR, SS, TW, next_state

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ACCEPT, IGNORE, INVALID = W.ACCEPT, W.IGNORE, W.INVALID
M32 = 0xFFFFFFFF


@dataclass
class Peer:
    """One endpoint: what it sends next, what it has received, its window and scale."""

    isn: int
    win: int = 0  # the raw window field it sends after the handshake (0: 502 scaled, else 64240)
    wscale: int = 7  # its SYN's option, -1 for none
    nxt: int = 0
    rcv: int = 0

    def __post_init__(self) -> None:
        self.nxt = self.isn & M32
        self.win = self.win or (502 if self.wscale > 0 else 64240)


@dataclass
class Conv:
    """A connection through one tracker: ``send`` judges a segment as the firewall would."""

    c: Peer = field(default_factory=lambda: Peer(1000))
    s: Peer = field(default_factory=lambda: Peer(5000))
    one_way: bool = False
    w: int = W.UNKNOWN
    state: int = NO
    verdicts: list[int] = field(default_factory=list)

    def send(
        self,
        from_orig: bool,
        flags: int,
        *,
        seq: int | None = None,
        ack: int | None = None,
        plen: int = 0,
        win: int | None = None,
        wscale: int = -1,
        deliver: bool = True,
    ) -> int:
        src, dst = (self.c, self.s) if from_orig else (self.s, self.c)
        seq = src.nxt if seq is None else seq & M32
        ack = src.rcv if ack is None else ack & M32
        win = src.win if win is None else win
        after = next_state(0 if from_orig else 1, flags, FlowState(self.state))
        if after > IV:  # a flag combination no TCP sends: the core drops it before the window
            verdict = INVALID
        else:
            args = (from_orig, seq, ack, win, plen, flags, wscale, self.state, after, self.one_way)
            verdict, w = W.step(self.w, *args)
            assert (verdict, w) == W.step(self.w, *args, predict=False), (
                "the prediction and the full check differ"
            )
            assert 0 <= w < 1 << 304
            self.w = w
            if verdict == ACCEPT and after < IG:
                self.state = after
        self.verdicts.append(verdict)
        if deliver and verdict:
            length = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
            if seq == src.nxt:
                src.nxt = (seq + length) & M32
            if seq == dst.rcv or flags & SYN:
                dst.rcv = (seq + length) & M32
        return verdict

    def handshake(self) -> None:
        assert self.send(True, SYN, win=64240, wscale=self.c.wscale) == ACCEPT
        assert self.send(False, SYN | ACK, win=65160, wscale=self.s.wscale) == ACCEPT
        assert self.send(True, ACK) == ACCEPT
        assert self.state == ES

    def sides(self) -> tuple[W.Side, W.Side]:
        return W.unpack(self.w)


def established(**kw: object) -> Conv:
    conv = Conv(**kw)  # type: ignore[arg-type]
    conv.handshake()
    return conv


# --------------------------------------------------------------------------- segment()
def tcp4(flags: str, payload: bytes = b"", **kw: object) -> bytes:
    return bytes(
        IP(src="198.18.0.2", dst="198.19.0.2") / TCP(sport=40000, dport=80, flags=flags, **kw) / payload
    )


def test_segment_reads_the_fields_and_the_scale_of_a_syn() -> None:
    opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
    buf = tcp4("S", seq=123456789, window=64240, options=opts)
    assert W.segment(buf, 20, len(buf)) == (123456789, 0, 64240, 0, SYN, 7)
    buf = tcp4("PA", b"hello", seq=0xFFFFFFF0, ack=77, window=502, options=[("Timestamp", (1, 2))])
    assert W.segment(buf, 20, len(buf)) == (0xFFFFFFF0, 77, 502, 5, PSH | ACK, -1)


def test_segment_over_ipv6_and_with_padding_after_the_ip_packet() -> None:
    buf = bytes(IPv6(src="2001:2::1", dst="2001:2:0:300::2") / TCP(flags="A", seq=9, ack=8) / Raw(b"abc"))
    assert W.segment(buf, 40, len(buf)) == (9, 8, 8192, 3, ACK, -1)
    padded = buf + bytes(6)  # an Ethernet minimum or a capture tail: the IP length counts, not the buffer
    assert W.segment(padded, 40, len(buf))[3] == 3


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ([("WScale", 14)], 14),
        ([("WScale", 15)], 14),  # RFC 7323: taken as 14
        ([("NOP", None), ("NOP", None), ("NOP", None), ("WScale", 0)], 0),
        ([("MSS", 1460)], -1),
        ([("EOL", None), ("WScale", 3)], -1),  # nothing after EOL counts
    ],
)
def test_window_scale_option(opts: list[tuple[str, object]], expected: int) -> None:
    buf = tcp4("SA", options=opts)
    assert W.segment(buf, 20, len(buf))[5] == expected


def test_the_scale_option_counts_only_on_syn() -> None:
    buf = tcp4("A", options=[("WScale", 7), ("NOP", None)])
    assert W.segment(buf, 20, len(buf))[5] == -1


def _with_options(raw: bytes, syn: bool = True) -> bytes:
    doff = (20 + len(raw) + 3) // 4
    hdr = bytearray(tcp4("S" if syn else "A"))[20:40]
    hdr[12] = doff << 4
    opts = raw + bytes(doff * 4 - 20 - len(raw))
    return bytes(IP(src="198.18.0.2", dst="198.19.0.2", proto=6)) + bytes(hdr) + opts


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\x03\x03\x05", 5),
        (b"\x03\x03\x05\x02\x00", 5),  # an option of length 0 ends the walk, keeping what it found
        (b"\x02\x01\x03\x03\x05", -1),  # length 1: a "silly option", the walk stops
        (b"\x08\x28\x03\x03\x05", -1),  # runs past the header
        (b"\x01" * 39 + b"\x03", -1),  # a kind without its length byte
        (b"\x03\x04\x05\x00", -1),  # a window-scale option of the wrong length is no such option
    ],
)
def test_malformed_options_never_raise(raw: bytes, expected: int) -> None:
    buf = _with_options(raw)
    assert W.segment(buf, 20, len(buf))[5] == expected


def test_truncated_or_malformed_headers_give_the_bad_segment() -> None:
    buf = tcp4("A")
    assert W.segment(buf[:39], 20, 39) == W.BAD_SEGMENT
    assert W.segment(buf, 20, len(buf) + 1) == W.BAD_SEGMENT  # IP length beyond the buffer
    short = bytearray(buf)
    short[32] = 4 << 4  # data offset below 5 words
    assert W.segment(bytes(short), 20, len(buf)) == W.BAD_SEGMENT
    long = bytearray(buf)
    long[32] = 6 << 4  # header longer than the packet
    assert W.segment(bytes(long), 20, len(buf)) == W.BAD_SEGMENT
    assert W.step(0, True, *W.BAD_SEGMENT, ES, ES)[0] == INVALID


# --------------------------------------------------------------------------- packing
def test_pack_roundtrip_and_size() -> None:
    o = W.Side(1, 2, 3, 4, 14, True, True, True, 65535, True)
    r = W.Side(M32, M32, M32, M32, 15, False, True, False, 7, False)
    w = W.pack(o, r)
    assert W.unpack(w) == (o, r)
    assert w < 1 << 304 and W.STATE_BYTES == 38
    full = W.pack(W.Side(M32, M32, M32, M32, 15, True, True, True, 65535, True), W.Side(*o))
    assert sys.getsizeof(full) <= 68
    assert W.unpack(W.UNKNOWN) == (W.Side(), W.Side())


def test_portable_carries_the_scales_only() -> None:
    conv = established()
    bits = conv_bits = W.portable(conv.w)
    assert bits < 1 << 16
    o, r = W.unpack(W.restore(conv_bits))
    assert (o.scale, o.wscale, o.scale_known, r.scale, r.wscale, r.scale_known) == (
        7,
        True,
        True,
        7,
        True,
        True,
    )
    assert o.maxwin == r.maxwin == 0 and not o.maxack_set and not o.pred  # windows relearned


# --------------------------------------------------------------------------- handshakes
def test_handshake_learns_both_sides() -> None:
    conv = established()
    o, r = conv.sides()
    assert (o.end, o.maxwin, o.scale, o.wscale) == (1001, 64256, 7, True)  # 64240, then 502 << 7
    assert (r.end, r.maxend, r.scale) == (5001, 5001 + (502 << 7), 7)  # the client's edge for the server
    assert o.maxend == 1001 + 65160  # the SYN-ACK's window is not scaled
    assert o.maxack == 5001 and r.maxack == 1001


def test_syn_ack_must_acknowledge_the_syn() -> None:
    conv = Conv()
    conv.send(True, SYN, wscale=7)
    assert conv.send(False, SYN | ACK, ack=1002, wscale=7, deliver=False) == INVALID  # ACK of unsent data
    assert conv.send(False, SYN | ACK, ack=1001 - 70000, wscale=7, deliver=False) == IGNORE  # long ago
    assert conv.state == SS
    assert conv.send(False, SYN | ACK, wscale=7) == ACCEPT
    assert conv.state == SR


def test_syn_retransmitted_and_restarted() -> None:
    conv = Conv()
    conv.send(True, SYN, wscale=7)
    assert conv.send(True, SYN, seq=1000, wscale=7) == ACCEPT  # the same SYN again
    assert conv.send(True, SYN, seq=900, wscale=7) == ACCEPT  # older: the kernel lets it through
    assert conv.sides()[0].end == 1001
    assert conv.send(True, SYN, seq=3000, wscale=2) == ACCEPT  # a new ISN: the side starts over
    o = conv.sides()[0]
    assert (o.end, o.maxend, o.scale) == (3001, 3001, 2)


def test_simultaneous_open() -> None:
    conv = Conv()
    conv.send(True, SYN, wscale=7)
    assert conv.send(False, SYN, wscale=7) == ACCEPT
    assert conv.state == S2
    assert conv.send(True, SYN | ACK, wscale=7) == ACCEPT
    assert conv.state == SR
    assert conv.send(False, SYN | ACK, wscale=7) == IGNORE  # the state table ignores it (sIG)


@pytest.mark.parametrize(
    ("c_ws", "s_ws", "scales"), [(7, 7, (7, 7)), (7, -1, (0, 0)), (-1, 7, (0, 0)), (2, 9, (2, 9))]
)
def test_window_scaling_needs_both_syns(c_ws: int, s_ws: int, scales: tuple[int, int]) -> None:
    conv = established(c=Peer(1000, wscale=c_ws), s=Peer(5000, wscale=s_ws))
    o, r = conv.sides()
    assert (o.scale, r.scale) == scales
    assert r.maxend == 5001 + (conv.c.win << scales[0])  # the client's window, scaled by its shift


# --------------------------------------------------------------------------- data and ACKs
def test_data_in_and_out_of_the_window() -> None:
    conv = established(c=Peer(1000, wscale=-1), s=Peer(5000, wscale=-1))  # no scaling: windows in bytes
    edge = conv.sides()[0].maxend  # what the server allows: its ack + 65160
    assert edge == 1001 + 65160
    assert conv.send(True, ACK | PSH, plen=1000) == ACCEPT
    assert conv.send(True, ACK | PSH, seq=edge + 70000, plen=10, deliver=False) == INVALID  # beyond
    assert conv.send(True, ACK | PSH, seq=edge, plen=0, deliver=False) == ACCEPT  # at the edge
    # seq inside, end past the edge: the kernel passes it and widens the receiver's window.
    before_maxwin = conv.sides()[1].maxwin
    assert conv.send(True, ACK | PSH, seq=edge - 10, plen=100, deliver=False) == ACCEPT
    assert conv.sides()[1].maxwin == before_maxwin + 90


def test_a_little_more_than_the_window_is_ignored_and_moves_end() -> None:
    conv = established(c=Peer(1000, wscale=-1), s=Peer(5000, wscale=-1))
    edge = conv.sides()[0].maxend
    assert conv.send(True, ACK | PSH, seq=edge + 5, plen=100, deliver=False) == IGNORE
    assert conv.sides()[0].end == edge + 105  # so that the server's ACK of it is not refused
    assert conv.send(False, ACK, ack=edge + 105) == ACCEPT


def test_ack_checks() -> None:
    conv = established()
    conv.send(False, ACK | PSH, plen=500)
    assert conv.send(True, ACK, ack=5001 + 501, deliver=False) == INVALID  # ACK of data never sent
    assert conv.send(True, ACK, ack=5001 + 500) == ACCEPT
    assert conv.send(True, ACK, ack=5001 + 500 - 66001, deliver=False) == IGNORE  # below MAXACKWINDOW
    assert conv.send(True, ACK, ack=5001 + 400, deliver=False) == ACCEPT  # an older ACK, reordered
    assert conv.sides()[0].maxack == 5501  # the highest stays


def test_retransmissions() -> None:
    conv = established()
    for _ in range(3):
        conv.send(True, ACK | PSH, plen=1000)
    end = conv.sides()[0].end
    assert conv.send(True, ACK | PSH, seq=end - 1000, plen=1000, deliver=False) == ACCEPT  # a resend
    assert conv.sides()[0].end == end
    # Data entirely below sender.end - receiver.maxwin: already acknowledged long ago.
    r_maxwin = conv.sides()[1].maxwin
    assert conv.send(True, ACK | PSH, seq=end - r_maxwin - 2000, plen=100, deliver=False) == IGNORE


def test_a_retransmitted_fin_below_the_window_changes_nothing() -> None:
    conv = established(c=Peer(1000, wscale=-1), s=Peer(5000, wscale=-1))
    for _ in range(70):
        conv.send(True, ACK | PSH, plen=1400)
        conv.send(False, ACK)
    assert conv.send(True, FIN | ACK, seq=1001, deliver=False) == IGNORE
    assert conv.state == ES  # an IGNORE must not move the state


def test_zero_window_probe() -> None:
    conv = established(c=Peer(1000, wscale=-1), s=Peer(5000, wscale=-1))
    edge = conv.sides()[0].maxend
    assert conv.send(True, ACK | PSH, plen=edge - conv.c.nxt) == ACCEPT  # fills the window exactly
    assert conv.send(False, ACK, win=0) == ACCEPT
    assert conv.sides()[0].maxend == edge + 1  # a zero window still admits one byte (a probe)
    assert conv.send(True, ACK | PSH, plen=1) == ACCEPT
    assert conv.send(False, ACK, win=0, ack=edge) == ACCEPT  # the probe is not taken
    assert conv.sides()[0].maxend == edge + 1  # and the edge never shrinks


def test_bulk_transfer_with_scaling_stays_in_window() -> None:
    conv = established()
    for i in range(300):
        assert conv.send(False, ACK | PSH, plen=1448) == ACCEPT, i
        if i % 2:
            assert conv.send(True, ACK) == ACCEPT, i


# --------------------------------------------------------------------------- RST
def test_rst_with_the_exact_sequence_number_closes() -> None:
    conv = established()
    assert conv.send(False, RST, seq=5001) == ACCEPT  # == the client's highest ACK
    assert conv.state == CL


def test_rst_below_the_acknowledged_data_is_invalid() -> None:
    conv = established()
    assert conv.send(False, RST, seq=4000) == INVALID
    assert conv.send(False, RST | ACK, seq=5000, ack=1001) == INVALID
    assert conv.state == ES


def test_rst_in_window_but_not_exact_keeps_the_connection() -> None:
    conv = established()
    assert conv.send(False, RST, seq=5001 + 1000) == IGNORE  # passes: the client sends a challenge ACK
    assert conv.state == ES
    o, r = conv.sides()
    assert conv.send(False, RST, seq=(r.end + o.maxwin * 4) & M32) == INVALID  # out of the window
    assert conv.state == ES


def test_rst_continuing_the_senders_last_segment_closes() -> None:
    conv = established()
    conv.send(False, ACK | PSH, plen=19)  # not acknowledged yet: the client's ACK is still 5001
    assert conv.send(False, RST, seq=5001 + 19) == ACCEPT
    assert conv.state == CL


def test_rst_answering_a_syn() -> None:
    conv = Conv()
    conv.send(True, SYN, wscale=7)
    assert conv.send(False, RST | ACK, seq=0, ack=1001) == ACCEPT
    assert conv.state == CL
    conv = Conv()
    conv.send(True, SYN, wscale=7)
    assert conv.send(False, RST | ACK, seq=0, ack=1005, deliver=False) == INVALID  # does not ack the SYN
    assert conv.send(False, RST | ACK, seq=0, ack=0) == ACCEPT  # a broken stack's ACK 0


def test_rst_from_the_client_in_syn_sent() -> None:
    conv = Conv()
    conv.send(True, SYN, wscale=7)
    assert conv.send(True, RST, seq=1001) == ACCEPT


@pytest.mark.parametrize("closing", [FW, CW, LA, TW])
def test_rst_in_a_closing_state_is_not_checked(closing: int) -> None:
    conv = established()
    conv.state = closing  # the kernel skips validation there: the tuple may already be reused
    assert conv.send(True, RST, seq=12345) == ACCEPT
    assert conv.state == CL


def test_rst_in_syn_recv_with_a_seq_at_or_above_the_ack_closes() -> None:
    conv = Conv()
    conv.send(True, SYN, wscale=7)
    conv.send(False, SYN | ACK, wscale=7)
    assert conv.send(True, RST, seq=1001 + 100, deliver=False) == ACCEPT  # not ESTABLISHED: no exactness
    assert conv.state == CL


# --------------------------------------------------------------------------- states
def test_ignored_and_invalid_by_the_state_table() -> None:
    conv = established()
    before = conv.w
    assert W.step(conv.w, True, 5, 0, 100, 0, SYN, 7, ES, IG) == (IGNORE, before)
    assert W.step(conv.w, True, 5, 0, 100, 0, ACK, -1, SS, IV) == (INVALID, before)


def test_reopen_from_time_wait_starts_over() -> None:
    conv = established()
    conv.send(True, FIN | ACK)
    conv.send(False, FIN | ACK)
    conv.send(True, ACK)
    assert conv.state == TW
    conv.c = Peer(900000)
    assert conv.send(True, SYN, wscale=3) == ACCEPT
    o, r = conv.sides()
    assert conv.state == SS and (o.end, o.scale) == (900001, 3) and r == W.Side(scale_known=False)


def test_teardown_both_ways_and_half_close() -> None:
    conv = established()
    assert conv.send(True, FIN | ACK) == ACCEPT
    assert conv.state == FW
    assert conv.send(False, ACK | PSH, plen=300) == ACCEPT  # the server still sends (half-close)
    assert conv.send(True, ACK) == ACCEPT
    assert conv.send(False, FIN | ACK) == ACCEPT
    assert conv.send(True, ACK) == ACCEPT
    assert conv.state == TW
    assert conv.send(True, ACK, ack=conv.c.rcv + 5, deliver=False) == INVALID  # ACK beyond the FIN


# --------------------------------------------------------------------------- wrap-around
def test_sequence_numbers_wrap() -> None:
    conv = established(c=Peer(M32 - 3000), s=Peer(M32 - 100))
    for _ in range(10):
        assert conv.send(True, ACK | PSH, plen=1000) == ACCEPT
        assert conv.send(False, ACK | PSH, plen=50) == ACCEPT
    o, r = conv.sides()
    assert o.end == (M32 - 3000 + 1 + 10000) & M32 < 10000  # wrapped
    assert conv.send(True, ACK, ack=(r.end + 1) & M32, deliver=False) == INVALID
    assert conv.send(False, RST, seq=o.maxack) == ACCEPT


# --------------------------------------------------------------------------- takeover: state 0
def picked_up(one_way: bool = False) -> Conv:
    """An established connection whose window another instance knew: this one starts at 0."""
    conv = established()
    conv.send(True, ACK | PSH, plen=100)
    conv.send(False, ACK | PSH, plen=200)
    conv.w, conv.one_way = W.UNKNOWN, one_way
    return conv


def test_pickup_judges_the_first_segments_liberally_then_all_four_bounds() -> None:
    conv = picked_up()
    assert conv.send(True, ACK | PSH, plen=100) == ACCEPT  # the client's side learned from this
    assert conv.send(True, ACK | PSH, plen=100) == ACCEPT  # the server's side still unknown: one-sided
    assert conv.send(False, ACK) == ACCEPT  # now both are known
    assert conv.send(False, ACK, ack=conv.s.rcv + 1, deliver=False) == INVALID  # III applies again
    assert conv.send(True, ACK, ack=conv.c.rcv + 1, deliver=False) == INVALID
    assert conv.send(True, ACK | PSH, plen=100) == ACCEPT


def test_pickup_a_rst_from_an_unknown_side_never_closes() -> None:
    conv = picked_up()
    assert conv.send(False, RST, seq=123456) == IGNORE  # passes to the endpoint, judged there
    assert conv.state == ES and conv.w == W.UNKNOWN  # and teaches nothing
    conv.send(True, ACK)  # the client's ACK is known now: the server's RST must match it
    assert conv.send(False, RST, seq=conv.s.nxt - 10) == INVALID
    assert conv.send(False, RST, seq=conv.s.nxt + 10) == IGNORE
    assert conv.send(True, RST, seq=conv.c.nxt + 5) == IGNORE  # known sender, unknown peer: inexact
    assert conv.send(True, RST, seq=conv.c.nxt) == ACCEPT  # exact
    assert conv.state == CL


def test_pickup_then_exact_rst_rule_once_the_peer_acked() -> None:
    conv = picked_up()
    conv.send(True, ACK)
    conv.send(False, ACK)
    assert conv.send(False, RST, seq=conv.s.nxt - 10) == INVALID  # below the client's ACK
    assert conv.send(False, RST, seq=conv.s.nxt) == ACCEPT


def test_pickup_with_unknown_scale_assumes_the_widest() -> None:
    conv = picked_up()
    conv.send(True, ACK)
    o = conv.sides()[0]
    assert o.scale == 14 and not o.scale_known and o.maxwin == conv.c.win << 14


def test_pickup_with_the_portable_scales_is_precise() -> None:
    conv = established()
    bits = W.portable(conv.w)
    conv.send(True, ACK | PSH, plen=100)
    conv.w = W.restore(bits)
    conv.send(True, ACK)
    conv.send(False, ACK)
    o, r = conv.sides()
    assert (o.scale, r.scale) == (7, 7) and r.maxend == conv.c.rcv + (conv.c.win << 7)


def test_pickup_in_the_middle_of_the_handshake() -> None:
    conv = Conv()
    conv.send(True, SYN, wscale=7)
    conv.w = W.UNKNOWN  # the SYN was seen by another instance
    assert conv.send(False, SYN | ACK, wscale=7) == ACCEPT
    assert conv.send(True, ACK) == ACCEPT
    assert conv.send(True, ACK | PSH, plen=10) == ACCEPT
    assert conv.send(False, ACK) == ACCEPT


# --------------------------------------------------------------------------- one direction only
def test_one_way_client_side_only() -> None:
    conv = Conv(one_way=True)
    conv.send(True, SYN, wscale=7)
    conv.s.rcv, conv.c.rcv = 1001, 5001  # the SYN-ACK went through another instance
    conv.state = SR
    assert conv.send(True, ACK) == ACCEPT
    for _ in range(20):
        assert conv.send(True, ACK | PSH, plen=1000) == ACCEPT
    end = conv.sides()[0].end
    bound = 0xFFFF << 14  # the server's scale is unknown here: the widest window
    assert conv.send(True, ACK | PSH, seq=end + bound + 1, plen=10, deliver=False) == INVALID
    assert conv.send(True, ACK | PSH, seq=end - bound - 2000, plen=10, deliver=False) == IGNORE
    assert conv.send(True, ACK | PSH, seq=end + bound, plen=0, deliver=False) == ACCEPT
    r_maxend = conv.sides()[1].maxend  # the edge the client offered the server
    assert r_maxend == 5001 + (conv.c.win << 7)
    assert conv.send(True, ACK, ack=r_maxend + 0xFFFF + 1, deliver=False) == INVALID
    assert conv.send(True, ACK, ack=r_maxend + 0xFFFF, deliver=False) == ACCEPT


def test_one_way_without_scaling_uses_the_plain_window() -> None:
    conv = Conv(c=Peer(1000, wscale=-1), one_way=True)
    conv.send(True, SYN)
    conv.c.rcv, conv.state = 5001, SR
    conv.send(True, ACK)
    end = conv.sides()[0].end
    assert conv.send(True, ACK | PSH, seq=end + 0xFFFF + 1, deliver=False) == INVALID
    assert conv.send(True, ACK | PSH, seq=end + 0xFFFF, deliver=False) == ACCEPT


def test_one_way_rst() -> None:
    conv = Conv(one_way=True)
    conv.send(True, SYN, wscale=7)
    conv.c.rcv, conv.state = 5001, SR
    conv.send(True, ACK)
    conv.send(True, ACK | PSH, plen=100)
    assert conv.send(True, RST, seq=conv.c.nxt + 1) == IGNORE
    assert conv.send(True, RST, seq=conv.c.nxt + (0xFFFF << 14) + 5) == INVALID
    assert conv.send(True, RST, seq=conv.c.nxt) == ACCEPT
    assert conv.state == CL


def test_one_way_server_side_only() -> None:
    conv = Conv(one_way=True)
    conv.c.nxt, conv.s.rcv, conv.state = 1001, 1001, SS  # the SYN went through another instance
    assert conv.send(False, SYN | ACK, wscale=7) == ACCEPT
    conv.state = ES
    for _ in range(20):
        assert conv.send(False, ACK | PSH, plen=1448) == ACCEPT
    r = conv.sides()[1]
    assert r.scale == 7 and r.maxack == 1001
    assert conv.send(False, ACK, ack=1001 + 65160 + 0xFFFF + 1, deliver=False) == INVALID
    assert conv.send(False, RST, seq=conv.s.nxt) == ACCEPT


def test_one_way_even_with_both_directions_seen() -> None:
    conv = established(one_way=True)
    for _ in range(10):
        assert conv.send(True, ACK | PSH, plen=1000) == ACCEPT
        assert conv.send(False, ACK) == ACCEPT
    assert conv.send(False, RST, seq=conv.s.nxt) == ACCEPT


# --------------------------------------------------------------------------- the prediction
def test_the_prediction_is_set_after_an_ordinary_ack_and_cleared_by_a_syn() -> None:
    conv = established()
    assert conv.sides()[0].pred and not conv.sides()[1].pred  # the server has sent only its SYN-ACK
    conv.send(False, ACK)
    assert conv.sides()[1].pred
    conv.send(True, SYN, seq=77, wscale=7, deliver=False)  # ignored by the table: no window change
    assert conv.sides()[0].pred
    conv.send(True, ACK, ack=conv.c.rcv - 10, deliver=False)  # an older ACK: no prediction
    assert not conv.sides()[0].pred


def test_cost_report() -> None:
    """Not a speed check: just that the common path is the prediction (no decode of the state)."""
    conv = established()
    conv.send(False, ACK)
    w = conv.w
    args = (True, conv.c.nxt, conv.c.rcv, conv.c.win, 100, ACK | PSH, -1, ES, ES)
    verdict, w2 = W.step(w, *args)
    assert verdict == ACCEPT and w2 - w == 100  # only the client's end moved, by one add


def test_relearn_after_a_fast_path_keeps_the_scales_and_accepts_the_stream() -> None:
    conv = established()
    conv.send(True, ACK | PSH, plen=100)
    # The kernel forwards the next 10 MB without us: our window is stale, so forget it.
    conv.c.nxt = (conv.c.nxt + 10_000_000) & M32
    conv.s.rcv = conv.c.nxt
    conv.s.nxt = (conv.s.nxt + 777) & M32
    conv.c.rcv = conv.s.nxt
    conv.w = W.relearn(conv.w)
    assert conv.send(True, FIN | ACK) == ACCEPT
    assert conv.send(False, FIN | ACK) == ACCEPT
    assert conv.send(True, ACK) == ACCEPT
    o, r = conv.sides()
    assert conv.state == TW and (o.scale, r.scale) == (7, 7) and o.scale_known and r.scale_known
