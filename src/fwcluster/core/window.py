"""TCP sequence-window tracking, as the Linux kernel's conntrack does it by default.

This is ``tcp_in_window`` of net/netfilter/nf_conntrack_proto_tcp.c with
``nf_conntrack_tcp_be_liberal=0``, plus the RST rules ``nf_conntrack_tcp_packet`` applies before
it, written as a pure function over one packed integer. The TCP state machine stays in
:mod:`fwcluster.core.tcp`; the caller steps it first and hands both states here.

What is checked
---------------
Each direction (the *sender* of a segment and its *receiver*, the other side) keeps:

===========  =================================================================================
``end``      the highest ``seq + len`` the sender has sent (SYN and FIN count one each)
``maxend``   the highest right edge the receiver has offered: ``ack + (window << scale)``
``maxwin``   the largest window the sender has advertised (scaled); 0 means *unknown*
``maxack``   the highest ACK the sender has sent (for the RST rule below)
``scale``    the sender's window-scale shift (0..14), from its SYN option
===========  =================================================================================

and a segment is held against the four bounds of Guido van Rooij's paper, as the kernel has them:

====  ======================================================  ==========================  =========
 I    ``seq <= sender.maxend``                                 data beyond the window      INVALID
 III  ``ack <= receiver.end``                                  ACK of data never sent      INVALID
 II   ``seq + len >= sender.end - receiver.maxwin``           old data retransmitted      IGNORE
 IV   ``ack >= receiver.end - MAXACKWINDOW(sender)``          ACK far in the past         IGNORE
====  ======================================================  ==========================  =========

All comparisons are serial-number arithmetic modulo 2**32 (:func:`before`, :func:`after`), so a
connection whose sequence numbers wrap is judged exactly like one that does not.
``MAXACKWINDOW`` is ``max(sender.maxwin, 66000)``. The kernel's work-around for TCPs that send a
few bytes more than the window (check I fails, but the excess is at most the receiver's window
and the ACK is good: IGNORE, and ``end`` moves so the peer's ACK of it is not refused) is kept.

Window scaling: the SYN's option sets the sender's ``scale``; only when both SYNs carry it is it
used (RFC 7323), so the SYN-ACK clears both scales otherwise. The window field of a SYN or
SYN-ACK is never scaled. A SYN-ACK learns the reply side (``end = maxend = seq + 1``) and must
acknowledge the SYN (check III against the original side's ``end``).

Verdicts
--------
:func:`step` returns ``(verdict, new_state)``:

* ``ACCEPT`` (1): the segment is in window; the caller applies the TCP state change.
* ``IGNORE`` (2): the segment passes but must **not** change the TCP state (the kernel's
  ``NFCT_TCP_IGNORE``: old retransmissions, very old ACKs, the table's ``sIG`` packets, and an
  in-window RST that does not match exactly, see below).
* ``INVALID`` (0): drop it; the TCP state stays.

``verdict`` is truthy exactly when the packet passes. The caller always stores ``new_state``
(it equals the old one when nothing was learned), in the same transaction as the TCP state.

RST: accepted only in window, and closing only when exact (as newer kernels do)
-------------------------------------------------------------------------------
Once the peer of a RST's sender has sent an ACK, a RST whose ``seq`` lies below the peer's
highest ACK is INVALID. In ESTABLISHED, a RST closes the connection only when its ``seq`` equals
that highest ACK (or continues the sender's last segment, see below); any other in-window RST
passes as IGNORE, so that the endpoint answers it with a challenge ACK (RFC 5961) while the
firewall keeps the connection. A RST in a closing state (FIN_WAIT .. CLOSE) is accepted without
a window check, as in the kernel (the tuple may already be reused). A RST without ACK answering a
SYN (``seq = 0`` in SYN_SENT) is judged at the sender's ``end``. A RST that does not close
teaches nothing: the window state is left as it was.

The packed state: one int
-------------------------
38 bytes, little-endian, read and written with one precompiled :class:`struct.Struct`
(``int.to_bytes`` + ``unpack``, ``pack`` + ``int.from_bytes``: cheaper in CPython than a shift
and a mask per field). Each side is 19 bytes, the original side's first::

    byte   0..3    end          byte  10..13   maxend
    byte   4..7    maxack       byte  14..17   maxwin
    byte   8..9    lastwin      byte  18       scale (bits 0..3) | WSCALE 0x10 | MAXACK 0x20
                                               | SCALE_KNOWN 0x40 | PRED 0x80
    bytes 19..37   the reply side, the same

``WSCALE``: the side's SYN offered window scaling. ``MAXACK``: ``maxack`` holds an ACK the side
sent. ``SCALE_KNOWN``: the side's scale is known (its SYN was seen here, or inferred from the
other SYN, or came with the flow); otherwise ``scale`` holds an assumption (below). ``PRED`` and
``lastwin`` serve the prediction below: the side's last accepted segment carried the window
``lastwin`` and the ACK ``maxack``, and both sides are known.

The value is below 2**304: as a separate int 68 bytes (``sys.getsizeof``: 24 + 4 per 30 bits);
shifted into the flow table's packed value (today about 52 bits, a 32-byte int) it makes that
int 72 bytes (356 bits, 12 digits), so a flow costs 40 more bytes. ``0`` (:data:`UNKNOWN`) is a
flow whose window is not known.

Unknown windows: state 0, after a takeover
------------------------------------------
A flow installed from the shared store carries no window (the store keeps state and version
only), so another instance that takes it over starts from ``UNKNOWN`` and **relearns the window
from the traffic**, judging the first segments liberally, instead of shipping 38 bytes per flow
and per change to the store. Why: the window changes with nearly every packet, so replicating it
would turn every ACK into a store write, which the sync levels exist to avoid; a store copy
would also always be a little stale, and a stale window drops good packets where a relearned one
only admits a few more for a moment. The cost is bounded:

* The first segment from each side initialises that side from the segment itself (the kernel's
  mid-stream pickup: ``end = seq + len``, ``maxwin = window``, ``maxend = end + maxwin``).
* While the receiver of a segment is unknown, the segment gets the *one-sided* checks below (the
  same as for ECMP); as soon as both sides are known, all four bounds apply, so an ACK of data
  that side never sent (III) is caught from the second direction's first segment on.
* The window scale is lost with the SYNs: an unknown scale is taken as 14, the largest, so
  windows after a takeover are as wide as they can be (bounds I, II, IV become loose; III and the
  exact-RST rule stay exact). :func:`portable` gives the 12 bits that carry the scales; when the
  store keeps them with the flow, :func:`restore` brings the precise windows back.
* A RST whose sender is unknown cannot be judged: it passes as IGNORE (the endpoint checks it,
  RFC 5961) and never closes the flow here. A RST whose peer is known must match exactly.

This is stricter than the kernel's own pickup (``nf_conntrack_tcp_loose``), which marks a picked-up
connection ``be_liberal`` for its whole life.

The same holds for a flow that comes back from a kernel fast path (its segments were forwarded
without passing here, so its window is stale): :func:`relearn` keeps the scales and forgets the
windows, and the flow is relearned as after a takeover.

One direction only: ECMP steering (``one_way=True``)
-----------------------------------------------------
With ECMP an instance may see only one direction of a flow. What the other direction would have
told (its ``end``: what may be acknowledged; its window: how far the sender may go) is missing,
so bounds I-IV cannot be evaluated. What can still be checked, from the sender's own segments:

* seq upper bound: ``seq <= end + (65535 << s)``: a sender never goes beyond the peer's ACK plus
  its window, the ACK is at most ``end``, and the window at most 65535 shifted by the receiver's
  scale ``s`` (known from its SYN, else 14; 0 when either SYN came without the option). INVALID.
* seq lower bound: ``seq + len >= end - (65535 << s)``, else IGNORE (an old retransmission).
* ACK upper bound: ``ack <= receiver.maxend + 65535``: the peer can only have sent up to the edge
  this side offered it (``receiver.maxend``, kept from this side's own ACKs and windows), plus one
  segment that overlaps the edge. INVALID.
* ACK lower bound: ``ack >= maxack - MAXACKWINDOW``, else IGNORE.
* RST: closes only when ``seq == end`` exactly (what a TCP sends as its RST's sequence number);
  another RST within the seq bounds passes as IGNORE; outside them it is INVALID.

So even with one direction a blind RST cannot close a connection, and data or ACKs far from the
stream are dropped, though the window bound is the widest possible one instead of the real one
(and, as for any middlebox, a forged segment accepted inside it moves ``end``, after which the
real segments below it pass as IGNORE until the stream catches up).
Each direction is judged on its own segments only, even when the other is seen too (buckets of
the two directions move independently, so a direction seen now may be gone in a moment).

Not copied from the kernel, and why
-----------------------------------
* SACK blocks: the kernel takes the highest SACK edge as the ACK for checks III/IV and for
  ``maxend``. Walking the options of every segment costs more than the rest of the check; only
  SYNs' options are read. Without it an ACK carrying SACK blocks is held to its cumulative ACK,
  which is smaller, so III (the drop) can only be passed more easily; IV (only an IGNORE) and the
  window growth are a little tighter.
* The retransmission counter and ``DATA_UNACKNOWLEDGED`` flag serve timeouts, which live in the
  caller; NAT sequence offsets do not apply (no NAT).
* The annotations of the last ignored packet (``last_seq``, ``last_end``, ``last_win``, ...)
  that let the kernel resynchronise on a SYN-ACK answering a SYN it ignored, accept a RST
  answering an ignored SYN, or spot an RFC 5961 challenge ACK in LAST_ACK: 80 more bits per flow
  for rare cases; those packets are handled by the state table's rules alone. The kernel's "RST
  continues the sender's last segment" (``seq == last_end``) is approximated by
  ``seq == sender.end``, and its ``ASSURED`` test by the state ESTABLISHED.
* The kernel's ``tcp_options`` only resets a sender's scale and flags when the SYN has options;
  here a SYN always sets them (a SYN without options offers no window scaling).

Cost: header prediction
-----------------------
In CPython every statement costs tens of nanoseconds, so the full check (decode, four bounds,
six updates, encode) takes 1.5 to 2 microseconds. Most segments of an established connection are
predictable, as in Van Jacobson's TCP header prediction: they come in order (``seq == end``),
with the sender's last window and either its last ACK (data, FIN) or a newer one (an ACK of new
data). For those, when the side is marked ``PRED``, :func:`step` tests the prediction with one
masked compare on the packed int, checks I and III/IV (``receiver.end - ack <= 66000``, which
implies both, as MAXACKWINDOW is at least 66000), and adds the changes of ``end``, ``maxack`` and
the receiver's ``maxend`` straight into the int, without decoding it. Everything the kernel's
updates would change besides is unchanged by construction (same window: ``maxwin`` and the edge
already hold it; in order: bound II holds). ``PRED`` is set by a full check that accepted an ACK
equal to ``maxack`` with both sides known, and cleared by any SYN; the tests check that the
prediction and the full check always agree. Measured (Python 3.11, timeit, best of 9): in order
with the last ACK about 0.6 us, with a newer ACK about 1.0 us, the full check 1.7 to 1.9 us, a
new connection's SYN 0.7 us (an empty function with the same arguments: 0.07 us).
"""

