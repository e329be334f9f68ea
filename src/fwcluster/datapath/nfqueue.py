"""Read packets from one NFQUEUE and give every one of them exactly one verdict.

Fail closed: the kernel rule that feeds the queue has no bypass flag, so while no process reads
the queue (starting, stopped, crashed) the kernel drops what it would have queued. Inside the
process every packet gets exactly one verdict; when anything goes wrong it is a drop.

Held packets. With ``confirm = "sync"`` a packet whose state change is published waits until the
store confirms the write; a packet the local replica cannot place (no flow, or a transition the
replica calls invalid) waits while the store is asked. Only that packet waits: the others keep
flowing. A held packet that the store does not answer within ``store.timeout_ms`` gets the
configured verdict (default drop), never a silent accept.

Verdicts are batched. A drop is sent at once. Accepts are collected and sent when the queue is
drained or ``BATCH`` are pending: as one NFQNL_MSG_VERDICT_BATCH ("accept every packet still
queued up to id N") when no packet is held, else as one datagram of per-packet verdicts (a batch
would release the held ones too). One message per batch instead of per packet halves the CPU an
instance spends per connection (docs/benchmarks.md). netfilterqueue receives and parses; verdict
messages go out on a duplicate of its netlink socket (same port id, which the kernel requires).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from functools import partial
from struct import Struct
from time import monotonic
from typing import Any

from netfilterqueue import NetfilterQueue

from fwcluster.core.decision import Decision, Reason, Verdict
from fwcluster.core.firewall import Firewall
from fwcluster.core.packet import Parsed, parse
from fwcluster.datapath.counters import Counters
from fwcluster.datapath.replies import ReplySender
from fwcluster.statetable.shared import SharedTable

_ACCEPT = Verdict.ACCEPT
_REJECT = Verdict.REJECT
QUEUE_MAXLEN = 4096  # packets the kernel holds for us before it drops
BATCH = 64  # at most this many accepted packets wait for their verdict

# A miss the shared table may resolve: the flow may live in the store (opened elsewhere, or moved
# on elsewhere while our replica is stale). RULE_DROP/REJECT of UDP/ICMP may be a reply whose
# request crossed another instance.
_LOOKUP_REASONS = frozenset({Reason.NO_FLOW, Reason.INVALID_TRANSITION})
_LOOKUP_IF_NOT_TCP = frozenset({Reason.RULE_DROP, Reason.RULE_REJECT})

# struct nlmsghdr (host order) + struct nfgenmsg (res_id big-endian) + struct nlattr (host order)
# + struct nfqnl_msg_verdict_hdr (big-endian), as in linux/netfilter/nfnetlink_queue.h.
NETLINK_NETFILTER = 12
_NFNL_SUBSYS_QUEUE = 3
_NFQNL_MSG_VERDICT = 1
_NFQNL_MSG_VERDICT_BATCH = 3
_NFQA_VERDICT_HDR = 2
_NLM_F_REQUEST = 1
_NF_ACCEPT = 1
_NLMSG = Struct("=IHHII")
_NFGEN = Struct("!BBH")
_NLATTR = Struct("=HH")
_VERDICT = Struct("!II")


def _verdict_header(queue_num: int, msg_type: int) -> bytes:
    size = _NLMSG.size + _NFGEN.size + _NLATTR.size + _VERDICT.size
    return (
        _NLMSG.pack(size, (_NFNL_SUBSYS_QUEUE << 8) | msg_type, _NLM_F_REQUEST, 0, 0)
        + _NFGEN.pack(socket.AF_UNSPEC, 0, queue_num)
        + _NLATTR.pack(_NLATTR.size + _VERDICT.size, _NFQA_VERDICT_HDR)
    )


class NfqueueDatapath:
    """Binds queue ``queue_num`` and runs the firewall on every packet."""

    def __init__(
        self,
        queue_num: int,
        firewall: Firewall,
        counters: Counters,
        replies: ReplySender | None = None,
        table: SharedTable | None = None,
        hold_timeout: float = 0.05,
        accept_on_timeout: bool = False,
        refuse_new_in_outage: bool = True,
    ) -> None:
        self.counters = counters
        self.firewall = firewall
        self.table = table if table is not None and table.enabled else None
        self.hold_timeout = hold_timeout
        self.accept_on_timeout = accept_on_timeout
        self.refuse_new_in_outage = refuse_new_in_outage
        self._replies = replies
        self._now = monotonic()
        self._pending: list[int] = []  # accepted packet ids still waiting for their verdict
        # packet id -> (netfilterqueue packet, deadline, bytes to decide again after a look-up)
        self._held: dict[int, tuple[Any, float, bytes | None]] = {}
        self._ticker: asyncio.TimerHandle | None = None
        self._tick_interval = max(0.001, hold_timeout / 5)
        self._flush_soon = False
        self._batch_header = _verdict_header(queue_num, _NFQNL_MSG_VERDICT_BATCH)
        self._single_header = _verdict_header(queue_num, _NFQNL_MSG_VERDICT)
        self._nfq = NetfilterQueue()
        self._nfq.bind(queue_num, self._make_handler(), max_len=QUEUE_MAXLEN)
        self._verdicts = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER, fileno=os.dup(self._nfq.get_fd())
        )

    def fileno(self) -> int:
        fd: int = self._nfq.get_fd()
        return fd

    @property
    def held(self) -> int:
        return len(self._held)

    def process(self) -> None:
        """Handle every packet waiting in the queue, then return."""
        self._now = monotonic()
        try:
            self._nfq.run(block=False)
        finally:
            self.flush()

    def flush(self) -> None:
        """Send the verdicts of the accepted packets that wait for them."""
        self._flush_soon = False
        pending = self._pending
        if not pending:
            return
        if self._held:
            hdr = self._single_header
            msg = b"".join([hdr + _VERDICT.pack(_NF_ACCEPT, pid) for pid in pending])
        else:
            msg = self._batch_header + _VERDICT.pack(_NF_ACCEPT, pending[-1])
        # On failure the ids stay pending and the next flush covers them.
        self._verdicts.send(msg)
        self._pending = []

    def _accept(self, pid: int) -> None:
        self._pending.append(pid)
        if len(self._pending) >= BATCH:
            self.flush()

    # ------------------------------------------------------------------ per packet
    def _make_handler(self) -> Callable[[Any], None]:
        """The per-packet callback, as a closure over locals (the hot path: no attribute look-ups)."""
        counters = self.counters
        by_reason = counters.by_reason
        decide = self.firewall.decide
        table = self.table
        publish_states = table.publish_states if table is not None else frozenset()
        accept = self._accept
        handle_slow = self._slow

        def on_packet(pkt: Any) -> None:
            # Called by netfilterqueue for each packet; nothing may escape from here.
            try:
                buf = pkt.get_payload()
                d = decide(buf, self._now)
                by_reason[d.reason] += 1
                ev = d.event
                if ev is not None:
                    counters.state_changes += 1
                # Fast path: accepted, and nothing to publish (new flows always carry an event, so
                # the outage check for them happens on the slow path).
                if d.verdict is _ACCEPT and (
                    table is None or ev is None or (ev.after not in publish_states and table.store_up)
                ):
                    accept(pkt.id)
                    return
                handle_slow(pkt, buf, d)
            except Exception:
                counters.errors += 1
                self._drop(pkt)

        return on_packet

    def _slow(self, pkt: Any, buf: bytes, d: Decision, retried: bool = False) -> None:
        """Everything but "accept, nothing to publish": rejects, drops, store work, outages."""
        table = self.table
        if d.verdict is _ACCEPT:
            ev = d.event
            outage = table is not None and not table.store_up
            if outage and d.reason is Reason.RULE_ACCEPT and self.refuse_new_in_outage:
                # The store is unreachable: no new flows (they could not be shared), old ones go on.
                if ev is not None:
                    self.firewall.table.remove(ev.key)
                self.counters.refused_in_outage += 1
                self._drop(pkt)
                return
            if table is None or ev is None or ev.after not in table.publish_states:
                self._accept(pkt.id)
                return
            if table.sync_confirm:
                self._hold(pkt, table.publish_confirmed(ev), None)
                return
            table.publish(ev)
            self._accept(pkt.id)
            return
        if (
            table is not None
            and not retried
            and (d.reason in _LOOKUP_REASONS or (d.reason in _LOOKUP_IF_NOT_TCP and not _is_tcp(buf)))
        ):
            key = _lookup_key(buf)
            if key is not None and table.may_lookup(key):
                self._hold(pkt, asyncio.ensure_future(table.lookup(key)), buf)
                return
        self._drop(pkt)
        if d.verdict is _REJECT and d.reply is not None:
            self._send_reply(d.reply)

    def _hold(self, pkt: Any, fut: asyncio.Future[bool], retry_buf: bytes | None) -> None:
        """Keep ``pkt`` until ``fut`` resolves (or the bound passes); other packets go on.

        Every hold has the same bound, so the held dict is in deadline order: one ticker expires
        from its front, instead of a timer per packet."""
        pid = pkt.id
        self._held[pid] = (pkt, monotonic() + self.hold_timeout, retry_buf)
        self.counters.held += 1
        fut.add_done_callback(partial(self._resolved, pid))
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().call_later(self._tick_interval, self._tick)

    def _resolved(self, pid: int, f: asyncio.Future[bool]) -> None:
        entry = self._held.pop(pid, None)
        if entry is None:
            return  # already timed out
        pkt, _, retry_buf = entry
        try:
            ok = not f.cancelled() and f.exception() is None and f.result()
            if retry_buf is None:  # a write to confirm: the packet passes as decided, or times out
                if ok:
                    self._pending.append(pid)
                else:
                    self._timed_out(pkt)
            elif ok:  # the store taught the replica something newer: decide again
                self.counters.resolved_by_store += 1
                self._now = monotonic()
                d = self.firewall.decide(retry_buf, self._now)
                self.counters.by_reason[d.reason] += 1
                self._slow(pkt, retry_buf, d, retried=True)
            else:
                self._drop(pkt)  # the store does not know the flow either: invalid
        except Exception:
            self.counters.errors += 1
            self._drop(pkt)
        self._schedule_flush()

    def _tick(self) -> None:
        """Give the timeout verdict to held packets past their bound (the front of the dict)."""
        self._ticker = None
        now = monotonic()
        held = self._held
        expired = []
        for pid, (_, deadline, _) in held.items():
            if deadline > now:
                break
            expired.append(pid)
        for pid in expired:
            pkt = held.pop(pid)[0]
            self.counters.hold_timeouts += 1
            self._timed_out(pkt)
        if expired:
            self._schedule_flush()
        if held:
            self._ticker = asyncio.get_running_loop().call_later(self._tick_interval, self._tick)

    def _timed_out(self, pkt: Any) -> None:
        if self.accept_on_timeout:
            self._release(pkt.id)
        else:
            self._drop(pkt)

    def _release(self, pid: int) -> None:
        self._pending.append(pid)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._safe_flush)

    def _safe_flush(self) -> None:
        try:
            self.flush()
        except OSError:
            self.counters.errors += 1

    def _drop(self, pkt: Any) -> None:
        with contextlib.suppress(Exception):  # the verdict may already be given
            pkt.drop()

    def _send_reply(self, reply: bytes) -> None:
        if self._replies is None:
            return
        try:
            self._replies.send(reply)
            self.counters.replies_sent += 1
        except OSError:
            self.counters.replies_failed += 1

    def close(self) -> None:
        for pkt, _, _ in list(self._held.values()):
            self._drop(pkt)
        self._held.clear()
        if self._ticker is not None:
            self._ticker.cancel()
        with contextlib.suppress(OSError):
            self.flush()
        self._verdicts.close()
        self._nfq.unbind()
        if self._replies is not None:
            self._replies.close()


def _lookup_key(buf: bytes) -> bytes | None:
    """The flow to ask the store about: the packet's own, or the one an ICMP error quotes."""
    p = parse(buf)
    if not isinstance(p, Parsed):
        return None
    return p.related if p.related is not None else p.key


def _is_tcp(buf: bytes) -> bool:
    return buf[9 if buf[0] >> 4 == 4 else 6] == 6
