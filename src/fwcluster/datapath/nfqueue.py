"""The NFQUEUE driver: moves packets from one queue into the engine and the engine's verdicts back.

It decides nothing. ``netfilterqueue`` binds the queue (copy mode, queue length, receive buffer);
the driver then reads the queue's netlink socket itself, many packets per wake-up but at most
``READ_BUDGET`` (so a flood cannot starve the instance's other work: the socket stays readable
and the event loop comes back after its other callbacks), and writes each round's verdicts as
one datagram (``netlink.VerdictEncoder``).

Fail closed: the kernel rule that feeds the queue has no bypass flag, so while no process reads
the queue (starting, stopped, crashed) the kernel drops what it would have queued. Every packet
read gets exactly one verdict from the engine; a packet the engine could not handle is a drop;
on close every held packet is dropped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from typing import Any

from netfilterqueue import NetfilterQueue

from fwcluster.datapath.netlink import NETLINK_NETFILTER, VerdictEncoder, parse_packets
from fwcluster.datapath.replies import ReplySender
from fwcluster.engine.engine import FAST_PATH_MARK, KERNEL_MARK, Engine

QUEUE_MAXLEN = 4096  # packets the kernel holds for us before it drops
READ_BUDGET = 256  # packets handled per wake-up at most
RECV_SIZE = 65536 + 4096  # one datagram: one packet (copy range at most 64 KiB) and its headers
RCVBUF = 8 * 1024 * 1024


def _unused(_pkt: Any) -> None:  # netfilterqueue's callback: the driver reads the socket itself
    pass


class NfqueueDriver:
    """Binds queue ``queue_num``; ``read`` feeds the engine, ``flush`` sends what it decided."""

    def __init__(self, queue_num: int, engine: Engine, replies: ReplySender | None = None) -> None:
        self.engine = engine
        self.counters = engine.counters
        self.packets = 0  # packets read from the queue (that reached user space)
        self.overruns = 0  # the kernel told us it dropped packets (ENOBUFS on the socket)
        self.verdict_errors = 0  # verdicts the kernel refused (should stay 0)
        self.marked = 0  # packets accepted with the fast-path mark (about one per flow)
        self.kernel_marked = 0  # first packets of flows handed to the kernel (kernel tracking)
        self._replies = replies
        self._encoder = VerdictEncoder(queue_num)
        self._buf = bytearray(RECV_SIZE)
        self._nfq = NetfilterQueue()
        self._nfq.bind(queue_num, _unused, max_len=QUEUE_MAXLEN, sock_len=RCVBUF // 2)
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER, fileno=os.dup(self._nfq.get_fd())
        )
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, now: float, budget: int = READ_BUDGET) -> int:
        """Hand up to ``budget`` queued packets to the engine; returns how many."""
        recv_into = self._sock.recv_into
        buf = self._buf
        packet = self.engine.packet
        n = 0
        while n < budget:
            try:
                size = recv_into(buf)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # the kernel dropped packets we were too slow for
                    self.overruns += 1
                    continue
                raise
            pkts, errors = parse_packets(buf, size)
            if errors:
                self.verdict_errors += errors
            for pid, payload in pkts:
                packet(pid, payload, now)
            n += len(pkts)
        self.packets += n
        return n

    def flush(self) -> None:
        """Send the verdicts (and REJECT answers) the engine has decided since the last flush."""
        e = self.engine
        if e.accepts or e.drops or e.marks or e.kernel_marks:
            marked = ((e.marks, FAST_PATH_MARK), (e.kernel_marks, KERNEL_MARK))
            msg = self._encoder.encode(e.accepts, e.drops, e.batch_floor(), marked)
            # On failure the ids stay with the engine's lists and the next flush covers them.
            self._sock.send(msg)
            self.marked += len(e.marks)
            self.kernel_marked += len(e.kernel_marks)
            e.accepts.clear()
            e.drops.clear()
            e.marks.clear()
            e.kernel_marks.clear()
        if e.replies:
            replies, e.replies = e.replies, []
            for reply in replies:
                self._send_reply(reply)

    def _send_reply(self, reply: bytes) -> None:
        if self._replies is None:
            return
        try:
            self._replies.send(reply)
            self.counters.replies_sent += 1
        except OSError:
            self.counters.replies_failed += 1

    def close(self) -> None:
        self.engine.abandon()
        with contextlib.suppress(OSError):
            self.flush()
        self._sock.close()
        self._nfq.unbind()
        if self._replies is not None:
            self._replies.close()