from __future__ import annotations

from struct import Struct
from typing import NamedTuple

from fwcluster.core.packet import ACK, FIN, RST, SYN
from fwcluster.core.tcp import CL, CW, ES, FW, IG, LA, NO, S2, SR, SS, TW

INVALID, ACCEPT, IGNORE = 0, 1, 2
UNKNOWN = 0

M32 = 0xFFFFFFFF
HALF = 0x80000000
MAXACKWINCONST = 66000  # the kernel's floor for MAXACKWINDOW
MAX_WSCALE = 14  # RFC 7323: larger shifts are taken as 14
WIN_MAX = 0xFFFF  # the largest window field

# The layout (see the module doc): per side end, maxack, lastwin, maxend, maxwin, scale+flags.
_LAYOUT = Struct("<IIHIIBIIHIIB")
STATE_BYTES = _LAYOUT.size  # 38
_unpack = _LAYOUT.unpack
_pack = _LAYOUT.pack
_from_bytes = int.from_bytes
F_WSCALE, F_MAXACK, F_SCALE_KNOWN, F_PRED = 0x10, 0x20, 0x40, 0x80
_SCALE = 0x0F
_PORTABLE = _SCALE | F_WSCALE | F_SCALE_KNOWN  # what of a side's flag byte travels
# Bit offsets of a side's fields, and of the reply side, for the prediction.
_MAXACK_BIT, _LASTWIN_BIT, _MAXEND_BIT, _MAXWIN_BIT, _SF_BIT, SIDE_BITS = 32, 64, 80, 112, 144, 152
_PRED_MASK = M32 | 0xFFFF << _LASTWIN_BIT | F_PRED << _SF_BIT  # end, lastwin, PRED
_PRED_KEY = F_PRED << _SF_BIT
_PRED_MAXWIN = 1 << 30  # bound II holds for in-order segments while the receiver's maxwin is below

