"""Read packets from one NFQUEUE and give every one of them a verdict.

Fail closed: the kernel rule that feeds the queue has no bypass flag, so while no process reads
the queue (starting, stopped, crashed) the kernel drops what it would have queued. Inside the
process every packet gets exactly one verdict; when anything goes wrong it is a drop.

Verdicts are batched. A drop is sent at once, packet by packet; accepts are collected and sent
as one NFQNL_MSG_VERDICT_BATCH ("accept every packet still queued with an id up to N") when the
queue is drained or ``BATCH`` accepts are pending, whichever comes first. Packets are queued and
read in id order and a dropped packet leaves the kernel's queue at once, so the batch covers
exactly the accepted ones. One verdict message per batch instead of per packet halves the CPU
an instance spends per connection (see docs/benchmarks.md). netfilterqueue does the receiving and
parsing; the batch message goes out on a duplicate of its netlink socket (same port id, which
the kernel requires of verdicts).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from struct import Struct
from time import monotonic
from typing import Any

from netfilterqueue import NetfilterQueue

from fwcluster.core.decision import Decision, StateChange, Verdict
from fwcluster.datapath.counters import Counters
from fwcluster.datapath.replies import ReplySender

_ACCEPT = Verdict.ACCEPT
_REJECT = Verdict.REJECT
QUEUE_MAXLEN = 4096  # packets the kernel holds for us before it drops
BATCH = 64  # at most this many accepted packets wait for their verdict

# struct nlmsghdr (host order) + struct nfgenmsg (res_id big-endian) + struct nlattr (host order)
# + struct nfqnl_msg_verdict_hdr (big-endian), as in linux/netfilter/nfnetlink_queue.h.
NETLINK_NETFILTER = 12
_NFNL_SUBSYS_QUEUE = 3
_NFQNL_MSG_VERDICT_BATCH = 3
_NFQA_VERDICT_HDR = 2
_NLM_F_REQUEST = 1
_NF_ACCEPT = 1
_NLMSG = Struct("=IHHII")
_NFGEN = Struct("!BBH")
_NLATTR = Struct("=HH")
_VERDICT = Struct("!II")


def _batch_header(queue_num: int) -> bytes:
    size = _NLMSG.size + _NFGEN.size + _NLATTR.size + _VERDICT.size
    return (
        _NLMSG.pack(size, (_NFNL_SUBSYS_QUEUE << 8) | _NFQNL_MSG_VERDICT_BATCH, _NLM_F_REQUEST, 0, 0)
        + _NFGEN.pack(socket.AF_UNSPEC, 0, queue_num)
        + _NLATTR.pack(_NLATTR.size + _VERDICT.size, _NFQA_VERDICT_HDR)
    )


class NfqueueDatapath:
    """Binds queue ``queue_num`` and runs ``decide`` on every packet."""

    def __init__(
        self,
        queue_num: int,
        decide: Callable[[bytes, float], Decision],
        on_change: Callable[[StateChange], None] | None,
        counters: Counters,
        replies: ReplySender | None = None,
    ) -> None:
        self.counters = counters
        self._replies = replies
        self._now = monotonic()
        self._pending_id = 0  # highest accepted packet id still waiting for the batch verdict
        self._pending = 0
        self._batch_header = _batch_header(queue_num)
        self._nfq = NetfilterQueue()
        self._nfq.bind(queue_num, self._make_handler(decide, on_change), max_len=QUEUE_MAXLEN)
        self._verdicts = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER, fileno=os.dup(self._nfq.get_fd())
        )

    def fileno(self) -> int:
        fd: int = self._nfq.get_fd()
        return fd

    def process(self) -> None:
        """Handle every packet waiting in the queue, then return."""
        self._now = monotonic()
        try:
            self._nfq.run(block=False)
        finally:
            self.flush()

    def flush(self) -> None:
        """Send the batch verdict for the accepted packets that wait for it."""
        if self._pending:
            # On failure the packets stay pending and the next flush (a higher id) covers them.
            self._verdicts.send(self._batch_header + _VERDICT.pack(_NF_ACCEPT, self._pending_id))
            self._pending = 0

    def _make_handler(
        self, decide: Callable[[bytes, float], Decision], on_change: Callable[[StateChange], None] | None
    ) -> Callable[[Any], None]:
        """The per-packet callback, as a closure over locals (the hot path: no attribute look-ups)."""
        counters = self.counters
        by_reason = counters.by_reason

        def on_packet(pkt: Any) -> None:
            # Called by netfilterqueue for each packet; nothing may escape from here.
            try:
                d = decide(pkt.get_payload(), self._now)
                by_reason[d.reason] += 1
                if d.event is not None:
                    counters.state_changes += 1
                    if on_change is not None:
                        on_change(d.event)
                if d.verdict is _ACCEPT:
                    self._pending_id = pkt.id
                    self._pending += 1
                    if self._pending >= BATCH:
                        self.flush()
                    return
                pkt.drop()
                if d.verdict is _REJECT and d.reply is not None:
                    self._send_reply(d.reply)
            except Exception:
                counters.errors += 1
                with contextlib.suppress(Exception):  # the verdict may already be given
                    pkt.drop()

        return on_packet

    def _send_reply(self, reply: bytes) -> None:
        if self._replies is None:
            return
        try:
            self._replies.send(reply)
            self.counters.replies_sent += 1
        except OSError:
            self.counters.replies_failed += 1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.flush()
        self._verdicts.close()
        self._nfq.unbind()
        if self._replies is not None:
            self._replies.close()
