"""The per-packet engine: the one owner of the flow table. Sans-I/O: events in, commands out.

Events (method calls, each with the time): a packet with its queue id (:meth:`packet`); a store
write confirmed, refused or failed (:meth:`write_done`); a record from the store, from the feed
or a snapshot (:meth:`record`, :meth:`load`) or answering a look-up (:meth:`lookup_done`); the
store going down or up (:meth:`set_store_up`); time passing (:meth:`tick`, :meth:`expire`).

Commands (lists the I/O layers drain after each event; ``denied``, the denied new connections
to log, is bounded and kept only while the I/O layer asks for it): verdicts (``accepts``, ``drops``,
``marks``: accepts that carry the fast-path mark, with
``held`` telling the driver which ids still wait, so a batch verdict never covers them),
REJECT answers to send (``replies``), store writes (``writes``: a ticket, the held packet's id
or :data:`NO_TICKET`, and the change) and store look-ups (``lookups``: packet id, flow key).

The transaction rule: a packet's state change becomes part of the table when its verdict is
final. A change nobody waits for (not shared, or shared with ``async`` confirmation) is written
at once and the packet accepted. A change that ``sync`` confirmation must wait for is decided but
not written (the core defers it): the packet is held, the change goes to the store, and only the
store's confirmation commits it and accepts the packet. A held packet that is dropped (the store
timed out, failed or refused the write, the store is down) leaves its flow exactly as it was, so
a retransmission is decided, held and written again.

A refused clean write means the store holds a newer state of the flow (another instance moved
it on). The engine takes that state and decides the held packet again against it, at most
``retries`` times within the packet's original deadline: the packet passes only with a change
the store accepted. (The earlier datapath released it as decided; that let through packets whose
transition the cluster never agreed to.)

The fast path. With ``fast_path`` on, a packet accepted on a flow whose committed state is
ESTABLISHED (UDP/ICMP: REPLIED), without a state change or with its change just committed, is
accepted with :data:`FAST_PATH_MARK`; the instance namespace's kernel rules save that mark in
the packet's conntrack entry, and the kernel forwards the rest of the flow itself. Packets that
can change a TCP state (SYN, FIN, RST) still come up, and a FIN or RST clears the mark in the
kernel, so the close is tracked (and shared) here. A flow moved here by a failover has no kernel
entry yet: its first packets come up, the replica or the store places them, and the flow is
marked again.

Kernel tracking. When nothing is shared (level ``none``) the engine has no transition to tell
anyone, so with ``kernel_tracking`` on it decides only a flow's first packet (the rules: a SYN,
a first UDP datagram, an echo request) and accepts it with :data:`KERNEL_MARK`: the kernel's
conntrack, which the namespace runs with window tracking (``be_liberal=0``), tracks the
handshake, the data and the close, and forwards what it calls established or related. What it
calls new (a retransmitted SYN) or invalid comes up again: the SYN is decided again, anything
else meets no flow here and is dropped, as the kernel's own firewall drops invalid packets.
Nothing of such a flow enters the table (its opening change is deferred and never committed).

A packet the local replica cannot place (no flow, or an invalid transition on a replica that may
be stale) is held while the store is asked, within a rate bound and a negative cache. When the
answer arrives the packet is decided again; a look-up that times out is a drop whatever
``on_timeout`` says, since that packet was never decided. Every packet gets exactly one verdict,
and its reason is counted once, when that verdict is final.

A miss may be a write still on its way. With ECMP steering the SYN crosses one instance and the
SYN-ACK another, about a tenth of a millisecond later, while the SYN's async write takes about
half a millisecond to reach the store; the client's ACK then races the SYN-ACK instance's write
the same way. So with ``lookup_retry`` set (ECMP steering, the opening states shared), a held packet
that may answer another instance's step (a SYN-ACK meeting no flow; a TCP packet the state of a
flow known here calls invalid: the handshake's next step, or a close the other direction's
instance wrote; a UDP/ICMP packet the rules refuse) and that the store's answer does not place
is asked about again after ``lookup_retry`` seconds, doubling, while the answer can still come
before its deadline, ``retry_window`` (at least ``hold_timeout``: on a busy machine that write can
take longer than the store's bound, and a drop costs the connection a retransmission); only the
last miss is cached negatively (a miss cached at once also dropped the retransmission).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum

from fwcluster.core.decision import Decision, Reason, StateChange, Verdict
from fwcluster.core.firewall import Firewall, Flow, FlowFacts
from fwcluster.core.flowtable import VERSION_MOD
from fwcluster.core.packet import Parsed, parse
from fwcluster.core.rules import PROTO_TCP, RuleSet
from fwcluster.core.states import CLOSING, REOPENABLE, FlowState
from fwcluster.engine.counters import Counters
from fwcluster.engine.lookups import LookupGate

NO_TICKET = -1  # a write no packet waits for
FAST_PATH_MARK = 0x1  # the packet (and then conntrack) mark bit of a flow the kernel forwards
KERNEL_MARK = 0x2  # ... of a flow the kernel tracks from its first packet on (kernel tracking)
_ACCEPT = Verdict.ACCEPT
_REJECT = Verdict.REJECT
_RULE_ACCEPT = Reason.RULE_ACCEPT
_TRACKED = Reason.TRACKED
_IGNORED = Reason.IGNORED
_SYN_RECV = FlowState.SYN_RECV
REFRESH_INTERVAL = 0.02  # seconds between two refreshes of one flow's state from the store
REFRESH_MAX = 10_000  # flows remembered; the memory starts over beyond this
STEPS_MAX = 10_000  # async writes in flight whose step is kept for a replay (ECMP)
# New flows: the states only a packet that opens a flow reaches.
_OPENING = frozenset({FlowState.SYN_SENT, FlowState.UNREPLIED})
_HANDSHAKE = frozenset({FlowState.SYN_SENT, FlowState.SYN_RECV})
# With ECMP steering a SYN or SYN-ACK the table ignores may open a new life of its four-tuple on
# a copy of an earlier life that this instance kept (see Engine.__init__): the SYN-ACK on these
# states (its SYN crossed another instance) ...
_STALE_ANSWER_STATES = frozenset(
    {
        FlowState.SYN_RECV, FlowState.ESTABLISHED, FlowState.FIN_WAIT, FlowState.CLOSE_WAIT,
        FlowState.LAST_ACK, FlowState.TIME_WAIT, FlowState.CLOSE,
    }
)  # fmt: skip
# ... the SYN on these (the kernel ignores it there; TIME_WAIT and CLOSE it reopens)
_STALE_SYN_STATES = frozenset(
    {FlowState.SYN_RECV, FlowState.ESTABLISHED, FlowState.FIN_WAIT, FlowState.CLOSE_WAIT, FlowState.LAST_ACK}
)
_SYN = 0x02
# A UDP/ICMP packet the rules refuse on these (or on no flow) may answer a request seen elsewhere.
_RETRY_STATES = frozenset({FlowState.UNREPLIED})
_SYN_ACK = 0x12
# A miss the shared table may resolve: the flow may live in the store (opened elsewhere, or moved
# on elsewhere while our replica is stale). A UDP/ICMP packet the rules refuse may be the reply to
# a request that crossed another instance.
_LOOKUP_REASONS = frozenset({Reason.NO_FLOW, Reason.INVALID_TRANSITION})
_LOOKUP_IF_NOT_TCP = frozenset({Reason.RULE_DROP, Reason.RULE_REJECT})
# Denied new connections: a packet that would open a flow, refused by a rule or the default
# policy, by a full table, or for want of the store. The I/O layer logs them, rate-limited
# (``Engine.denied``; instance/denied.py).
DENIED_REASONS = frozenset({Reason.RULE_DROP, Reason.RULE_REJECT, Reason.TABLE_FULL, Reason.OUTAGE})


class Outcome(IntEnum):
    """What became of a store write."""

    CONFIRMED = 0  # the store holds the change (and replicas acknowledged it, when asked)
    REFUSED = 1  # a clean write the store did not apply: it holds something newer
    FAILED = 2  # store error, outage, or too few replicas acknowledged in time


@dataclass(frozen=True)
class EnginePolicy:
    publish: frozenset[FlowState] = frozenset()  # the states written to the store (the sync level)
    confirm: bool = False  # sync confirmation: hold a packet until its change is confirmed
    hold_timeout: float = 0.05  # seconds a held packet waits for the store
    accept_on_timeout: bool = False  # an unconfirmed write's packet passes anyway (never a look-up's)
    # outage "refuse": no new flows while the store is unreachable (and a held write the outage
    # interrupted is dropped); False is "local": they are committed locally, resynced later
    refuse_new_in_outage: bool = True
    lookup_rate: float = 1000.0  # store look-ups per second at most
    retries: int = 2  # decisions again after a refused clean write
    fast_path: bool = False  # mark committed ESTABLISHED/REPLIED flows for the kernel to forward
    kernel_tracking: bool = False  # hand new flows to the kernel's conntrack (only when not sharing)
    refresh: bool = False  # refresh handshakes from the store without the fast path (see below)
    # states written too but never held for a confirmation: with ECMP steering, the opening
    # states a level does not publish (statetable/shared.py, ``opening_hints``)
    hints: frozenset[FlowState] = frozenset()
    # seconds before a miss that may be a write in flight is asked again (doubling; 0: never)
    lookup_retry: float = 0.0
    # seconds such a packet may wait in all (at least hold_timeout): a drop costs its connection
    # a retransmission, 1 s for a SYN-ACK, so waiting a few RTOs' worth of a busy store is cheaper
    retry_window: float = 0.25


_WRITE, _LOOKUP = 0, 1


class Held:
    """A packet waiting for the store."""

    __slots__ = ("again_at", "attempts", "buf", "change", "deadline", "key", "kind", "reason", "wait")

    def __init__(
        self, kind: int, deadline: float, buf: bytes, change: StateChange | None, reason: Reason,
        attempts: int, key: bytes = b"", wait: float = 0.0,
    ) -> None:  # fmt: skip
        self.kind = kind
        self.deadline = deadline
        self.buf = buf
        self.change = change  # the change to confirm (writes)
        self.reason = reason  # the reason the packet is accepted with once confirmed
        self.attempts = attempts
        self.key = key  # the flow the store is asked about (look-ups)
        self.wait = wait  # look-ups: the delay before the next ask after a miss (0: no retry)
        self.again_at = 0.0  # look-ups: when to ask again (0: a question is out)


class Engine:
    def __init__(
        self, firewall: Firewall, policy: EnginePolicy, counters: Counters | None = None, now: float = 0.0
    ) -> None:
        self.firewall = firewall
        self.policy = policy
        # how long a look-up that may answer another instance's opening step may hold its packet
        self._retry_hold = max(policy.hold_timeout, policy.retry_window)
        self.counters = counters if counters is not None else Counters()
        self.sharing = bool(policy.publish)
        self.store_up = self.sharing
        self.gate = LookupGate(policy.lookup_rate, now)
        # commands, drained by the I/O layers
        self.accepts: list[int] = []
        self.marks: list[int] = []  # accepted with FAST_PATH_MARK
        self.kernel_marks: list[int] = []  # accepted with KERNEL_MARK: new flows the kernel tracks
        self.drops: list[int] = []
        self.replies: list[bytes] = []
        self.writes: list[tuple[int, StateChange]] = []
        self.lookups: list[tuple[int, bytes]] = []
        self.held: dict[int, Held] = {}
        # Denied new connections (DENIED_REASONS) for the I/O layer to log, with ``log_denied``
        # on: (reason, packet), at most ``denied_room`` of them until it drains the list (it sets
        # the room, from its rate limit); the rest only counted in ``denied_skipped``. Nothing
        # is kept for an accepted packet, and nothing at all while ``log_denied`` is off.
        self.log_denied = False
        self.denied: list[tuple[Reason, bytes]] = []
        self.denied_room = 1
        self.denied_skipped = 0
        self._decide = firewall.decide
        # by state after the packet: does an accept carry the fast-path mark?
        fast = {FlowState.ESTABLISHED, FlowState.REPLIED} if policy.fast_path else set()
        self._fast = tuple(i in fast for i in range(16))
        firewall.set_fast_path(fast)  # its segments pass the tracker by: windows are relearned
        # With ECMP steering an instance may see only the server's side of a handshake: its
        # replica stays in SYN_RECV (the client's ACK crossed another instance) until the feed
        # brings ESTABLISHED, and the server's data all come up meanwhile. Such a packet passes as
        # it is and the engine asks the store for the flow's newer state without holding it.
        # ``refresh`` asks for it without the fast path too: with ``follow = "backup"`` the
        # stream of the instance that saw the client's ACK is not followed here.
        self._refresh_handshakes = (policy.fast_path or policy.refresh) and self.sharing
        # With ECMP steering an instance that carries the server's side of a flow keeps its copy
        # of a closed connection as far as it saw it (the client's FIN and final ACK crossed
        # another instance, whose stream it may not follow). When the client reuses the port,
        # the new life's SYN crosses another instance, and the server's SYN-ACK meets that old
        # copy here: the table ignores a SYN-ACK on ESTABLISHED, TIME_WAIT and the like (as the
        # kernel does), so it would pass without the SYN_RECV the client's ACK needs in the
        # store. Such a SYN-ACK is held for a look-up instead; a newer SYN_SENT in the store is
        # the new life (Firewall.merge, ``new_life``). The same on the client's side: its SYN meets
        # a copy here that never learned the close (written by the instance of the other
        # direction); the kernel's table ignores a SYN on ESTABLISHED or a closing state, so it
        # would pass without the SYN_SENT the SYN-ACK's instance needs. It is held for one
        # look-up: the store's close, if it has one, makes the SYN a reopen.
        self._ask_ignored = self.sharing and policy.lookup_retry > 0
        # With ECMP steering the two directions' instances change a flow at the same moment (the
        # two FINs of a close), both from the same version; the store keeps the first write and
        # refuses the second. The refused instance then replays its packet's step on the store's
        # state (Firewall.rebase) instead of losing it: the step of each async TCP write in
        # flight, by (key, version): (reply direction, TCP flags).
        self._steps: dict[tuple[bytes, int], tuple[bool, int]] | None = {} if self._ask_ignored else None
        self.replays = self._steps is not None  # the writer reports every async write's outcome
        self._refreshing: dict[bytes, float] = {}
        # Kernel tracking: with nothing to share, the engine decides a flow's first packet by the
        # rules and the kernel's conntrack tracks the rest (see the module doc).
        self.kernel_tracking = policy.kernel_tracking and not self.sharing
        # Just after a failover (the instance learns it from the store: instance/heartbeat.py),
        # a TCP segment that neither the table nor the store knows is picked up mid-stream
        # (Firewall.pickup): its connection was established on the failed instance in the
        # millisecond before it died, and the async write of that state died with it.
        self.pickup = False
        # the version of the policy the firewall's ruleset came from (fwcluster/policy.py;
        # 0: the config's rules; set_ruleset changes both)
        self.policy_version = 0
        self._set_deferred()

    def _set_deferred(self) -> None:
        deferred: set[FlowState] = set(self.policy.publish) if self.policy.confirm else set()
        if self.kernel_tracking:
            deferred |= _OPENING  # the kernel's flows: nothing of them stays in the table
        if self.sharing and not self.store_up and self.policy.refuse_new_in_outage:
            deferred |= _OPENING  # refused below: they must leave no trace
        self.firewall.set_deferred(deferred)

    # ------------------------------------------------------------------ events: packets
    def packet(self, pid: int, buf: bytes, now: float) -> None:
        """A packet from the queue. Exactly one verdict follows, now or when the store answers."""
        try:
            d = self._decide(buf, now)
            if d.event is None and d.verdict is _ACCEPT:  # the common case: nothing changed
                reason = d.reason
                if reason is _TRACKED and self._fast[d.after]:
                    self.marks.append(pid)
                elif reason is _IGNORED and self._ask_ignored and self._ask_stale(pid, buf, d, now):
                    return
                else:
                    self.accepts.append(pid)
                    if reason is _TRACKED and d.after is _SYN_RECV and self._refresh_handshakes:
                        self._refresh(buf, now)
                self.counters.by_reason[reason] += 1
                return
            self._settle(pid, buf, d, now, False, 0.0, 0)
        except Exception:
            self.counters.errors += 1
            self.held.pop(pid, None)
            self.drops.append(pid)

    def _settle(
        self, pid: int, buf: bytes, d: Decision, now: float, looked_up: bool, deadline: float, attempts: int
    ) -> None:
        """Everything but "accepted, nothing changed": state changes to share, drops, look-ups."""
        c = self.counters
        policy = self.policy
        ev = d.event
        if d.verdict is _ACCEPT:
            if ev is None:
                self._accept(pid, d.reason, d.after)
                return
            c.state_changes += 1
            if self.kernel_tracking and ev.after in _OPENING:
                self.kernel_marks.append(pid)
                c.kernel_tracked += 1
                c.by_reason[d.reason] += 1
                return
            if self.sharing and not self.store_up:
                if d.reason is _RULE_ACCEPT and policy.refuse_new_in_outage:
                    # The store is unreachable: no new flows (they could not be shared); the change
                    # was deferred, so nothing of it stays. Old flows go on.
                    c.refused_in_outage += 1
                    self._drop(pid, Reason.OUTAGE)
                    self._deny(Reason.OUTAGE, buf)
                    return
                if ev.after in policy.publish:
                    if policy.confirm:
                        if policy.refuse_new_in_outage:
                            self._unconfirmed(pid, ev, d.reason, now, Reason.STORE_FAILED)
                            return
                        if not self._commit(ev, now):  # deferred for confirmation: commit it here
                            self._drop(pid, Reason.TABLE_FULL)
                            self._deny(Reason.TABLE_FULL, buf)
                            return
                    # outage "local": committed locally; the resync after the outage shares it
                    c.unshared += 1
            elif ev.after in policy.publish:
                if policy.confirm:
                    if not deadline:
                        deadline = now + policy.hold_timeout
                    self._hold(pid, Held(_WRITE, deadline, buf, ev, d.reason, attempts))
                    self.writes.append((pid, ev))
                    return
                self.writes.append((NO_TICKET, ev))
                if self._steps is not None and ev.proto == PROTO_TCP:
                    self._note_step(buf, ev)
            elif ev.after in policy.hints:
                self.writes.append((NO_TICKET, ev))  # never waited for (see EnginePolicy.hints)
            self._accept(pid, d.reason, ev.after)
            return
        reason = d.reason
        if (
            not looked_up
            and self.sharing
            and self.store_up
            and (reason in _LOOKUP_REASONS or reason in _LOOKUP_IF_NOT_TCP)
        ):
            p = parse(buf)
            if isinstance(p, Parsed) and (reason in _LOOKUP_REASONS or p.proto != PROTO_TCP):
                key = p.related if p.related is not None else p.key
                if self.gate.may(key, now):
                    wait = policy.lookup_retry if self._answers_opening(p.proto, p.flags, d) else 0.0
                    self._ask(pid, buf, key, reason, attempts, wait, now)
                    return
                # Not asked: the store said a moment ago that it does not know this flow (a
                # retransmission after a miss). Just after a failover that is the pickup's case.
                if self.gate.recently_unknown(key, now) and self._pickup(buf, now):
                    self._settle(pid, buf, self._decide(buf, now), now, True, deadline, attempts)
                    return
        self._drop(pid, reason)
        if d.verdict is _REJECT and d.reply is not None:
            self.replies.append(d.reply)
        if self.log_denied and reason in DENIED_REASONS:  # the set test only while logging
            self._deny(reason, buf)

    def _deny(self, reason: Reason, buf: bytes) -> None:
        """A denied new connection, for the I/O layer's log (bounded: see ``denied``; nothing
        while ``log_denied`` is off). Called on drop paths only, never for an accept."""
        if not self.log_denied:
            return
        if len(self.denied) < self.denied_room:
            self.denied.append((reason, buf))
        else:
            self.denied_skipped += 1

    def _ask_stale(self, pid: int, buf: bytes, d: Decision, now: float) -> bool:
        """Hold an ignored SYN or SYN-ACK that may open a new life (see __init__) for a look-up:
        a SYN-ACK up to ``retry_window``, as any packet that may answer another instance's step
        (the SYN's write may be on its way), a SYN for one answer. Returns whether it is held
        (else it passes as ignored)."""
        if not self.store_up:
            return False
        stale = self._stale(buf, d)
        if stale is None:
            return False
        key, wait = stale
        if not self.gate.may(key, now):
            return False
        self.counters.stale_lookups += 1
        self._ask(pid, buf, key, _IGNORED, 0, wait, now)
        return True

    def _ask(
        self, pid: int, buf: bytes, key: bytes, reason: Reason, attempts: int, wait: float, now: float
    ) -> None:
        """Hold the packet while the store is asked about its flow; with ``wait`` (a packet that
        may answer another instance's step) asked again on a miss, up to ``retry_window``."""
        self.counters.lookups += 1
        until = now + (self._retry_hold if wait else self.policy.hold_timeout)
        self._hold(pid, Held(_LOOKUP, until, buf, None, reason, attempts, key, wait))
        self.lookups.append((pid, key))

    def _stale(self, buf: bytes, d: Decision) -> tuple[bytes, float] | None:
        """For an ignored SYN-ACK or SYN on a copy that may be of an earlier life: its flow and
        the delay before its look-up is asked again (0: asked once); None for any other packet."""
        if d.reason is not _IGNORED:
            return None
        p = parse(buf)
        if not isinstance(p, Parsed) or p.proto != PROTO_TCP or not p.flags & _SYN:
            return None
        if p.flags & _SYN_ACK == _SYN_ACK:
            return (p.key, self.policy.lookup_retry) if d.before in _STALE_ANSWER_STATES else None
        return (p.key, 0.0) if d.before in _STALE_SYN_STATES else None

    @staticmethod
    def _answers_opening(proto: int, flags: int, d: Decision) -> bool:
        """May the packet answer a step another instance saw (its write perhaps in flight)?"""
        if proto != PROTO_TCP:
            return d.before is FlowState.NONE or d.before in _RETRY_STATES
        if d.reason is Reason.NO_FLOW:
            return flags & _SYN_ACK == _SYN_ACK
        return True  # invalid on a flow known here: the other direction's instance moved it on

    def _refresh(self, buf: bytes, now: float) -> None:
        """Ask the store for a newer state of the packet's flow; nobody waits for the answer."""
        if not self.store_up:
            return
        p = parse(buf)
        if not isinstance(p, Parsed):
            return
        key = p.key
        refreshing = self._refreshing
        if refreshing.get(key, 0.0) > now:
            return
        if len(refreshing) >= REFRESH_MAX:
            refreshing.clear()
        refreshing[key] = now + REFRESH_INTERVAL
        self.counters.refreshes += 1
        self.lookups.append((NO_TICKET, key))

    def _note_step(self, buf: bytes, ev: StateChange) -> None:
        """Keep an async TCP write's step for a replay should the store refuse it (``_steps``)."""
        steps = self._steps
        assert steps is not None
        p = parse(buf)
        if not isinstance(p, Parsed):
            return
        if len(steps) >= STEPS_MAX:  # answers that never came (a failed batch): start over
            steps.clear()
        steps[(ev.key, ev.version)] = (p.from_lo != ev.orig_is_lo, p.flags)

    def _rebase(self, sent: FlowFacts, current: FlowFacts, now: float) -> bool:
        """A refused async write replayed on the store's state (see ``_steps``); True when that
        moved the flow on here and the result is written."""
        steps = self._steps
        if not steps:
            return False
        step = steps.pop((sent.key, sent.version), None)
        if step is None:
            return False
        ev = self.firewall.rebase(sent.key, sent.version, step[0], step[1], current, now)
        if ev is None:
            return False
        self.writes.append((NO_TICKET, ev))
        steps[(ev.key, ev.version)] = step  # refused again: replayed again
        self.counters.rebased += 1
        return True

    def _accept(self, pid: int, reason: Reason, after: FlowState = FlowState.NONE) -> None:
        """Accept; with the fast-path mark when the flow's (committed) state ``after`` allows it."""
        if reason is _TRACKED and self._fast[after]:
            self.marks.append(pid)
        else:
            self.accepts.append(pid)
        self.counters.by_reason[reason] += 1

    def _drop(self, pid: int, reason: Reason) -> None:
        self.drops.append(pid)
        self.counters.by_reason[reason] += 1

    def _hold(self, pid: int, h: Held) -> None:
        if pid not in self.held:
            self.counters.held += 1
        self.held[pid] = h

    def _unconfirmed(self, pid: int, ev: StateChange, reason: Reason, now: float, why: Reason) -> None:
        """A change sync confirmation waited for did not reach the store: the ``on_timeout``
        verdict. Accepting commits the change (the packet passed, so the flow moved on)."""
        if self.policy.accept_on_timeout:
            if self._commit(ev, now):
                self._accept(pid, reason)
            else:
                self._drop(pid, Reason.TABLE_FULL)
        else:
            self._drop(pid, why)

    # ------------------------------------------------------------------ events: the store
    def write_done(
        self,
        ticket: int,
        outcome: Outcome,
        current: FlowFacts | None,
        now: float,
        sent: FlowFacts | None = None,
    ) -> None:
        """A write came back. ``current`` is the store's record when it differs from what was
        sent (a refused clean write, or a reopen the store renumbered); ``sent``, the record
        written (for an async write, whose change the engine no longer holds)."""
        c = self.counters
        h = self.held.pop(ticket, None) if ticket != NO_TICKET else None
        if h is not None and h.kind != _WRITE:  # not ours: a look-up holds this id
            self.held[ticket] = h
            h = None
        if h is None:
            if outcome is Outcome.REFUSED:
                c.write_refused += 1
                if (
                    current is not None
                    and sent is not None
                    and (self._new_life(sent, current, now) or self._rebase(sent, current, now))
                ):
                    return
            elif sent is not None and self._steps:
                self._steps.pop((sent.key, sent.version), None)
            if current is not None:
                self._merge(current, now, "write")
            return
        assert h.change is not None
        if outcome is Outcome.CONFIRMED:
            if not self._commit(h.change, now):
                self._drop(ticket, Reason.TABLE_FULL)  # a new flow the full table has no room for
                self._deny(Reason.TABLE_FULL, h.buf)
                return
            if current is not None:
                self._merge(current, now, "write")
            self._accept(ticket, h.reason, h.change.after)
        elif outcome is Outcome.REFUSED and current is not None:
            c.write_refused += 1
            ev = h.change
            if current.state in REOPENABLE and ev.before in _HANDSHAKE and ev.after not in REOPENABLE:
                # A handshake seen here meets an earlier life of the same four-tuple, closed in
                # the store at a version this one has not passed (the SYN was not shared, or the
                # flow started afresh here): the connection goes on past the store's version.
                self.firewall.renumber(ev.key, current.version, now)
            else:
                self._merge(current, now, "write")
            if h.attempts >= self.policy.retries:
                self._drop(ticket, Reason.STORE_FAILED)
                return
            d = self._decide(h.buf, now)
            self._settle(ticket, h.buf, d, now, True, h.deadline, h.attempts + 1)
        elif self.sharing and not self.store_up and not self.policy.refuse_new_in_outage:
            # The store went down under this write (outage "local"): the packet was inspected and
            # its change is valid; it is committed here and written back by the resync, as any
            # change made during the outage. (A write the store is up for but did not confirm in
            # time, or too few replicas took, keeps the on_timeout verdict.)
            if self._commit(h.change, now):
                c.unshared += 1
                self._accept(ticket, h.reason, h.change.after)
            else:
                self._drop(ticket, Reason.TABLE_FULL)
        else:
            self._unconfirmed(ticket, h.change, h.reason, now, Reason.STORE_FAILED)

    def _new_life(self, sent: FlowFacts, current: FlowFacts, now: float) -> bool:
        """An async SYN_SENT write refused because the store holds an earlier life of the same
        four-tuple, closed (CLOSE, TIME_WAIT) at a version this table never saw: the client
        reused its port, and this instance had no entry of that life (another instance carried
        it, or it expired here first; with ECMP steering, also closing: see below). The SYN
        opened a new connection, as it would have reopened the closed entry had this table held
        it (the kernel's sSS), and it has passed: so the flow goes on past the store's version
        and is written again, instead of taking the closed record back, which would drop the
        SYN-ACK and every packet after it. (SYN_SENT
        is only ever written for the SYN that opens a life, so a refused one cannot be a late
        write of the life the store closed: that one was in the store before its close.)"""
        if sent.state is not FlowState.SYN_SENT:
            return False
        # With ECMP steering the store may hold the earlier life still closing (FIN_WAIT,
        # CLOSE_WAIT, LAST_ACK): each of its instances saw one direction of the close, and the
        # step that ended it did not reach the store. The opener's SYN means that life is over
        # (its socket is gone), and this SYN passed here as a new connection; taking the closing
        # record back made the new connection's ACK and data invalid on it.
        closing = current.state in CLOSING and self._ask_ignored
        if current.state not in REOPENABLE and not closing:
            return False
        key = sent.key
        st = self.firewall.state_of(key, now)
        if st is None or st in REOPENABLE:  # gone here, or closed here too: the store's is news
            return False
        if closing and st is not FlowState.SYN_SENT:  # the store takes only a SYN_SENT over a close
            return False
        version = (current.version + 1) % VERSION_MOD
        self.firewall.renumber(key, version, now)
        self.writes.append(
            (NO_TICKET, StateChange(key, sent.proto, current.state, st, sent.orig_is_lo, now, version))
        )
        self.counters.renumbered += 1
        return True

    def lookup_done(self, pid: int, rec: FlowFacts | None, now: float) -> None:
        """The store answered a look-up (``rec`` None: it does not know the flow)."""
        if pid == NO_TICKET:  # a refresh: nobody waits
            if rec is not None and self._merge(rec, now, "lookup"):
                self.counters.refreshed += 1
            return
        h = self.held.get(pid)
        if h is None or h.kind != _LOOKUP:
            return  # timed out already
        if h.again_at:
            return  # not asked now (an answer to an earlier question that came late)
        del self.held[pid]
        c = self.counters
        hit = False
        stale = h.reason is _IGNORED  # an ignored SYN or SYN-ACK that may open a new life
        if rec is not None:
            self.gate.known(rec.key)
            hit = self._merge(rec, now, "lookup", stale)
        if hit:
            c.lookup_hits += 1
            c.resolved_by_store += 1
        else:
            c.lookup_misses += 1
            if h.wait:
                # Decided once here: a decision that places the packet may have changed the table.
                d = self._decide(h.buf, now)
                if not self._unplaced(d) and not (stale and self._stale(h.buf, d) is not None):
                    # the feed placed it meanwhile
                    self._settle(pid, h.buf, d, now, True, h.deadline, h.attempts)
                    return
                if self._again(pid, h, now):
                    return  # the store may not have the other instance's write yet
            if rec is None:
                self.gate.unknown(h.key, now)
            self._pickup(h.buf, now)  # the store knows no more than the table
        d = self._decide(h.buf, now)
        self._settle(pid, h.buf, d, now, True, h.deadline, h.attempts)

    @staticmethod
    def _unplaced(d: Decision) -> bool:
        """A drop a look-up may change (such a decision leaves the table as it was)."""
        return d.verdict is not _ACCEPT and (d.reason in _LOOKUP_REASONS or d.reason in _LOOKUP_IF_NOT_TCP)

    def _again(self, pid: int, h: Held, now: float) -> bool:
        """Hold a packet the answer did not place for another look-up, if there is time for an
        answer to come before its deadline."""
        at = now + h.wait
        if at + h.wait > h.deadline:
            return False
        h.again_at = at
        h.wait *= 2
        self.held[pid] = h
        self.counters.lookup_retries += 1
        return True

    def _pickup(self, buf: bytes, now: float) -> bool:
        """A mid-stream pickup (``self.pickup``, see __init__), counted."""
        if not self.pickup or not self.firewall.pickup(buf, now):
            return False
        self.counters.picked_up += 1
        return True

    def lookup_failed(self, pid: int) -> None:
        """The store could not answer: the packet was never decided, so it is dropped."""
        h = self.held.get(pid)
        if h is not None and h.kind == _LOOKUP:
            del self.held[pid]
            self._drop(pid, Reason.LOOKUP_TIMEOUT)

    def record(self, rec: FlowFacts, now: float) -> bool:
        """A record from the feed: into the table if newer (and, for a new flow, if the table has
        room). Returns whether it changed the table."""
        if self._merge(rec, now, "feed"):
            self.gate.known(rec.key)
            return True
        return False

    def load(self, records: Iterable[FlowFacts], now: float) -> int:
        """A snapshot of the store (joining, or after an outage), within the table's bound."""
        table = self.firewall.table
        before = table.refused
        n = self.firewall.load(records, now)
        self.counters.flows_refused["load"] += table.refused - before
        return n

    def _merge(self, rec: FlowFacts, now: float, source: str, new_life: bool = False) -> bool:
        """The core's merge; a new flow a full table turned away is counted by ``source``."""
        table = self.firewall.table
        before = table.refused
        changed = self.firewall.merge(rec, now, new_life)
        if table.refused != before:
            self.counters.flows_refused[source] += 1
        return changed

    def _commit(self, ev: StateChange, now: float) -> bool:
        """The core's commit of a deferred change; False only when the change opens a flow the
        full table has no room for (counted). (A flow that moved on meanwhile is not a refusal:
        the newer knowledge wins and the packet passes, as before.)"""
        table = self.firewall.table
        before = table.refused
        self.firewall.commit(ev, now)
        if table.refused == before:
            return True
        self.counters.flows_refused["write"] += 1
        return False

    def set_store_up(self, up: bool) -> None:
        if self.sharing and up != self.store_up:
            self.store_up = up
            self._set_deferred()

    def set_ruleset(self, ruleset: RuleSet, version: int) -> None:
        """A new policy (fwcluster/policy.py), from the next packet on. Between two events, so
        between two packets: a packet is decided under one ruleset, never part under each. The
        rules decide only packets that would open a flow (Firewall._open): tracked flows, and
        flows learned from the store later (feed, look-up, snapshot), keep passing, as under the
        kernel's conntrack; a held packet decided again (a look-up's answer, a refused clean
        write) meets the new rules, since its verdict was not given yet."""
        self.firewall.ruleset = ruleset
        self.policy_version = version

    # ------------------------------------------------------------------ events: time
    def tick(self, now: float) -> None:
        """Held packets past their deadline get their verdict; look-ups due again are asked."""
        due = [(pid, h) for pid, h in self.held.items() if h.again_at and h.again_at <= now < h.deadline]
        for pid, h in due:
            h.again_at = 0.0
            if self.gate.may(h.key, now):
                self.counters.lookups += 1
                self.lookups.append((pid, h.key))
            else:  # over the rate: decided as the miss it was
                del self.held[pid]
                self._settle(pid, h.buf, self._decide(h.buf, now), now, True, h.deadline, h.attempts)
        expired = [pid for pid, h in self.held.items() if h.deadline <= now]
        for pid in expired:
            h = self.held.pop(pid)
            self.counters.hold_timeouts += 1
            if h.kind == _LOOKUP:
                self._drop(pid, Reason.LOOKUP_TIMEOUT)
            else:
                assert h.change is not None
                self._unconfirmed(pid, h.change, h.reason, now, Reason.STORE_TIMEOUT)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has work next: a deadline, or a look-up to ask again."""
        return min((h.again_at or h.deadline for h in self.held.values()), default=None)

    def expire(self, now: float, budget: int) -> int:
        """One bounded step of the expiry sweep; returns how many flows left the table."""
        return len(self.firewall.expire(now, budget))

    def abandon(self) -> None:
        """Stopping: every held packet is dropped (fail closed)."""
        for pid in self.held:
            self._drop(pid, Reason.STORE_TIMEOUT)
        self.held.clear()

    # ------------------------------------------------------------------ for the I/O layers
    def batch_floor(self) -> int | None:
        """The lowest id still held: a batch verdict must stay below it."""
        return min(self.held) if self.held else None

    def flows(self, now: float) -> Iterator[Flow]:
        return self.firewall.flows(now)

    def timeout_ms(self, state: FlowState, proto: int) -> int:
        return self.firewall.timeout_ms(state, proto)

    def __len__(self) -> int:
        return len(self.firewall)