_CLOSING = frozenset({FW, CW, LA, TW, CL})  # the kernel's tcp_can_early_drop states
_OPENED_BY_SYN = frozenset({NO, TW, CL})  # a SYN into SYN_SENT from these starts a new connection
_SPECIAL = SYN | RST | ACK  # the common case has ACK and neither SYN nor RST


def before(a: int, b: int) -> bool:
    """``a`` comes before ``b`` in sequence space: the kernel's ``(s32)(a - b) < 0``."""
    return ((a - b) & M32) >= HALF


def after(a: int, b: int) -> bool:
    """``a`` comes after ``b`` in sequence space."""
    return ((b - a) & M32) >= HALF


# --------------------------------------------------------------------------- reading a segment
_TCP = Struct("!4xIIBBH")  # after the ports: seq, ack, data offset, flags, window
BAD_SEGMENT = (0, 0, 0, -1, 0, -1)  # payload_len -1: the TCP header is truncated or malformed
_OPT_EOL, _OPT_NOP, _OPT_WSCALE = 0, 1, 3


def segment(buf: bytes, l4: int, ip_end: int) -> tuple[int, int, int, int, int, int]:
    """``(seq, ack, window, payload_len, flags, wscale)`` of the TCP segment at ``buf[l4:]``.

    ``ip_end`` is where the IP packet ends (its total length, not the buffer's). ``wscale`` is the
    window-scale option's shift, or -1: options are walked only on SYN and SYN-ACK, the only
    segments whose scale option counts. A truncated or malformed header gives :data:`BAD_SEGMENT`
    (``payload_len == -1``); nothing raises.
    """
    if l4 < 0 or ip_end > len(buf) or ip_end - l4 < 20:
        return BAD_SEGMENT
    seq, ack, off, flags, win = _TCP.unpack_from(buf, l4)
    doff = (off >> 4) << 2
    if doff < 20 or l4 + doff > ip_end:
        return BAD_SEGMENT
    ws = window_scale(buf, l4 + 20, l4 + doff) if flags & SYN and doff > 20 else -1
    return (seq, ack, win, ip_end - l4 - doff, flags, ws)


