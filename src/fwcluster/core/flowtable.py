"""The local connection table: flow key -> one packed integer, bounded, with incremental expiry.

One flow costs a dict slot, its key (bytes, 13 bytes for IPv4, 37 for IPv6) and one int:

    value = expiry_ms << EXPIRY_SHIFT | window << WINDOW_SHIFT | version << 8 | flags << 4 | state

``window`` is the TCP sequence-window state (``core/window.py``, 304 bits; 0 = not known, and
always 0 for UDP and ICMP). It changes with nearly every segment, so it lives in the same int:
one store per packet still updates everything.

``version`` counts the flow's state changes (12 bits, wrapping): the shared state table compares
it to refuse stale writes. Versions wrap, so they are compared with serial-number arithmetic
(RFC 1982, :func:`version_newer`), here, in the memory store and in the store's Lua script
alike. ``flags`` holds ORIG_IS_LO (which endpoint of the key opened the flow).
``expiry_ms`` is on the caller's clock (the datapath passes a monotonic clock, which keeps the
integer small: a flow costs one 32-byte int).

A packed int instead of an object keeps a million flows in well under 200 bytes each and makes
the per-packet update one integer store. Expired entries are invisible at once (every lookup
checks the expiry) and are removed by a sweep that visits a bounded number of keys per call. A
sweep pass starts from a snapshot of the keys (one C-level copy of the key list, about 5 ms per
million flows); the Python-level work per call stays bounded by the budget.
"""

from __future__ import annotations

from collections.abc import Iterator

from fwcluster.core.decision import StateChange
from fwcluster.core.states import FlowState
from fwcluster.core.window import STATE_BYTES

STATE_MASK = 0x0F
ORIG_IS_LO = 0x10
VERSION_ONE = 0x100
VERSION_MASK = 0xFFF00
VERSION_MOD = 0x1000  # versions live in 12 bits and wrap
VERSION_HALF = 0x800  # serial-number arithmetic: "newer" means ahead by less than half the space
LOW_MASK = 0xFFFFF  # version, flags, state
WINDOW_SHIFT = 20
WINDOW_BITS = STATE_BYTES * 8
WINDOW_MASK = (1 << WINDOW_BITS) - 1  # after the shift
EXPIRY_SHIFT = WINDOW_SHIFT + WINDOW_BITS
KEEP_MASK = (1 << EXPIRY_SHIFT) - 1  # everything below the expiry: window and the low bits


def pack(state: int, orig_is_lo: bool, expiry_ms: int, version: int = 1, window: int = 0) -> int:
    return (
        (expiry_ms << EXPIRY_SHIFT)
        | (window << WINDOW_SHIFT)
        | ((version << 8) & VERSION_MASK)
        | (ORIG_IS_LO if orig_is_lo else 0)
        | state
    )


def unpack(value: int) -> tuple[FlowState, bool, int, int]:
    """(state, orig_is_lo, version, expiry_ms)"""
    return (
        FlowState(value & STATE_MASK),
        bool(value & ORIG_IS_LO),
        (value & VERSION_MASK) >> 8,
        value >> EXPIRY_SHIFT,
    )


def version_newer(a: int, b: int) -> bool:
    """Is version ``a`` newer than ``b``? Serial-number arithmetic (RFC 1982) over 12 bits: ``a``
    is newer when it is ahead of ``b`` by 1 .. 2047 steps, so 0 is newer than 4095 and a flow
    with thousands of state changes keeps replicating. (Equal versions are not newer.)"""
    return 0 < ((a - b) % VERSION_MOD) < VERSION_HALF


def next_version(v: int) -> int:
    """The version after ``v``, wrapping in 12 bits."""
    return (v + 1) % VERSION_MOD


def bump(value: int) -> int:
    """The low bits of ``value`` with the version advanced by one (wrapping in 12 bits)."""
    return (value & (LOW_MASK & ~VERSION_MASK & ~STATE_MASK)) | ((value + VERSION_ONE) & VERSION_MASK)


ROOM_SWEEP = 256  # keys a full table sweeps for room before it refuses a flow


class FlowTable:
    """A bounded dict of flows. The firewall reads and writes ``flows`` directly on its hot path.

    The bound holds for every way in: a packet that opens a flow (the firewall checks it), and a
    flow learned from elsewhere (the store's feed, a look-up's answer, a snapshot, a confirmed
    deferred change), which asks :meth:`room_for` first; ``refused`` counts those turned away."""

    __slots__ = ("_full_ms", "_sweep", "flows", "max_flows", "refused", "removed")

    def __init__(self, max_flows: int) -> None:
        self.flows: dict[bytes, int] = {}
        self.max_flows = max_flows
        self._sweep: Iterator[bytes] | None = None
        self.removed: list[StateChange] = []
        self.refused = 0  # flows from elsewhere turned away: the table was full
        self._full_ms = -1  # the last millisecond a sweep for room found none

    def __len__(self) -> int:
        return len(self.flows)

    def get(self, key: bytes, now_ms: int) -> int | None:
        """The live value of a flow, or None when it is absent or expired."""
        v = self.flows.get(key)
        if v is None or (v >> EXPIRY_SHIFT) <= now_ms:
            return None
        return v

    def sweep(self, now: float, budget: int) -> int:
        """Remove expired flows among the next ``budget`` keys; returns how many went.

        Each removal is recorded as a REMOVED event in ``removed`` (drained with
        :meth:`take_removed`). The sweep walks a snapshot of the keys, so flows created
        meanwhile wait for the next pass; a full pass over N flows takes N / budget calls.
        """
        now_ms = int(now * 1000)
        flows = self.flows
        removed = self.removed
        if self._sweep is None:
            self._sweep = iter(list(flows))
        it = self._sweep
        count = 0
        for _ in range(budget):
            key = next(it, None)
            if key is None:
                self._sweep = None
                break
            v = flows.get(key)
            if v is not None and (v >> EXPIRY_SHIFT) <= now_ms:
                del flows[key]
                count += 1
                state = FlowState(v & STATE_MASK)
                version = next_version((v & VERSION_MASK) >> 8)
                proto = key[0] if key else 0  # every key has its protocol first; never raise here
                removed.append(
                    StateChange(key, proto, state, FlowState.REMOVED, bool(v & ORIG_IS_LO), now, version)
                )
        return count

    def room_for(self, key: bytes, now: float) -> bool:
        """May ``key`` be put into the table? Yes when it is there already (expired or not) or
        the table is below its bound; a full table first sweeps ``ROOM_SWEEP`` keys for expired
        flows (at most once per millisecond: a burst of refusals costs one sweep). A refusal is
        counted in ``refused``."""
        flows = self.flows
        if len(flows) < self.max_flows or key in flows:
            return True
        now_ms = int(now * 1000)
        if now_ms != self._full_ms:
            self.sweep(now, ROOM_SWEEP)
            if len(flows) < self.max_flows:
                return True
            self._full_ms = now_ms
        self.refused += 1
        return False

    def take_removed(self) -> list[StateChange]:
        """The REMOVED events since the last call."""
        out, self.removed = self.removed, []
        return out

    def remove(self, key: bytes) -> int | None:
        return self.flows.pop(key, None)
