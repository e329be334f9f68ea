"""The stateful firewall core: ``decide(packet bytes, now) -> Decision``. Pure: no I/O, no clock.

One call parses the packet, finds its flow in the local table, steps the protocol's state
machine, consults the rules for packets that would open a flow, and returns the verdict with
the state before and after and, when the state changed, the :class:`StateChange` to publish.

Transactions. A change to a state in :attr:`Firewall.deferred` is decided but not written:
the caller (the engine) commits it with :meth:`Firewall.commit` once the packet's verdict is
final (the store confirmed it), or forgets it, and the flow stays exactly as it was. Every other
change is written at once. Records learned from elsewhere come in through :meth:`merge` and
:meth:`load`, which never move a flow backwards; the packed encoding stays in this package.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from fwcluster.core.decision import Decision, Reason, StateChange, Verdict
from fwcluster.core.flowtable import (
    EXPIRY_SHIFT,
    LOW_MASK,
    ORIG_IS_LO,
    STATE_MASK,
    VERSION_MASK,
    VERSION_MOD,
    WINDOW_MASK,
    WINDOW_SHIFT,
    FlowTable,
    bump,
    next_version,
    pack,
    version_newer,
)
from fwcluster.core.packet import (
    ACK,
    FIN,
    ICMP6_ECHO_REPLY,
    ICMP6_ECHO_REQUEST,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    RST,
    SYN,
    Parsed,
    parse,
    tcp_checksum_ok,
)
from fwcluster.core.reject import build_reject
from fwcluster.core.rules import PROTO_TCP, PROTO_UDP, Action, RuleSet
from fwcluster.core.states import RANK, REOPENABLE, TCP_STATES, FlowState
from fwcluster.core.tcp import BAD_FLAGS_RESULT, FLAG_MASK, IG, IV, SS, TCP_NEXT, TW
from fwcluster.core.timeouts import Timeouts
from fwcluster.core.window import ACCEPT as _W_ACCEPT
from fwcluster.core.window import relearn, segment, step

_new = tuple.__new__
_S = [FlowState(i) if i in FlowState._value2member_map_ else FlowState.NONE for i in range(16)]
_NONE = FlowState.NONE
_HANDSHAKE = frozenset({FlowState.SYN_SENT, FlowState.SYN_RECV})
_ACCEPT = Verdict.ACCEPT
_DROP = Verdict.DROP
_UNREPLIED = FlowState.UNREPLIED
_REPLIED = FlowState.REPLIED
# Echo types per IP version: ICMPv4 type 128 or ICMPv6 type 8 is no echo.
_ECHO_REQUEST = {4: ICMP_ECHO_REQUEST, 6: ICMP6_ECHO_REQUEST}
_ECHO_REPLY = {4: ICMP_ECHO_REPLY, 6: ICMP6_ECHO_REPLY}


def _invalid(reason: Reason) -> Decision:
    return Decision(Verdict.DROP, reason, _NONE, _NONE, None)


# Decisions without a flow are constants: no allocation on the paths an attacker controls.
_INVALID = {r: _invalid(r) for r in Reason}
_TABLE_FULL = _INVALID[Reason.TABLE_FULL]
_NO_FLOW = _INVALID[Reason.NO_FLOW]
_BAD_FLAGS = _INVALID[Reason.BAD_TCP_FLAGS]
_RULE_DROP = _INVALID[Reason.RULE_DROP]
_BAD_CHECKSUM = _INVALID[Reason.BAD_CHECKSUM]
_OUT_OF_WINDOW = _INVALID[Reason.OUT_OF_WINDOW]
_WINDOW_BITS = WINDOW_MASK << WINDOW_SHIFT
# A TCP flow this instance has not seen for this long gets its window relearned: its segments
# may have crossed another instance meanwhile (steering moved it away and back), whose changes
# in state reach this replica but whose windows do not. A blind RST still cannot close it then.
WINDOW_STALE_MS = 1000


def _ip_end(buf: bytes, version: int) -> int:
    """Where the IP packet ends (its own length, not the buffer's: link padding is not payload)."""
    if version == 4:
        return (buf[2] << 8) | buf[3]
    return 40 + ((buf[4] << 8) | buf[5])


_CLOSING_FLAGS = FIN | RST


class FlowFacts(Protocol):
    """What a record from elsewhere (the shared store) tells about a flow."""

    @property
    def key(self) -> bytes: ...
    @property
    def state(self) -> FlowState: ...
    @property
    def orig_is_lo(self) -> bool: ...
    @property
    def version(self) -> int: ...
    @property
    def proto(self) -> int: ...


class Flow(tuple[bytes, FlowState, bool, int, int]):
    """(key, state, orig_is_lo, version, proto) of a live flow, as :meth:`Firewall.flows` yields."""


class Firewall:
    """Rules plus connection tracking for one instance."""

    def __init__(
        self,
        ruleset: RuleSet,
        timeouts: Timeouts,
        max_flows: int,
        *,
        windows: bool = True,
        one_way: bool = False,
    ) -> None:
        """``windows``: track TCP sequence windows (the kernel's default; off is its be_liberal);
        ``one_way``: an instance may see only one direction of a flow (ECMP steering), so each
        direction is judged on its own segments (core/window.py)."""
        self.ruleset = ruleset
        self.windows = windows
        self.one_way = one_way
        self._relearn = [False] * 16
        self.timeouts = timeouts
        self.table = FlowTable(max_flows)
        t = timeouts
        ms = [0] * 16
        for state, seconds in (
            (FlowState.SYN_SENT, t.tcp_syn_sent),
            (FlowState.SYN_RECV, t.tcp_syn_recv),
            (FlowState.ESTABLISHED, t.tcp_established),
            (FlowState.FIN_WAIT, t.tcp_fin_wait),
            (FlowState.CLOSE_WAIT, t.tcp_close_wait),
            (FlowState.LAST_ACK, t.tcp_last_ack),
            (FlowState.TIME_WAIT, t.tcp_time_wait),
            (FlowState.CLOSE, t.tcp_close),
            (FlowState.SYN_SENT2, t.tcp_syn_sent2),
        ):
            ms[state] = int(seconds * 1000)
        self._tcp_timeout_ms = tuple(ms)
        self._udp_ms = (int(t.udp * 1000), int(t.udp_stream * 1000))  # unreplied, replied
        self._icmp_ms = int(t.icmp * 1000)
        self._defer = [False] * 16
        self.deferred: frozenset[FlowState] = frozenset()

    def set_fast_path(self, states: Iterable[FlowState]) -> None:
        """Flows entering these TCP states go on the kernel's fast path: the segments that follow
        pass this tracker by, so the window is relearned from the next one that comes up."""
        fast = set(states)
        self._relearn = [i in fast for i in range(16)]

    def set_deferred(self, states: Iterable[FlowState]) -> None:
        """Changes to these states are decided but left for :meth:`commit` (see the module doc)."""
        self.deferred = frozenset(states)
        self._defer = [
            FlowState(i) in self.deferred if i in FlowState._value2member_map_ else False for i in range(16)
        ]

    # ------------------------------------------------------------------ per packet
    def decide(self, buf: bytes, now: float) -> Decision:
        p = parse(buf)
        if not isinstance(p, Parsed):
            return _INVALID[p]
        now_ms = int(now * 1000)
        flows = self.table.flows
        key = p.key
        v = flows.get(key)
        if v is not None and (v >> EXPIRY_SHIFT) <= now_ms:
            v = None  # expired: the packet meets no flow (the sweep removes the entry)
        proto = p.proto
        if proto == PROTO_TCP:
            return self._tcp(p, buf, key, v, now, now_ms)
        if proto == PROTO_UDP:
            return self._udp(p, buf, key, v, now, now_ms)
        return self._icmp(p, buf, key, v, now, now_ms)

    def _tcp(self, p: Parsed, buf: bytes, key: bytes, v: int | None, now: float, now_ms: int) -> Decision:
        flags = p.flags
        windows = self.windows
        if v is None:
            nxt = TCP_NEXT[((flags & FLAG_MASK) << 4)]  # ORIGINAL direction, state NONE
            if nxt == BAD_FLAGS_RESULT:
                return _BAD_FLAGS
            if nxt != SS:
                return _NO_FLOW  # SYN-ACK, bare ACK, FIN, RST with no connection
            w = 0
            if windows:
                verdict, w = step(0, True, *segment(buf, p.l4, _ip_end(buf, p.version)), 0, SS, self.one_way)
                if not verdict:
                    return _OUT_OF_WINDOW  # a SYN whose TCP header cannot be read
            return self._open(
                p, buf, key, FlowState.SYN_SENT, self._tcp_timeout_ms[SS], now, now_ms, window=w
            )
        if flags & _CLOSING_FLAGS and not tcp_checksum_ok(buf, p):
            # A RST or FIN the endpoint discards must not close the flow here (the kernel checks
            # every checksum; checking the closing segments costs little: few packets carry them).
            return _BAD_CHECKSUM
        state = v & STATE_MASK
        orig_is_lo = (v & ORIG_IS_LO) != 0
        reply = 1024 if p.from_lo != orig_is_lo else 0
        nxt = TCP_NEXT[reply | ((flags & FLAG_MASK) << 4) | state]
        if windows and nxt <= IV:
            # The sequence window (core/window.py), after the state table as in the kernel:
            # INVALID drops, IGNORE passes without a state change, ACCEPT goes on.
            w = (v >> WINDOW_SHIFT) & WINDOW_MASK
            if w and now_ms - ((v >> EXPIRY_SHIFT) - self._tcp_timeout_ms[state]) > WINDOW_STALE_MS:
                # Not seen here for a while: the flow may have crossed another instance meanwhile
                # (a bucket moved away and back) and its stream gone far past this window.
                w = relearn(w)
            verdict, w = step(
                w, not reply, *segment(buf, p.l4, _ip_end(buf, p.version)), state, nxt, self.one_way
            )
            if verdict != _W_ACCEPT and nxt < IG:
                st = _S[state]
                if not verdict:
                    return _new(Decision, (_DROP, Reason.OUT_OF_WINDOW, st, st, None, None))
                # passes, the state stays; what the window learned is kept
                self.table.flows[key] = (v & ~_WINDOW_BITS) | (w << WINDOW_SHIFT)
                return _new(Decision, (_ACCEPT, Reason.IGNORED, st, st, None, None))
            if self._relearn[nxt]:
                w = relearn(w)  # the kernel forwards what follows: the window is stale by the FIN
        else:
            w = (v >> WINDOW_SHIFT) & WINDOW_MASK
        if nxt >= IG:
            if nxt == IG:
                st = _S[state]
                return _new(Decision, (_ACCEPT, Reason.IGNORED, st, st, None, None))
            st = _S[state]
            reason = Reason.BAD_TCP_FLAGS if nxt == BAD_FLAGS_RESULT else Reason.INVALID_TRANSITION
            return _new(Decision, (_DROP, reason, st, st, None, None))
        if nxt == SS and state >= TW and not reply:
            # A new SYN on a connection in TIME_WAIT or CLOSE reopens it (RFC 1122): it is a new
            # connection and passes the rules again, as in the kernel.
            return self._open(
                p, buf, key, FlowState.SYN_SENT, self._tcp_timeout_ms[SS], now, now_ms, _S[state], w
            )
        expiry = (now_ms + self._tcp_timeout_ms[nxt]) << EXPIRY_SHIFT
        if nxt == state:
            self.table.flows[key] = expiry | (w << WINDOW_SHIFT) | (v & LOW_MASK)
            st = _S[state]
            return _new(Decision, (_ACCEPT, Reason.TRACKED, st, st, None, None))
        low = bump(v)
        if not self._defer[nxt]:
            self.table.flows[key] = expiry | (w << WINDOW_SHIFT) | low | nxt
        before, after = _S[state], _S[nxt]
        ev = _new(StateChange, (key, PROTO_TCP, before, after, orig_is_lo, now, low >> 8, w))
        return _new(Decision, (_ACCEPT, Reason.TRACKED, before, after, ev, None))

    def _udp(self, p: Parsed, buf: bytes, key: bytes, v: int | None, now: float, now_ms: int) -> Decision:
        if v is None:
            return self._open(p, buf, key, _UNREPLIED, self._udp_ms[0], now, now_ms)
        return self._answer(p, key, v, now, now_ms, self._udp_ms)

    def _icmp(self, p: Parsed, buf: bytes, key: bytes, v: int | None, now: float, now_ms: int) -> Decision:
        itype = p.flags
        if p.related is not None:
            rv = self.table.get(p.related, now_ms)
            if rv is None:
                return _NO_FLOW
            st = _S[rv & STATE_MASK]
            return _new(Decision, (_ACCEPT, Reason.RELATED, st, st, None, None))
        if itype == _ECHO_REQUEST[p.version]:
            if v is None:
                return self._open(p, buf, key, _UNREPLIED, self._icmp_ms, now, now_ms)
            return self._answer(p, key, v, now, now_ms, (self._icmp_ms, self._icmp_ms))
        if itype == _ECHO_REPLY[p.version]:
            if v is None:
                return _NO_FLOW
            return self._answer(p, key, v, now, now_ms, (self._icmp_ms, self._icmp_ms))
        return _INVALID[Reason.UNTRACKED_ICMP]

    def _answer(
        self, p: Parsed, key: bytes, v: int, now: float, now_ms: int, timeout_ms: tuple[int, int]
    ) -> Decision:
        """UDP and ICMP echo: a packet in the reply direction turns UNREPLIED into REPLIED."""
        state = v & STATE_MASK
        orig_is_lo = (v & ORIG_IS_LO) != 0
        nxt = _REPLIED if state == _UNREPLIED and p.from_lo != orig_is_lo else state
        expiry = (now_ms + timeout_ms[nxt == _REPLIED]) << EXPIRY_SHIFT
        if nxt == state:
            self.table.flows[key] = expiry | (v & LOW_MASK)
            st = _S[state]
            return _new(Decision, (_ACCEPT, Reason.TRACKED, st, st, None, None))
        low = bump(v)
        if not self._defer[nxt]:
            self.table.flows[key] = expiry | low | nxt
        ev = _new(StateChange, (key, p.proto, _UNREPLIED, _REPLIED, orig_is_lo, now, low >> 8, 0))
        return _new(Decision, (_ACCEPT, Reason.TRACKED, _UNREPLIED, _REPLIED, ev, None))

    def _open(
        self,
        p: Parsed,
        buf: bytes,
        key: bytes,
        state: FlowState,
        timeout_ms: int,
        now: float,
        now_ms: int,
        before: FlowState = _NONE,
        window: int = 0,
    ) -> Decision:
        """A packet that would open a flow: the rules decide, then the table must have room."""
        action, _ = self.ruleset.evaluate(
            p.proto, p.version, int.from_bytes(p.src), int.from_bytes(p.dst), p.sport, p.dport
        )
        if action != Action.ACCEPT:
            if action == Action.DROP:
                return _RULE_DROP
            return Decision(Verdict.REJECT, Reason.RULE_REJECT, _NONE, _NONE, None, build_reject(p, buf))
        table = self.table
        flows = table.flows
        if len(flows) >= table.max_flows and key not in flows:  # a reopen or a stale key needs no room
            table.sweep(now, 256)  # reclaim expired flows first
            if len(flows) >= table.max_flows:
                return _TABLE_FULL  # tracked flows are never evicted to make room for new ones
        # A reopened connection keeps counting versions, so the store sees it move forward.
        old = flows.get(key)
        version = next_version((old & VERSION_MASK) >> 8) if old is not None and before != _NONE else 1
        if not self._defer[state]:
            flows[key] = (
                ((now_ms + timeout_ms) << EXPIRY_SHIFT)
                | (window << WINDOW_SHIFT)
                | (version << 8)
                | (ORIG_IS_LO if p.from_lo else 0)
                | state
            )
        ev = _new(StateChange, (key, p.proto, before, state, p.from_lo, now, version, window))
        return _new(Decision, (_ACCEPT, Reason.RULE_ACCEPT, before, state, ev, None))

    # ------------------------------------------------------------------ transactions
    def commit(self, ev: StateChange, now: float) -> bool:
        """Write a deferred change: the flow must still be where the change found it (or already
        where it leads). False, and nothing written, when the flow has moved on meanwhile (a
        newer record arrived, or it expired): the newer knowledge wins."""
        flows = self.table.flows
        now_ms = int(now * 1000)
        key = ev.key
        v = flows.get(key)
        if v is not None and (v >> EXPIRY_SHIFT) <= now_ms:
            v = None
        after = ev.after
        if v is None:
            if ev.before != _NONE or not self.table.room_for(key, now):
                return False
        else:
            state = v & STATE_MASK
            version = (v & VERSION_MASK) >> 8
            if state == after and version == ev.version:
                return True  # a retransmission's change committed first: the same change
            if ev.before == _NONE or state != ev.before or next_version(version) != ev.version:
                return False
        flows[key] = pack(
            after, ev.orig_is_lo, now_ms + self.timeout_ms(after, ev.proto), ev.version, ev.window
        )
        return True

    def merge(self, rec: FlowFacts, now: float, new_life: bool = False) -> bool:
        """Bring a record from elsewhere into the table if it is newer than what the table holds.

        Newer means a newer version (serial-number arithmetic: versions wrap) at the same or a
        higher rank, or a new life of a closed connection (a new SYN, or any newer state over
        TIME_WAIT or CLOSE); a record never moves a flow backwards. With ``new_life`` (the caller
        holds a SYN-ACK that answers the record) a SYN_SENT of a newer version is the flow's
        next life whatever the table holds: the table's copy is of an earlier life, whose close
        this instance never learned (it carried one direction only). Returns whether the table
        changed."""
        flows = self.table.flows
        now_ms = int(now * 1000)
        key = rec.key
        state = rec.state
        v = flows.get(key)
        window = 0
        if v is not None and (v >> EXPIRY_SHIFT) > now_ms:
            cur = _S[v & STATE_MASK]
            version = (v & VERSION_MASK) >> 8
            if rec.version == version and state == cur:
                return False
            if cur in REOPENABLE:
                # A closed connection's next life: its SYN, or (at a level that does not share
                # the handshake) its first shared state, newer than the close.
                reopen = state == FlowState.SYN_SENT or version_newer(rec.version, version)
            else:  # a copy of an earlier life, when the caller knows better (``new_life``)
                reopen = new_life and state == FlowState.SYN_SENT and version_newer(rec.version, version)
            if not reopen:
                if version_newer(version, rec.version) or RANK[state] < RANK[cur]:
                    return False
                # Another instance moved the flow on: it saw segments this one did not, so the
                # window here is stale (the flow may come back after a bucket move). Relearn it
                # from the next segments, keeping the scales (they came with the SYNs).
                window = relearn((v >> WINDOW_SHIFT) & WINDOW_MASK)
        if state == FlowState.REMOVED:
            return flows.pop(key, None) is not None
        if v is None and not self.table.room_for(key, now):  # a new flow needs room
            return False
        flows[key] = pack(
            state, rec.orig_is_lo, now_ms + self.timeout_ms(state, rec.proto), rec.version, window
        )
        return True

    def pickup(self, buf: bytes, now: float) -> bool:
        """Take a TCP segment of a connection nobody knows (no flow here, none in the store) as
        ESTABLISHED: a mid-stream pickup, what the kernel's ``nf_conntrack_tcp_loose`` does for
        every such segment. The engine calls it only just after a failover, for a segment the
        store confirmed it knows nothing of: a connection established on the failed instance in
        its last millisecond, whose async write died with it.

        Only an ACK without SYN or RST (FIN allowed), only for a connection the rules would
        admit in one of its two directions (which one opened it: the direction the rules admit,
        the packet's own first), and within the table's bound; or for a flow known here only in
        its handshake (SYN_SENT, SYN_RECV: a segment the table calls invalid), which keeps its
        direction. The window is unknown, learned
        from the next segments of each side, as for a flow from the store. Returns whether the
        flow is now in the table (then decide the packet)."""
        p = parse(buf)
        if not isinstance(p, Parsed) or p.proto != PROTO_TCP:
            return False
        if p.flags & (SYN | RST) or not p.flags & ACK:
            return False
        key = p.key
        now_ms = int(now * 1000)
        v = self.table.flows.get(key)
        version = 1
        if v is not None and (v >> EXPIRY_SHIFT) > now_ms:
            # Known only in its handshake (at `full` the SYN's or SYN-ACK's write came through,
            # the ESTABLISHED one died): its own direction, a version past the store's.
            if _S[v & STATE_MASK] not in _HANDSHAKE:
                return False
            orig_is_lo = (v & ORIG_IS_LO) != 0
            version = next_version((v & VERSION_MASK) >> 8)
        else:
            src, dst = int.from_bytes(p.src), int.from_bytes(p.dst)
            evaluate = self.ruleset.evaluate
            if evaluate(PROTO_TCP, p.version, src, dst, p.sport, p.dport)[0] == Action.ACCEPT:
                orig_is_lo = p.from_lo
            elif evaluate(PROTO_TCP, p.version, dst, src, p.dport, p.sport)[0] == Action.ACCEPT:
                orig_is_lo = not p.from_lo
            else:
                return False
            if not self.table.room_for(key, now):
                return False
        state = FlowState.ESTABLISHED
        self.table.flows[key] = pack(state, orig_is_lo, now_ms + self.timeout_ms(state, PROTO_TCP), version)
        return True

    def rebase(
        self, key: bytes, version: int, reply: bool, flags: int, current: FlowFacts, now: float
    ) -> StateChange | None:
        """A change this table made (to ``version``) was refused: the store holds ``current``,
        the change that the instance of the flow's other direction made from the same state at
        the same time (ECMP steering: each instance sees one direction). Replay this packet's
        step (its direction and flags) on the store's state, as the kernel's table would have
        taken both packets one after the other: the server's FIN there (FIN_WAIT) and the
        client's FIN here make LAST_ACK, not FIN_WAIT twice. If that moves the flow on, the table
        takes the result at the version after the store's and the change is returned, to be
        written. None, and nothing changed, when the flow moved on here since, the record has
        the other opener, or the step changes nothing from the store's state (then the store's
        record is simply newer)."""
        flows = self.table.flows
        now_ms = int(now * 1000)
        v = flows.get(key)
        if v is None or (v >> EXPIRY_SHIFT) <= now_ms or current.proto != PROTO_TCP:
            return None
        orig_is_lo = (v & ORIG_IS_LO) != 0
        if (v & VERSION_MASK) >> 8 != version or current.orig_is_lo != orig_is_lo:
            return None
        cs = current.state
        if cs not in TCP_STATES:  # tcp.py's columns
            return None
        nxt = TCP_NEXT[(1024 if reply else 0) | ((flags & FLAG_MASK) << 4) | cs]
        if nxt >= IG or nxt in (cs, SS) or RANK[_S[nxt]] < RANK[cs]:
            return None
        after = _S[nxt]
        new_version = next_version(current.version)
        w = (v >> WINDOW_SHIFT) & WINDOW_MASK
        flows[key] = pack(after, orig_is_lo, now_ms + self._tcp_timeout_ms[nxt], new_version, w)
        return StateChange(key, PROTO_TCP, cs, after, orig_is_lo, now, new_version, w)

    def renumber(self, key: bytes, version: int, now: float) -> bool:
        """Give the flow's entry ``version`` (its state stays): a connection reopened here whose
        earlier life the store holds at a version this one has not passed yet. Its next change
        is then newer than the store's record. False when there is no live entry."""
        flows = self.table.flows
        v = flows.get(key)
        if v is None or (v >> EXPIRY_SHIFT) <= int(now * 1000):
            return False
        flows[key] = (v & ~VERSION_MASK) | ((version % VERSION_MOD) << 8)
        return True

    def load(self, records: Iterable[FlowFacts], now: float) -> int:
        """A joining instance's snapshot: one pass into an empty table, merges otherwise. Either
        way within the table's bound (the flows beyond it are counted in ``table.refused``)."""
        table = self.table
        flows = table.flows
        if flows:
            return sum(self.merge(rec, now) for rec in records)
        now_ms = int(now * 1000)
        timeout = self.timeout_ms
        limit = table.max_flows
        n = 0
        for rec in records:
            if rec.state == FlowState.REMOVED:
                continue
            if len(flows) >= limit and rec.key not in flows:
                table.refused += 1
            else:
                flows[rec.key] = pack(
                    rec.state, rec.orig_is_lo, now_ms + timeout(rec.state, rec.proto), rec.version
                )
                n += 1
        return n

    def flows(self, now: float) -> Iterator[Flow]:
        """The live flows, for a resynchronisation with the store (a snapshot of the keys)."""
        now_ms = int(now * 1000)
        flows = self.table.flows
        for key, v in list(flows.items()):
            if (v >> EXPIRY_SHIFT) > now_ms:
                yield Flow((key, _S[v & STATE_MASK], bool(v & ORIG_IS_LO), (v & VERSION_MASK) >> 8, key[0]))

    def __len__(self) -> int:
        return len(self.table.flows)

    # ------------------------------------------------------------------ housekeeping
    def expire(self, now: float, budget: int) -> list[StateChange]:
        """Run one bounded step of the expiry sweep; returns the REMOVED events so far."""
        self.table.sweep(now, budget)
        return self.table.take_removed()

    def timeout_ms(self, state: FlowState, proto: int) -> int:
        """The local timeout of a state, for flows installed from the shared store."""
        if proto == PROTO_TCP:
            return self._tcp_timeout_ms[state]
        if proto == PROTO_UDP:
            return self._udp_ms[state == _REPLIED]
        return self._icmp_ms

    def state_of(self, key: bytes, now: float) -> FlowState | None:
        v = self.table.get(key, int(now * 1000))
        return None if v is None else _S[v & STATE_MASK]