def window_scale(buf: bytes, i: int, stop: int) -> int:
    """The window-scale option in the options ``buf[i:stop]``, clamped to 14, or -1.

    Like the kernel's ``tcp_options``: the walk stops at EOL, at an option whose length is below
    2 or runs past the header, and keeps what it found before. At most 40 bytes, so bounded.
    """
    ws = -1
    while i < stop:
        op = buf[i]
        if op == _OPT_EOL:
            break
        if op == _OPT_NOP:
            i += 1
            continue
        if stop - i < 2:
            break
        size = buf[i + 1]
        if size < 2 or size > stop - i:
            break
        if op == _OPT_WSCALE and size == 3:
            ws = min(buf[i + 2], MAX_WSCALE)
        i += size
    return ws


# --------------------------------------------------------------------------- packing
class Side(NamedTuple):
    """One direction's window data, readable (tests, tools); the per-packet path never builds it."""

    end: int = 0
    maxend: int = 0
    maxwin: int = 0
    maxack: int = 0
    scale: int = 0
    wscale: bool = False
    maxack_set: bool = False
    scale_known: bool = False
    lastwin: int = 0
    pred: bool = False

    def fields(self) -> tuple[int, int, int, int, int, int]:
        """In the layout's order: end, maxack, lastwin, maxend, maxwin, flag byte."""
        sf = self.scale | (F_WSCALE if self.wscale else 0) | (F_MAXACK if self.maxack_set else 0)
        sf |= (F_SCALE_KNOWN if self.scale_known else 0) | (F_PRED if self.pred else 0)
        return self.end, self.maxack, self.lastwin, self.maxend, self.maxwin, sf

    @classmethod
    def of(cls, end: int, maxack: int, lastwin: int, maxend: int, maxwin: int, sf: int) -> Side:
        return cls(
            end, maxend, maxwin, maxack, sf & _SCALE, bool(sf & F_WSCALE), bool(sf & F_MAXACK),
            bool(sf & F_SCALE_KNOWN), lastwin, bool(sf & F_PRED),
        )  # fmt: skip


