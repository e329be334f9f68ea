"""The instance's side of the shared state table: the local replica (the core's flow table) kept
in step with the store, following the three knobs.

- level: which state changes are published (``wants``);
- access: dirty (blind write) or clean (conditional write by version and rank);
- confirm: async (``publish``: queued, written in pipelined batches by one background task) or
  sync (``publish_confirmed``: a future the datapath holds the packet on).

Background tasks: the writer (batches), the feed follower (applies other instances' changes to
the replica) and the health watch (notices an outage, reconnects, resynchronizes). On a local miss
the datapath asks ``lookup`` before it calls a packet invalid; look-ups are rate-bounded and
negatively cached. Nothing here raises into the datapath: store trouble becomes counters and
verdicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fwcluster.core.decision import StateChange
from fwcluster.core.firewall import Firewall
from fwcluster.core.flowtable import STATE_MASK, VERSION_MASK
from fwcluster.core.states import FlowState
from fwcluster.statetable.record import RANK, REOPENABLE, FlowRecord
from fwcluster.statetable.settings import Access, Confirm, SyncLevel, SyncSettings
from fwcluster.statetable.store import ReplicaLagError, Store, StoreError

log = logging.getLogger("fwcluster.statetable")

S = FlowState
# Which new states each level publishes. Removal by expiry is carried by the store's own TTL,
# which is the same conntrack timeout, so no level writes it.
PUBLISHED: dict[SyncLevel, frozenset[FlowState]] = {
    SyncLevel.NONE: frozenset(),
    SyncLevel.ESTABLISHED: frozenset(
        {S.ESTABLISHED, S.REPLIED, S.FIN_WAIT, S.CLOSE_WAIT, S.LAST_ACK, S.TIME_WAIT, S.CLOSE}
    ),
    SyncLevel.FULL: frozenset(s for s in FlowState if s not in (S.NONE, S.REMOVED)),
}

WRITE_BATCH = 256  # records per pipeline
MAX_PENDING = 100_000  # queued async writes beyond this are dropped (and counted)
FEED_BLOCK_MS = 1000
FEED_COUNT = 1000
FEED_INTERVAL = 0.01  # seconds between feed reads: batches the feed, bounds replica staleness
NEGATIVE_TTL = 0.5  # seconds a "not in the store" answer is trusted
NEGATIVE_MAX = 10_000
HEALTH_INTERVAL = 0.5


@dataclass
class TableCounters:
    published: dict[str, int] = field(default_factory=dict)  # by new state
    writes: int = 0
    write_batches: int = 0
    conflicts: int = 0  # clean writes refused: the store held something newer
    publish_dropped: int = 0  # async writes lost to an outage or a full queue
    store_errors: int = 0
    replica_lag: int = 0  # sync batches that too few replicas acknowledged in time
    outages: int = 0
    reconnects: int = 0
    resynced_flows: int = 0
    snapshot_flows: int = 0
    feed_applied: int = 0
    feed_ignored: int = 0
    lookups: int = 0
    lookup_hits: int = 0
    lookup_misses: int = 0
    lookup_negative_cached: int = 0
    lookup_rate_limited: int = 0
    write_us: list[float] = field(default_factory=list)  # recent batch latencies (for metrics)


class SharedTable:
    def __init__(
        self,
        instance_id: str,
        firewall: Firewall,
        settings: SyncSettings,
        store: Store | None,
        *,
        replicas: int = 0,
        lookup_rate: int = 2000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = instance_id
        self.firewall = firewall
        self.settings = settings
        self.store = store
        self.replicas = replicas
        self.counters = TableCounters()
        self.publish_states = PUBLISHED[settings.level] if store is not None else frozenset()
        self.sync_confirm = settings.confirm == Confirm.SYNC
        self.clean = settings.access == Access.CLEAN
        self.store_up = store is not None
        self._clock = clock
        self._pending: list[tuple[FlowRecord, int, asyncio.Future[bool] | None]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._feed_position = "0"
        self._negative: dict[bytes, float] = {}
        self._tokens = float(lookup_rate)
        self._rate = float(lookup_rate)
        self._burst = max(10.0, lookup_rate / 10)
        self._last_refill = clock()
        self._stopping = False
        self.observe_write: Callable[[float], None] | None = None  # metrics: batch latency (s)

    @property
    def enabled(self) -> bool:
        """Whether this instance shares state at all (level none shares nothing)."""
        return bool(self.publish_states)

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Join: load the table (snapshot + feed position), then follow the feed and write."""
        if not self.enabled or self.store is None:
            return
        try:
            await self.store.ping()  # connect (and load server-side scripts) before traffic
            await self._load_snapshot()
        except StoreError as e:
            log.warning("instance %s: store unreachable at start (%s); starting empty", self.id, e)
            self._mark_down()
        self._tasks = [
            asyncio.create_task(self._writer(), name="writer"),
            asyncio.create_task(self._follow_feed(), name="feed"),
            asyncio.create_task(self._watch_health(), name="health"),
        ]

    async def stop(self, drain: float = 1.0) -> None:
        """Stop; first give queued writes up to ``drain`` seconds to reach the store, so flows
        this instance changed last (e.g. before a scale-in moved them away) are current there."""
        deadline = time.monotonic() + drain
        while self._pending and self.store_up and self._tasks and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.005)
        self._stopping = True
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._fail_pending()
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()

    async def _load_snapshot(self) -> None:
        assert self.store is not None
        records, position = await self.store.snapshot()
        table = self.firewall.table
        if not table.flows:
            # Joining with an empty replica: no comparisons needed, install in one pass.
            now_ms = int(self._clock() * 1000)
            timeout = self.firewall.timeout_ms
            install = table.install
            for rec in records:
                if rec.state != S.REMOVED:
                    install(
                        rec.key,
                        rec.state,
                        rec.orig_is_lo,
                        rec.version,
                        now_ms + timeout(rec.state, rec.proto),
                    )
        else:
            for rec in records:
                self._apply(rec)
        self.counters.snapshot_flows += len(records)
        self._feed_position = position

    # ------------------------------------------------------------ publishing (per packet)
    def _record(self, ev: StateChange) -> tuple[FlowRecord, int]:
        ttl = self.firewall.timeout_ms(ev.after, ev.proto)
        return FlowRecord(ev.key, ev.after, ev.orig_is_lo, ev.version, ev.proto, self.id), ttl

    def publish(self, ev: StateChange) -> None:
        """Async confirmation: queue the change; the writer sends it with the next batch."""
        if len(self._pending) >= MAX_PENDING or not self.store_up:
            self.counters.publish_dropped += 1
            return
        rec, ttl = self._record(ev)
        self._pending.append((rec, ttl, None))
        self._count(ev.after)
        self._wake.set()

    def publish_confirmed(self, ev: StateChange) -> asyncio.Future[bool]:
        """Sync confirmation: a future that is True once the store holds the change."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if not self.store_up:
            fut.set_result(False)
            return fut
        rec, ttl = self._record(ev)
        self._pending.append((rec, ttl, fut))
        self._count(ev.after)
        self._wake.set()
        return fut

    def _count(self, state: FlowState) -> None:
        name = state.name.lower()
        self.counters.published[name] = self.counters.published.get(name, 0) + 1

    async def _writer(self) -> None:
        assert self.store is not None
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and not self._stopping:
                batch, self._pending = self._pending[:WRITE_BATCH], self._pending[WRITE_BATCH:]
                replicas = self.replicas if any(f is not None for _, _, f in batch) else 0
                t0 = time.perf_counter()
                try:
                    results = await self.store.write([(r, ttl) for r, ttl, _ in batch], self.clean, replicas)
                except ReplicaLagError:
                    # Written, but not confirmed by enough replicas: held packets get the timeout
                    # verdict; the store itself is up.
                    self.counters.replica_lag += 1
                    for _, _, fut in batch:
                        if fut is not None and not fut.done():
                            fut.set_result(False)
                    continue
                except StoreError as e:
                    self._store_failed(e)
                    for _, _, fut in batch:
                        if fut is None:
                            self.counters.publish_dropped += 1
                        elif not fut.done():
                            fut.set_result(False)
                    continue
                elapsed = time.perf_counter() - t0
                self._note_latency(elapsed * 1e6)
                if self.observe_write is not None:  # metrics on (instance/metrics.py)
                    self.observe_write(elapsed)
                self.counters.writes += len(batch)
                self.counters.write_batches += 1
                for (_, _, fut), res in zip(batch, results, strict=True):
                    if not res.applied:
                        # The store holds something newer: take it, so this replica stops being stale.
                        self.counters.conflicts += 1
                        if res.current is not None:
                            self._apply(res.current)
                    elif res.current is not None and res.current.version != _version_of(
                        self.firewall, res.current.key
                    ):
                        self._apply(res.current)  # a reopen: the store renumbered the version
                    if fut is not None and not fut.done():
                        fut.set_result(True)

    def _note_latency(self, us: float) -> None:
        w = self.counters.write_us
        w.append(us)
        if len(w) > 1024:
            del w[:512]

    def _fail_pending(self) -> None:
        for _, _, fut in self._pending:
            if fut is not None and not fut.done():
                fut.set_result(False)
        self._pending = []

    # ------------------------------------------------------------ following the feed
    def _apply(self, rec: FlowRecord) -> bool:
        """Bring a record from the store into the replica if it is newer than what we hold."""
        table = self.firewall.table
        now_ms = int(self._clock() * 1000)
        cur = table.get(rec.key, now_ms)
        if cur is not None:
            cur_state = FlowState(cur & STATE_MASK)
            cur_version = (cur & VERSION_MASK) >> 8
            reopen = rec.state == S.SYN_SENT and cur_state in REOPENABLE
            if not reopen and (rec.version < cur_version or RANK[rec.state] < RANK[cur_state]):
                return False
            if rec.version == cur_version and rec.state == cur_state:
                return False
        if rec.state == S.REMOVED:
            table.remove(rec.key)
            return True
        expiry = now_ms + self.firewall.timeout_ms(rec.state, rec.proto)
        table.install(rec.key, rec.state, rec.orig_is_lo, rec.version, expiry)
        return True

    async def _follow_feed(self) -> None:
        """Apply other instances' changes. Reads are spaced ``FEED_INTERVAL`` apart, so entries
        arrive in batches (one XREAD for many changes) and only the newest change of each flow in
        a batch is applied; a replica is at most that much behind, and a miss asks the store."""
        assert self.store is not None
        while not self._stopping:
            if not self.store_up:
                await asyncio.sleep(HEALTH_INTERVAL)
                continue
            try:
                records, self._feed_position = await self.store.feed(
                    self._feed_position, FEED_BLOCK_MS, FEED_COUNT
                )
            except StoreError as e:
                self._store_failed(e)
                continue
            newest: dict[bytes, FlowRecord] = {}
            me = self.id
            for rec in records:
                if rec.writer != me:
                    newest[rec.key] = rec
            self.counters.feed_ignored += len(records) - len(newest)
            for key, rec in newest.items():
                if self._apply(rec):
                    self.counters.feed_applied += 1
                    self._negative.pop(key, None)
                else:
                    self.counters.feed_ignored += 1
            if len(records) < FEED_COUNT:
                await asyncio.sleep(FEED_INTERVAL)

    # ------------------------------------------------------------ look-ups on a miss
    def may_lookup(self, key: bytes) -> bool:
        """Rate bound and negative cache: may the datapath ask the store about ``key`` now?"""
        if not self.enabled or not self.store_up:
            return False
        now = self._clock()
        until = self._negative.get(key)
        if until is not None:
            if until > now:
                self.counters.lookup_negative_cached += 1
                return False
            del self._negative[key]
        self._tokens = min(self._burst, self._tokens + (now - self._last_refill) * self._rate)
        self._last_refill = now
        if self._tokens < 1.0:
            self.counters.lookup_rate_limited += 1
            return False
        self._tokens -= 1.0
        return True

    async def lookup(self, key: bytes) -> bool:
        """Ask the store for ``key``; True when the replica learned something newer."""
        assert self.store is not None
        self.counters.lookups += 1
        try:
            (rec,) = await self.store.get([key])
        except StoreError as e:
            self._store_failed(e)
            return False
        if rec is not None and self._apply(rec):
            self.counters.lookup_hits += 1
            return True
        self.counters.lookup_misses += 1
        if len(self._negative) >= NEGATIVE_MAX:
            self._negative.clear()
        self._negative[key] = self._clock() + NEGATIVE_TTL
        return False

    # ------------------------------------------------------------ outage and recovery
    def _store_failed(self, e: Exception) -> None:
        self.counters.store_errors += 1
        if self.store_up:
            log.warning("instance %s: store down: %s", self.id, e)
            self._mark_down()

    def _mark_down(self) -> None:
        self.store_up = False
        self.counters.outages += 1
        self._fail_pending()

    async def _watch_health(self) -> None:
        assert self.store is not None
        while not self._stopping:
            await asyncio.sleep(HEALTH_INTERVAL)
            if self.store_up:
                continue
            try:
                await self.store.ping()
                await self._resync()
            except StoreError:
                continue
            self.store_up = True
            self.counters.reconnects += 1
            log.warning(
                "instance %s: store back; %d flows resynchronized", self.id, self.counters.resynced_flows
            )

    async def _resync(self) -> None:
        """After an outage: learn what others wrote, then tell the store what we hold.

        Our flows go in as clean writes whatever the access mode, so this can only move the
        store forward."""
        assert self.store is not None
        await self._load_snapshot()
        table = self.firewall.table
        now_ms = int(self._clock() * 1000)
        records: list[tuple[FlowRecord, int]] = []
        for key, v in list(table.flows.items()):
            if (v >> 20) <= now_ms:
                continue
            state = FlowState(v & STATE_MASK)
            if state not in self.publish_states:
                continue
            rec = FlowRecord(key, state, bool(v & 0x10), (v & VERSION_MASK) >> 8, key[0], self.id)
            records.append((rec, self.firewall.timeout_ms(state, key[0])))
        for i in range(0, len(records), WRITE_BATCH):
            await self.store.write(records[i : i + WRITE_BATCH], clean=True)
        self.counters.resynced_flows += len(records)

    def stats(self) -> dict[str, object]:
        c = self.counters
        lat = sorted(c.write_us)
        return {
            "store_up": self.store_up,
            "published": dict(c.published),
            "writes": c.writes,
            "write_batches": c.write_batches,
            "write_us_p50": round(lat[len(lat) // 2], 1) if lat else None,
            "conflicts": c.conflicts,
            "publish_dropped": c.publish_dropped,
            "pending": len(self._pending),
            "store_errors": c.store_errors,
            "replica_lag": c.replica_lag,
            "outages": c.outages,
            "reconnects": c.reconnects,
            "resynced_flows": c.resynced_flows,
            "snapshot_flows": c.snapshot_flows,
            "feed_applied": c.feed_applied,
            "feed_ignored": c.feed_ignored,
            "lookups": c.lookups,
            "lookup_hits": c.lookup_hits,
            "lookup_misses": c.lookup_misses,
            "lookup_negative_cached": c.lookup_negative_cached,
            "lookup_rate_limited": c.lookup_rate_limited,
        }


def _version_of(fw: Firewall, key: bytes) -> int | None:
    v = fw.table.flows.get(key)
    return None if v is None else (v & VERSION_MASK) >> 8
