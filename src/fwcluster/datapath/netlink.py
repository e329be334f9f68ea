"""The nfnetlink_queue wire format, both ways, without a socket: packets in, verdicts out.

Pure functions over bytes (the driver in ``nfqueue.py`` owns the socket), so what the kernel is
told is tested without root. Layouts as in linux/netfilter/nfnetlink_queue.h: every message is a
``struct nlmsghdr`` (host order), a ``struct nfgenmsg`` (``res_id``, the queue number, big-endian)
and attributes (``struct nlattr``, host order, padded to 4 bytes).

Verdicts. ``NFQNL_MSG_VERDICT`` gives one packet its verdict; ``NFQNL_MSG_VERDICT_BATCH`` gives
every packet still queued with an id up to N the same verdict. The kernel queues packets in id
order and hands them to us in that order, so a batch is exact as long as N stays below every id
that still waits (held for the store) and every drop of the same round is sent first: one
datagram carries the drops, the marked accepts (each with ``NFQA_MARK``), then one batch for the
accepts below the lowest held id and single verdicts for the rest. The kernel processes the
messages of a datagram in order.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from struct import Struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_VERDICT_BATCH = 3
NLMSG_ERROR = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_MARK = 3
NFQA_PAYLOAD = 10
NLM_F_REQUEST = 1
NF_DROP = 0
NF_ACCEPT = 1
_PACKET_TYPE = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
_ATTR_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

NLMSG = Struct("=IHHII")  # len, type, flags, seq, pid
NFGEN = Struct("!BBH")  # family, version, res_id
NLATTR = Struct("=HH")  # len, type
VERDICT = Struct("!II")  # verdict, packet id
PACKET_ID = Struct("!I")
MARK = Struct("!I")
ERRNO = Struct("=i")
_HDR = NLMSG.size + NFGEN.size  # 20: where the attributes start


def _header(queue: int, msg_type: int, size: int) -> bytes:
    return NLMSG.pack(size, (NFNL_SUBSYS_QUEUE << 8) | msg_type, NLM_F_REQUEST, 0, 0) + NFGEN.pack(
        socket.AF_UNSPEC, 0, queue
    )


def parse_packets(buf: bytes | bytearray | memoryview, size: int) -> tuple[list[tuple[int, bytes]], int]:
    """The queued packets in one datagram as (id, payload bytes), and how many error messages it
    held (the kernel's answer to a verdict it could not apply, e.g. an unknown id).

    Malformed messages end the walk (what came before them stands); nothing raises."""
    out: list[tuple[int, bytes]] = []
    errors = 0
    off = 0
    while off + NLMSG.size <= size:
        length, mtype = NLMSG.unpack_from(buf, off)[:2]
        if length < NLMSG.size or off + length > size:
            break
        end = off + length
        if mtype == _PACKET_TYPE and length >= _HDR:
            pid = -1
            payload: bytes | None = None
            a = off + _HDR
            while a + NLATTR.size <= end:
                alen, atype = NLATTR.unpack_from(buf, a)
                if alen < NLATTR.size or a + alen > end:
                    break
                atype &= _ATTR_TYPE_MASK
                if atype == NFQA_PACKET_HDR and alen >= NLATTR.size + 4:
                    pid = PACKET_ID.unpack_from(buf, a + NLATTR.size)[0]
                elif atype == NFQA_PAYLOAD:
                    payload = bytes(buf[a + NLATTR.size : a + alen])
                a += (alen + 3) & ~3
            if pid >= 0:
                out.append((pid, payload if payload is not None else b""))
        elif (
            mtype == NLMSG_ERROR
            and length >= NLMSG.size + ERRNO.size
            and ERRNO.unpack_from(buf, off + NLMSG.size)[0] != 0
        ):
            errors += 1
        off += (length + 3) & ~3
    return out, errors


class VerdictEncoder:
    """Builds the verdict datagram of one round for queue ``queue``."""

    def __init__(self, queue: int) -> None:
        size = _HDR + NLATTR.size + VERDICT.size
        attr = NLATTR.pack(NLATTR.size + VERDICT.size, NFQA_VERDICT_HDR)
        self._single = _header(queue, NFQNL_MSG_VERDICT, size) + attr
        self._batch = _header(queue, NFQNL_MSG_VERDICT_BATCH, size) + attr
        msize = size + NLATTR.size + MARK.size
        self._marked = _header(queue, NFQNL_MSG_VERDICT, msize) + attr
        self._mark_attr = NLATTR.pack(NLATTR.size + MARK.size, NFQA_MARK)

    def encode(
        self,
        accepts: list[int],
        drops: list[int],
        floor: int | None,
        marked: Sequence[tuple[list[int], int]] = (),
    ) -> bytes:
        """Verdicts for one round: ``drops``, ``accepts``, and ``marked``, groups of (ids, mark)
        accepted with a packet mark; ``floor`` is the lowest id still held (None: none held)."""
        single = self._single
        parts = [single + VERDICT.pack(NF_DROP, pid) for pid in drops]
        for ids, mark in marked:
            if ids:
                tail = self._mark_attr + MARK.pack(mark)
                parts.extend(self._marked + VERDICT.pack(NF_ACCEPT, pid) + tail for pid in ids)
        if accepts:
            top = max(accepts)
            if floor is None or top < floor:
                parts.append(self._batch + VERDICT.pack(NF_ACCEPT, top))
            else:
                below = [pid for pid in accepts if pid < floor]
                if below:
                    parts.append(self._batch + VERDICT.pack(NF_ACCEPT, max(below)))
                parts.extend(single + VERDICT.pack(NF_ACCEPT, pid) for pid in accepts if pid > floor)
        return b"".join(parts)


def packet_message(queue: int, pid: int, payload: bytes) -> bytes:
    """One NFQNL_MSG_PACKET as the kernel sends it (for tests and tools)."""
    hdr = NLATTR.pack(NLATTR.size + 7, NFQA_PACKET_HDR) + PACKET_ID.pack(pid) + b"\x08\x00\x03" + b"\0"
    pl = NLATTR.pack(NLATTR.size + len(payload), NFQA_PAYLOAD) + payload
    pl += b"\0" * (-len(pl) % 4)
    size = _HDR + len(hdr) + len(pl)
    return _header(queue, NFQNL_MSG_PACKET, size) + hdr + pl


def parse_verdicts(msg: bytes) -> list[tuple[str, int, int, int | None]]:
    """Decode a verdict datagram into (kind, verdict, id, mark) tuples, kind ``single`` or
    ``batch`` (for tests and tools)."""
    out: list[tuple[str, int, int, int | None]] = []
    off = 0
    while off + NLMSG.size <= len(msg):
        length, mtype = NLMSG.unpack_from(msg, off)[:2]
        kind = "batch" if mtype & 0xFF == NFQNL_MSG_VERDICT_BATCH else "single"
        a = off + _HDR
        verdict = pid = 0
        mark: int | None = None
        while a + NLATTR.size <= off + length:
            alen, atype = NLATTR.unpack_from(msg, a)
            if atype == NFQA_VERDICT_HDR:
                verdict, pid = VERDICT.unpack_from(msg, a + NLATTR.size)
            elif atype == NFQA_MARK:
                mark = MARK.unpack_from(msg, a + NLATTR.size)[0]
            a += (alen + 3) & ~3
        out.append((kind, verdict, pid, mark))
        off += (length + 3) & ~3
    return out