def pack(orig: Side, reply: Side) -> int:
    return _from_bytes(_pack(*orig.fields(), *reply.fields()), "little")


def unpack(w: int) -> tuple[Side, Side]:
    """(original side, reply side)"""
    v = _unpack(w.to_bytes(STATE_BYTES, "little"))
    return Side.of(*v[0:6]), Side.of(*v[6:12])


def portable(w: int) -> int:
    """The 12 bits worth carrying with a flow to another instance: each side's scale, WSCALE and
    SCALE_KNOWN (the original side's flag byte in bits 0..7, the reply side's in 8..15). The
    windows themselves are relearned."""
    return ((w >> _SF_BIT) & _PORTABLE) | ((w >> (SIDE_BITS + _SF_BIT)) & _PORTABLE) << 8


def restore(bits: int) -> int:
    """A window state from :func:`portable` bits: scales known, windows unknown (relearned)."""
    return (bits & _PORTABLE) << _SF_BIT | ((bits >> 8) & _PORTABLE) << (SIDE_BITS + _SF_BIT)


def relearn(w: int) -> int:
    """The state with its windows forgotten and its scales kept: for a flow whose segments went
    past this tracker for a while (a kernel fast path), so that its stale window drops nothing."""
    return restore(portable(w))


def _encode(
    from_orig: bool,
    s_end: int, s_maxack: int, s_lastwin: int, s_maxend: int, s_maxwin: int, s_sf: int,
    r_end: int, r_maxack: int, r_lastwin: int, r_maxend: int, r_maxwin: int, r_sf: int,
) -> int:  # fmt: skip
    """The state from the sender's and the receiver's fields."""
    # fmt: off
    if from_orig:
        b = _pack(s_end, s_maxack, s_lastwin, s_maxend, s_maxwin, s_sf,
                  r_end, r_maxack, r_lastwin, r_maxend, r_maxwin, r_sf)
    else:
        b = _pack(r_end, r_maxack, r_lastwin, r_maxend, r_maxwin, r_sf,
                  s_end, s_maxack, s_lastwin, s_maxend, s_maxwin, s_sf)
    # fmt: on
    return _from_bytes(b, "little")


def _assumed_scale(other_sf: int) -> int:
    """The scale of a side whose SYN was not seen: 0 when the other side's SYN is known to have
    come without the option (then neither side scales), else the widest, 14."""
    return 0 if other_sf & (F_SCALE_KNOWN | F_WSCALE) == F_SCALE_KNOWN else MAX_WSCALE


