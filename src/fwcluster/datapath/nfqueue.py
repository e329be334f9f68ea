"""Read packets from one NFQUEUE and give every one of them a verdict.

Fail closed: the kernel rule that feeds the queue has no bypass flag, so while no process reads
the queue (starting, stopped, crashed) the kernel drops what it would have queued. Inside the
process every packet gets exactly one verdict; when anything goes wrong it is a drop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from time import time
from typing import Any

from netfilterqueue import NetfilterQueue

from fwcluster.core.decision import Decision, StateChange, Verdict
from fwcluster.datapath.counters import Counters
from fwcluster.datapath.replies import ReplySender

_ACCEPT = Verdict.ACCEPT
_REJECT = Verdict.REJECT
QUEUE_MAXLEN = 4096  # packets the kernel holds for us before it drops


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
        self._now = time()
        self._nfq = NetfilterQueue()
        self._nfq.bind(queue_num, self._make_handler(decide, on_change), max_len=QUEUE_MAXLEN)

    def fileno(self) -> int:
        fd: int = self._nfq.get_fd()
        return fd

    def process(self) -> None:
        """Handle every packet waiting in the queue, then return."""
        self._now = time()
        self._nfq.run(block=False)

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
                    pkt.accept()
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
        self._nfq.unbind()
        if self._replies is not None:
            self._replies.close()
