"""Property tests of sequence-window tracking: random states, segments and conversations.

Every segment sent through :class:`Conv` also checks that the header prediction agrees with the
full check, so every property below checks that too.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from fwcluster.core import window as W
from fwcluster.core.tcp import CL, ES, IG, IV, SS, TW

from .test_window import ACCEPT, ACK, FIN, M32, PSH, RST, SYN, Conv, Peer

u32 = st.integers(0, M32)
STATES = st.sampled_from([*range(10), IG, IV])


segments_anywhere = st.tuples(
    st.booleans(),  # from the original side
    u32,  # seq
    u32,  # ack
    st.integers(0, 0xFFFF),  # window
    st.integers(-1, 0xFFFF),  # payload length (-1: a malformed header)
    st.integers(0, 0xFF),  # flags
    st.integers(-1, 14),  # window scale
    STATES,  # before
    STATES,  # after
    st.booleans(),  # one way
)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, (1 << 304) - 1), segments_anywhere)
def test_never_raises_on_any_state(
    w: int, args: tuple[bool, int, int, int, int, int, int, int, int, bool]
) -> None:
    verdict, w2 = W.step(w, *args)
    assert verdict in (W.INVALID, W.ACCEPT, W.IGNORE)
    assert 0 <= w2 < 1 << 304
    if not verdict:
        assert w2 == w  # a dropped segment teaches nothing


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.integers(0, 80), st.integers(0, 90))
def test_segment_never_raises(buf: bytes, l4: int, ip_end: int) -> None:
    seg = W.segment(buf, l4, ip_end)
    assert seg == W.BAD_SEGMENT or (0 <= seg[3] <= ip_end and -1 <= seg[5] <= 14)


# --------------------------------------------------------------------------- valid conversations
@dataclass
class Script:
    isn_c: int
    isn_s: int
    win_c: int
    win_s: int
    ws_c: int
    ws_s: int
    steps: list[tuple[bool, int]]  # (from the client, how much of the window to use, 0..1000 permille)


scripts = st.builds(
    Script,
    u32,
    u32,
    st.integers(1, 0xFFFF),
    st.integers(1, 0xFFFF),
    st.integers(-1, 14),
    st.integers(-1, 14),
    st.lists(st.tuples(st.booleans(), st.integers(0, 1000)), max_size=40),
)


def run_valid(sc: Script, one_way: bool = False, pickup: int | None = None, portable: bool = False) -> Conv:
    """Play a conversation in which both ends keep to the other's window; return the tracker."""
    conv = Conv(
        c=Peer(sc.isn_c, win=sc.win_c, wscale=sc.ws_c), s=Peer(sc.isn_s, win=sc.win_s, wscale=sc.ws_s)
    )
    conv.one_way = one_way
    both = sc.ws_c >= 0 and sc.ws_s >= 0
    scale_c, scale_s = (sc.ws_c, sc.ws_s) if both else (0, 0)
    # The right edge each end may send up to, from the other's last ACK and window (unbounded ints).
    conv.send(True, SYN, win=sc.win_c, wscale=sc.ws_c)
    conv.send(False, SYN | ACK, win=sc.win_s, wscale=sc.ws_s)
    edge_c = sc.isn_c + 1 + sc.win_s  # the SYN-ACK's window is not scaled
    conv.send(True, ACK)
    edge_s = sc.isn_s + 1 + (sc.win_c << scale_c)
    nxt_c, nxt_s = sc.isn_c + 1, sc.isn_s + 1
    for i, (from_client, permille) in enumerate(sc.steps):
        if i == pickup:
            conv.w = W.restore(W.portable(conv.w)) if portable else W.UNKNOWN
        if from_client:
            plen = min((edge_c - nxt_c) * permille // 1000, 0xFFFF)
            conv.send(True, ACK | PSH if plen else ACK, plen=plen)
            nxt_c += plen
            edge_s = max(edge_s, nxt_s + (sc.win_c << scale_c))
        else:
            plen = min((edge_s - nxt_s) * permille // 1000, 0xFFFF)
            conv.send(False, ACK | PSH if plen else ACK, plen=plen)
            nxt_s += plen
            edge_c = max(edge_c, nxt_c + (sc.win_s << scale_s))
    conv.send(True, FIN | ACK)
    conv.send(False, FIN | ACK)
    conv.send(True, ACK)
    return conv


@settings(max_examples=150, deadline=None)
@given(scripts)
def test_a_valid_in_order_stream_is_always_accepted(sc: Script) -> None:
    conv = run_valid(sc)
    assert set(conv.verdicts) == {ACCEPT}
    assert conv.state == TW


@settings(max_examples=100, deadline=None)
@given(scripts)
def test_a_valid_stream_is_accepted_in_one_way_mode(sc: Script) -> None:
    assert set(run_valid(sc, one_way=True).verdicts) == {ACCEPT}


@settings(max_examples=100, deadline=None)
@given(scripts, st.integers(0, 40), st.booleans())
def test_a_valid_stream_is_accepted_across_a_takeover(sc: Script, at: int, portable: bool) -> None:
    assert set(run_valid(sc, pickup=at, portable=portable).verdicts) == {ACCEPT}


# --------------------------------------------------------------------------- any segments
FLAGS = st.sampled_from([ACK, ACK | PSH, FIN | ACK, RST, RST | ACK, SYN, SYN | ACK, 0, FIN])
# A segment relative to its sender's state: (from the client, flags, seq offset, ack offset, length,
# window, delivered). Offsets mostly small, sometimes anywhere in the sequence space.
offset = st.one_of(st.integers(-3000, 3000), st.integers(-(1 << 31), 1 << 31))
segments = st.lists(
    st.tuples(
        st.booleans(), FLAGS, offset, offset, st.integers(0, 3000), st.integers(0, 0xFFFF), st.booleans()
    ),
    max_size=30,
)


def run_any(
    isn_c: int, isn_s: int, segs: list[tuple[bool, int, int, int, int, int, bool]], one_way: bool
) -> Conv:
    conv = Conv(c=Peer(isn_c), s=Peer(isn_s), one_way=one_way)
    conv.handshake()
    for from_client, flags, dseq, dack, plen, win, deliver in segs:
        src = conv.c if from_client else conv.s
        ws = 7 if flags & SYN else -1
        conv.send(
            from_client,
            flags,
            seq=src.nxt + dseq,
            ack=src.rcv + dack,
            plen=plen,
            win=win,
            wscale=ws,
            deliver=deliver,
        )
    return conv


@settings(max_examples=200, deadline=None)
@given(u32, u32, u32, u32, segments, st.booleans())
def test_shifting_all_sequence_numbers_changes_nothing(
    isn_c: int,
    isn_s: int,
    k_c: int,
    k_s: int,
    segs: list[tuple[bool, int, int, int, int, int, bool]],
    one_way: bool,
) -> None:
    a = run_any(isn_c, isn_s, segs, one_way)
    b = run_any(isn_c + k_c, isn_s + k_s, segs, one_way)
    assert a.verdicts == b.verdicts
    assert a.state == b.state


@settings(max_examples=200, deadline=None)
@given(u32, u32, st.lists(st.tuples(st.booleans(), st.integers(0, 1460)), max_size=10), st.booleans(), u32)
def test_a_blind_rst_closes_only_with_the_exact_number(
    isn_c: int, isn_s: int, data: list[tuple[bool, int]], from_client: bool, seq: int
) -> None:
    conv = Conv(c=Peer(isn_c), s=Peer(isn_s))
    conv.handshake()
    for client, plen in data:
        conv.send(client, ACK | PSH, plen=plen)
        conv.send(not client, ACK)
    src, dst = (conv.c, conv.s) if from_client else (conv.s, conv.c)
    verdict = conv.send(from_client, RST, seq=seq)
    if verdict == ACCEPT:
        assert seq in (src.nxt, dst.rcv)  # the sender's next byte, the peer's highest ACK
        assert conv.state == CL
    else:
        assert conv.state == ES


@settings(max_examples=100, deadline=None)
@given(u32, st.integers(-1, 14), st.integers(0, 0xFFFF), st.booleans())
def test_a_new_syn_always_starts_a_fresh_state(isn: int, ws: int, win: int, reopen: bool) -> None:
    before = TW if reopen else 0
    verdict, w = W.step(12345 if reopen else 0, True, isn, 0, win, 0, SYN, ws, before, SS)
    o, r = W.unpack(w)
    assert verdict == ACCEPT and o.end == o.maxend == (isn + 1) & M32 and o.maxwin == (win or 1)
    assert (r.end, r.maxend, r.maxwin, r.maxack) == (0, 0, 0, 0)