def _syn_scales(wscale: int, from_orig: bool, r_sf: int) -> tuple[int, int]:
    """The kernel's tcp_init_sender for the scales: (sender byte, receiver byte) after a SYN.

    Scaling is on only when both SYNs offer it: the SYN-ACK clears both scales otherwise. Where
    only one SYN is seen here (a takeover, ECMP), a SYN without the option still tells that
    neither side scales, and a SYN-ACK with it that the SYN had it too (RFC 7323: a TCP only
    answers the option), with a shift we do not know. The sender's MAXACK is cleared, as the
    kernel's tcp_options clears its flags; any SYN ends both sides' predictions.
    """
    offered = wscale >= 0
    s_sf = (wscale | F_WSCALE | F_SCALE_KNOWN) if offered else F_SCALE_KNOWN
    r_sf &= ~F_PRED
    no_scale = (r_sf & ~(_SCALE | F_WSCALE)) | F_SCALE_KNOWN
    if from_orig:
        if not offered:
            r_sf = no_scale
    elif r_sf & F_SCALE_KNOWN:
        if not (offered and r_sf & F_WSCALE):
            s_sf &= ~_SCALE
            r_sf &= ~_SCALE
    elif not offered:
        r_sf = no_scale
    return s_sf, r_sf


# --------------------------------------------------------------------------- the step
def step(
    w: int,
    from_orig: bool,
    seq: int,
    ack: int,
    win: int,
    plen: int,
    flags: int,
    wscale: int,
    before_state: int,
    after_state: int,
    one_way: bool = False,
    predict: bool = True,
) -> tuple[int, int]:
    """Judge one segment: ``(verdict, new window state)``, see the module doc.

    ``seq .. wscale`` are :func:`segment`'s fields (so ``step(w, d, *segment(...), b, a)``),
    ``before_state`` the flow's TCP state and ``after_state`` what the state table gives for this
    segment (``IG`` and ``IV`` allowed), ``one_way`` the ECMP mode. ``predict=False`` skips the
    header prediction (the tests compare both ways).

    The first block is the prediction; the rest is every case, in the kernel's order:
    state-table verdicts, a new connection, the RST rules, initialising a side, the fix-ups of
    the ACK, the one-sided checks where the receiver is unknown or not trusted, the four bounds,
    the updates.
    """
    if predict and flags & _SPECIAL == ACK and after_state < IG and not one_way:
        # Header prediction: in order, with the sender's last window, on a PRED side.
        so = 0 if from_orig else SIDE_BITS
        s = w >> so
        if s & _PRED_MASK == seq | win << _LASTWIN_BIT | _PRED_KEY:
            ro = SIDE_BITS - so
            end = (seq + plen + (flags & FIN)) & M32
            if (
                (((w >> ro) & M32) - ack) & M32 <= MAXACKWINCONST  # III and IV
                and ((((s >> _MAXEND_BIT) & M32) - end) & M32) < HALF  # I, and no overshoot
            ):
                old = (s >> _MAXACK_BIT) & M32
                if ack == old:  # data or FIN: only end moves
                    return ACCEPT, w + ((end - seq) << so)
                if ((old - ack) & M32) >= HALF:  # a newer ACK: maxack and the receiver's edge move
                    delta = ((end - seq) + ((ack - old) << _MAXACK_BIT)) << so
                    edge = (ack + (win << ((s >> _SF_BIT) & _SCALE))) & M32
                    r_maxend = (w >> (ro + _MAXEND_BIT)) & M32
                    if ((r_maxend - 1 - edge) & M32) >= HALF:
                        delta += ((edge if win else (edge + 1) & M32) - r_maxend) << (ro + _MAXEND_BIT)
                    return ACCEPT, w + delta

    if after_state >= IG or plen < 0:
        # sIG: the kernel passes the packet without looking at the window; sIV: the caller drops.
        return (IGNORE if after_state == IG and plen >= 0 else INVALID), w
    syn, rst, has_ack = flags & SYN, flags & RST, flags & ACK
    end = (seq + plen + (1 if syn else 0) + (flags & FIN)) & M32
    if syn and after_state == SS and before_state in _OPENED_BY_SYN:
        # A new connection (one reopened from TIME_WAIT or CLOSE is a new conntrack entry in the
        # kernel too): the sender from its SYN, nothing of the other side. The kernel's bounds
        # all pass trivially for it.
        s_sf, r_sf = _syn_scales(wscale, from_orig, 0)
        if from_orig:  # always, by the state table
            fresh = end | end << _MAXEND_BIT | (win or 1) << _MAXWIN_BIT | s_sf << _SF_BIT
            return ACCEPT, fresh | r_sf << (SIDE_BITS + _SF_BIT)
        return ACCEPT, _encode(from_orig, end, 0, 0, end, win or 1, s_sf, 0, 0, 0, 0, 0, r_sf)

    # fmt: off
    if from_orig:
        (s_end, s_maxack, s_lastwin, s_maxend, s_maxwin, s_sf,
         r_end, r_maxack, r_lastwin, r_maxend, r_maxwin, r_sf) = _unpack(w.to_bytes(38, "little"))
    else:
        (r_end, r_maxack, r_lastwin, r_maxend, r_maxwin, r_sf,
         s_end, s_maxack, s_lastwin, s_maxend, s_maxwin, s_sf) = _unpack(w.to_bytes(38, "little"))
    # fmt: on

    # The RST rules of nf_conntrack_tcp_packet, before the window check.
    exact_rst = True
    if rst:
        if before_state in _CLOSING:
            return ACCEPT, w  # the kernel skips validation: the tuple may be reused already
        if not one_way and r_sf & F_MAXACK:
            if seq == 0 and before_state != ES:
                pass  # most likely the answer to a SYN: judged by the window below
            elif before(seq, r_maxack):
                return INVALID, w  # below what the peer has acknowledged: not this stream's
            elif before_state != ES or seq == r_maxack:
                pass
            elif seq != s_end:  # nor a RST continuing the sender's last segment
                exact_rst = False  # in window, it passes but keeps the connection

    sender_was_known = s_maxwin != 0
    if syn and (not sender_was_known or (after(end, s_end) and before_state in (SS, SR))):
        # A SYN-ACK (or a simultaneous open's SYN) learns its side; a SYN again with a higher
        # sequence number in SYN_SENT / SYN_RECV means the sender started over.
        s_end = s_maxend = end
        s_maxwin = win or 1
        s_sf, r_sf = _syn_scales(wscale, from_orig, r_sf)
        if not has_ack and (not sender_was_known or not from_orig):
            return ACCEPT, _encode(
                from_orig, s_end, s_maxack, s_lastwin, s_maxend, s_maxwin, s_sf,
                r_end, r_maxack, r_lastwin, r_maxend, r_maxwin, r_sf,
            )  # fmt: skip
    elif not sender_was_known:
        # Mid-stream: this side's history is lost to us (a takeover), or it opens with a RST
        # answering a SYN. Learn it from the segment, as the kernel's pickup does.
        if not s_sf & F_SCALE_KNOWN:
            s_sf = (s_sf & ~_SCALE) | _assumed_scale(r_sf)
        s_end = end
        s_maxwin = (win << (s_sf & _SCALE)) or 1
        new_maxend = (end + s_maxwin) & M32
        if not (r_sf & F_MAXACK and after(s_maxend, new_maxend)):
            s_maxend = new_maxend  # (a larger edge the receiver's own ACKs set is kept)
        if not r_maxwin:
            r_end = r_maxend = ack  # the kernel's stand-in, so that III and IV pass
        elif ack == (r_end + 1) & M32:
            r_end = ack  # likely the answer to a keep-alive: needed for III

    sack = ack
    if not has_ack or (rst and ack == 0):
        sack = r_end  # no ACK (or a broken stack's RST with ACK 0): as if all were acknowledged
    if rst and seq == 0 and before_state == SS:
        seq = end = s_end  # a RST answering a SYN

    if one_way or (not r_maxwin and not (from_orig and before_state == SS)):
        # The receiver is unknown (a takeover) or not trusted (ECMP): see the module doc.
        bound = WIN_MAX << ((r_sf & _SCALE) if r_sf & F_SCALE_KNOWN else _assumed_scale(s_sf))
        seq_ok = before(seq, s_end + bound + 1)
        low_ok = after(end, s_end - bound - 1)
        if rst:
            if not sender_was_known:  # nothing to judge it by: the endpoint will (RFC 5961)
                return (ACCEPT if before_state in (SS, S2) else IGNORE), w
            if seq == s_end:
                return ACCEPT, w
            return (IGNORE if seq_ok and low_ok else INVALID), w
        acked_before = s_sf & F_MAXACK
        if not seq_ok or (has_ack and acked_before and not before(sack, r_maxend + WIN_MAX + 1)):
            return INVALID, w
        maw = max(s_maxwin, MAXACKWINCONST)
        if not low_ok or (has_ack and acked_before and not after(sack, s_maxack - maw - 1)):
            return IGNORE, w
        if not syn:
            win <<= s_sf & _SCALE
        s_maxwin = max(s_maxwin, win)
        if after(end, s_end):
            s_end = end
        if has_ack:
            edge = (sack + win) & M32
            if not acked_before or after(edge, r_maxend - 1):
                r_maxend = edge if win else (edge + 1) & M32
            if not acked_before or after(ack, s_maxack):
                s_maxack = ack
            s_sf |= F_MAXACK
        return ACCEPT, _encode(
            from_orig, s_end, s_maxack, s_lastwin, s_maxend, s_maxwin, s_sf & ~F_PRED,
            r_end, r_maxack, r_lastwin, r_maxend, r_maxwin, r_sf,
        )  # fmt: skip

    # The four bounds (tcp_in_window).
    maw = s_maxwin if s_maxwin > MAXACKWINCONST else MAXACKWINCONST
    # (Serial comparisons are written out on this path: before(a, b) is ((a - b) & M32) >= HALF.)
    if ((seq - s_maxend - 1) & M32) < HALF:  # I: seq is past the window
        # A TCP that sends a little more than the window: pass it, and move end so that the
        # peer's ACK of these bytes is not refused by III afterwards.
        if (
            r_maxwin
            and after(end, s_end - r_maxwin - 1)
            and after(sack, r_end - maw - 1)
            and (end - s_maxend + 1) & M32 <= r_maxwin
            and before(sack, r_end + 1)
        ):
            if rst:
                return IGNORE, w
            return IGNORE, _encode(
                from_orig, end, s_maxack, s_lastwin, s_maxend, s_maxwin, s_sf,
                r_end, r_maxack, r_lastwin, r_maxend, r_maxwin, r_sf,
            )  # fmt: skip
        return INVALID, w
    if ((sack - r_end - 1) & M32) < HALF:  # III: acknowledges data the receiver never sent
        return INVALID, w
    if r_maxwin and ((s_end - r_maxwin - 1 - end) & M32) < HALF:  # II: old data again
        return IGNORE, w
    if ((r_end - maw - 1 - sack) & M32) < HALF:  # IV: an ACK from long ago
        return IGNORE, w
    if not exact_rst:
        return IGNORE, w  # an in-window RST that does not match: the endpoint sends a challenge ACK

    # The updates.
    raw_win = win
    if not syn:
        win <<= s_sf & _SCALE  # the window of a SYN is never scaled
    if win > s_maxwin:  # noqa: PLR1730 (cheaper than max())
        s_maxwin = win
    if ((s_end - end) & M32) >= HALF:  # new data
        s_end = end
    if has_ack:
        if not s_sf & F_MAXACK or ((s_maxack - ack) & M32) >= HALF:
            s_maxack = ack
        s_sf |= F_MAXACK
    if r_maxwin and ((s_maxend - end) & M32) >= HALF:  # past the edge: the window must have grown
        r_maxwin = (r_maxwin + end - s_maxend) & M32
    edge = (sack + win) & M32
    if ((r_maxend - 1 - edge) & M32) >= HALF:  # the receiver may send up to the new edge
        r_maxend = edge if win else (edge + 1) & M32
    # The prediction holds from here if this was an ordinary ACK carrying the highest ACK.
    if flags & _SPECIAL == ACK and ack == s_maxack and 0 < r_maxwin < _PRED_MAXWIN:
        s_sf |= F_PRED
        s_lastwin = raw_win
    else:
        s_sf &= ~F_PRED
    return ACCEPT, _encode(
        from_orig, s_end, s_maxack, s_lastwin, s_maxend, s_maxwin, s_sf,
        r_end, r_maxack, r_lastwin, r_maxend, r_maxwin, r_sf,
    )  # fmt: skip
