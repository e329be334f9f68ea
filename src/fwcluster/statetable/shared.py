"""The instance's side of the shared state table: carries out the engine's store commands and
brings the store's records back to it, following the three knobs.

- level: which state changes the engine publishes (``PUBLISHED``, given to the engine's policy);
- access: dirty (blind write) or clean (conditional write by version and rank);
- confirm: async (writes nobody waits for) or sync (the engine holds the packet on the write's
  ticket until :meth:`Engine.write_done` tells it the outcome).

Background tasks: the writer (pipelined batches), the feed follower (other instances' changes,
handed to the engine, which merges them into the replica: with ``[sync] follow = "all"`` every
instance's, from the one feed; with ``"backup"`` only those of the instances this one backs up,
from their own streams, re-targeted when the membership changes: statetable/ring.py) and the
health watch (notices an
outage, reconnects, resynchronizes). Look-ups the engine asks for run as tasks of their own.
The flow table itself is the engine's: nothing here reads or writes it but through the engine.
Nothing here raises into the datapath: store trouble becomes counters and outcomes. Records the
store hands back that are no flow records are skipped by the store and counted there
(``Store.bad_records``); an exception in one iteration of a task is counted per task
(``task_errors``, statetable/guard.py) and the task goes on. A write the store server refuses
(``OOM`` under ``maxmemory`` with ``noeviction``) is counted (``refused_writes``) and is a failed
write: a held packet is dropped and its flow stays as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fwcluster import eventlog
from fwcluster.core.decision import StateChange
from fwcluster.core.states import FlowState
from fwcluster.engine.engine import NO_TICKET, Engine, Outcome
from fwcluster.statetable.guard import ERROR_PAUSE, CountedLog, TaskErrors
from fwcluster.statetable.record import FlowRecord
from fwcluster.statetable.ring import FAILED, followed, to_preload
from fwcluster.statetable.settings import Access, Confirm, Follow, SyncLevel, SyncSettings
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

# ECMP steering: the two directions of a flow cross different instances, so the one that sees a
# handshake's answer (the SYN-ACK, the client's ACK, a UDP reply) must find the opening in the
# store, whatever the level: these states are written too, with ECMP, at a level that shares at
# all. They are hints, never waited for (sync confirmation holds only the level's own states):
# a lost one costs a retransmission, not a wrong verdict. (Two writes more per connection.)
OPENING = frozenset({S.SYN_SENT, S.SYN_RECV, S.SYN_SENT2, S.UNREPLIED})
LOOKUP_RETRY = 0.001  # seconds before a miss the opening's write may answer is asked again


def opening_hints(level: SyncLevel, one_way: bool) -> frozenset[FlowState]:
    """The opening states the engine writes without holding (``EnginePolicy.hints``): with one
    direction per instance (``one_way``, ECMP steering) those the level does not publish."""
    if not one_way or not PUBLISHED[level]:
        return frozenset()
    return OPENING - PUBLISHED[level]


WRITE_BATCH = 256  # records per pipeline
MAX_PENDING = 100_000  # queued async writes beyond this are dropped (and counted)
FEED_BLOCK_MS = 1000
FEED_COUNT = 1000
FEED_INTERVAL = 0.01  # seconds between feed reads: batches the feed, bounds replica staleness
HEALTH_INTERVAL = 0.5
# follow = "backup": how often the membership is read (a ring change re-targets the streams
# followed within this plus one read), and how long one read of the followed streams blocks.
MEMBERS_INTERVAL = 0.5
FOLLOW_BLOCK_MS = 200


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
    bulk_loaded: int = 0  # records loaded from a newly followed writer's index (follow = "backup")
    follow_switches: int = 0  # writers started or stopped being followed
    lookup_errors: int = 0
    refused_writes: int = 0  # writes the store server refused itself (OOM, NOPERM): failed writes
    write_us: list[float] = field(default_factory=list)  # recent batch latencies (for metrics)


class SharedTable:
    def __init__(
        self,
        instance_id: str,
        engine: Engine,
        settings: SyncSettings,
        store: Store | None,
        *,
        replicas: int = 0,
        clock: Callable[[], float] = time.monotonic,
        task_errors: TaskErrors | None = None,
    ) -> None:
        self.id = instance_id
        self.engine = engine
        self.settings = settings
        self.store = store
        self.replicas = replicas
        self.counters = TableCounters()
        self.task_errors = (
            task_errors if task_errors is not None else TaskErrors(f"instance {instance_id}", log)
        )
        self._refused_log = CountedLog(
            log, event="write-refused", key="what"
        )  # one line now and then, however many are refused
        # what the engine writes: its level's states and, with ECMP, the opening hints
        self.publish_states = (
            engine.policy.publish | engine.policy.hints if store is not None else frozenset()
        )
        self.sync_confirm = settings.confirm == Confirm.SYNC
        self.clean = settings.access == Access.CLEAN
        self.store_up = store is not None
        self._clock = clock
        self._pending: list[tuple[FlowRecord, int, int]] = []  # record, ttl, ticket
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lookups: set[asyncio.Task[None]] = set()
        self._feed_position = "0"
        # follow = "backup": the writers followed (id -> position in its stream), and when the
        # membership is read next
        self.follow_all = settings.follow == Follow.ALL
        self._following: dict[str, str] = {}
        self._preloaded: set[str] = set()  # failed instances whose flows were loaded (once each)
        self._members_at = 0.0
        if store is not None:
            store.per_writer = not self.follow_all
        self._stopping = False
        self.observe_write: Callable[[float], None] | None = None  # metrics: batch latency (s)
        # Called after the engine took an event from here (a write's outcome, a look-up's
        # answer), so the instance sends the verdicts that follow.
        self.on_engine_output: Callable[[], None] = lambda: None

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
            log.warning(
                "instance %s: store unreachable at start (%s); starting empty",
                self.id,
                e,
                extra=eventlog.fields("store-down", error=str(e), at_start=True),
            )
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
        self.engine.load(records, self._clock())
        self.counters.snapshot_flows += len(records)
        self._feed_position = position

    # ------------------------------------------------------------ the engine's commands
    def submit(self) -> None:
        """Take the engine's store commands: writes to the writer's queue, look-ups as tasks."""
        engine = self.engine
        if engine.writes:
            writes, engine.writes = engine.writes, []
            for ticket, ev in writes:
                self._queue(ticket, ev)
        if engine.lookups:
            lookups, engine.lookups = engine.lookups, []
            for pid, key in lookups:
                task = asyncio.ensure_future(self._lookup(pid, key))
                self._lookups.add(task)
                task.add_done_callback(self._lookups.discard)

    def _queue(self, ticket: int, ev: StateChange) -> None:
        if not self.store_up or (ticket == NO_TICKET and len(self._pending) >= MAX_PENDING):
            if ticket == NO_TICKET:
                self.counters.publish_dropped += 1
            else:
                self.engine.write_done(ticket, Outcome.FAILED, None, self._clock())
                self.on_engine_output()
            return
        ttl = self.engine.timeout_ms(ev.after, ev.proto)
        self._pending.append(
            (FlowRecord(ev.key, ev.after, ev.orig_is_lo, ev.version, ev.proto, self.id), ttl, ticket)
        )
        self._count(ev.after)
        self._wake.set()

    def _count(self, state: FlowState) -> None:
        name = state.name.lower()
        self.counters.published[name] = self.counters.published.get(name, 0) + 1

    def _outcome(
        self, ticket: int, outcome: Outcome, current: FlowRecord | None, sent: FlowRecord | None = None
    ) -> None:
        if ticket == NO_TICKET and outcome is Outcome.FAILED:
            self.counters.publish_dropped += 1
        if ticket != NO_TICKET or current is not None or (sent is not None and self.engine.replays):
            self.engine.write_done(ticket, outcome, current, self._clock(), sent)

    async def _writer(self) -> None:
        assert self.store is not None
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and not self._stopping:
                batch, self._pending = self._pending[:WRITE_BATCH], self._pending[WRITE_BATCH:]
                try:
                    await self._write_batch(batch)
                except Exception as e:
                    # Fail closed: every held packet of the batch is dropped (an outcome the
                    # engine already took is not taken twice: it no longer holds that ticket).
                    self.task_errors.note("writer", e)
                    self._fail_tickets(batch)
                    await asyncio.sleep(ERROR_PAUSE)

    async def _write_batch(self, batch: list[tuple[FlowRecord, int, int]]) -> None:
        """One pipelined write of ``batch``; its outcomes go to the engine."""
        assert self.store is not None
        replicas = self.replicas if any(t != NO_TICKET for _, _, t in batch) else 0
        t0 = time.perf_counter()
        try:
            results = await self.store.write([(r, ttl) for r, ttl, _ in batch], self.clean, replicas)
        except ReplicaLagError:
            # Written, but not confirmed by enough replicas: held packets get the timeout
            # verdict; the store itself is up.
            self.counters.replica_lag += 1
            for _, _, ticket in batch:
                self._outcome(ticket, Outcome.FAILED, None)
            self.on_engine_output()
            return
        except StoreError as e:
            self._store_failed(e)
            for _, _, ticket in batch:
                self._outcome(ticket, Outcome.FAILED, None)
            self.on_engine_output()
            return
        elapsed = time.perf_counter() - t0
        self._note_latency(elapsed * 1e6)
        if self.observe_write is not None:  # metrics on (instance/metrics.py)
            self.observe_write(elapsed)
        self.counters.writes += len(batch)
        self.counters.write_batches += 1
        for (rec, _, ticket), res in zip(batch, results, strict=True):
            if res.refused is not None:
                # The server refused the write itself (e.g. OOM: maxmemory with noeviction):
                # a failed write; a held packet is dropped and its flow stays as it was.
                self._write_refused(res.refused)
                self._outcome(ticket, Outcome.FAILED, None, rec)
            elif not res.applied:
                # The store holds something newer: the engine takes it (and decides a
                # held packet again against it).
                self.counters.conflicts += 1
                self._outcome(ticket, Outcome.REFUSED, res.current, rec)
            else:
                # ``current`` only when the store renumbered the version (a reopen)
                cur = res.current if res.current is not None and res.current.version != rec.version else None
                self._outcome(ticket, Outcome.CONFIRMED, cur, rec)
        self.on_engine_output()

    def _write_refused(self, error: str) -> None:
        self.counters.refused_writes = self._refused_log.note(
            "refused", "instance %s: the store refused a write: %s", self.id, error, error=error
        )

    def _fail_tickets(self, batch: list[tuple[FlowRecord, int, int]]) -> None:
        """After an unexpected error: the batch's held packets get FAILED, each on its own."""
        for _, _, ticket in batch:
            if ticket != NO_TICKET:
                with contextlib.suppress(Exception):
                    self.engine.write_done(ticket, Outcome.FAILED, None, self._clock())
        with contextlib.suppress(Exception):
            self.on_engine_output()

    def _note_latency(self, us: float) -> None:
        w = self.counters.write_us
        w.append(us)
        if len(w) > 1024:
            del w[:512]

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, []
        for _, _, ticket in pending:
            self._outcome(ticket, Outcome.FAILED, None)
        if pending:
            self.on_engine_output()

    # ------------------------------------------------------------ following the feed
    async def _follow_feed(self) -> None:
        """Apply other instances' changes. Reads are spaced ``FEED_INTERVAL`` apart, so entries
        arrive in batches (one XREAD for many changes) and only the newest change of each flow in
        a batch is applied; a replica is at most that much behind, and a miss asks the store."""
        while not self._stopping:
            try:
                await self._feed_step()
            except Exception as e:
                self.task_errors.note("feed", e)
                await asyncio.sleep(ERROR_PAUSE)

    async def _feed_step(self) -> None:
        assert self.store is not None
        if not self.store_up:
            await asyncio.sleep(HEALTH_INTERVAL)
            return
        try:
            if self.follow_all:
                records, self._feed_position = await self.store.feed(
                    self._feed_position, FEED_BLOCK_MS, FEED_COUNT
                )
            else:
                if self._clock() >= self._members_at:
                    await self._retarget()
                    self._members_at = self._clock() + MEMBERS_INTERVAL
                if not self._following:
                    await asyncio.sleep(MEMBERS_INTERVAL)
                    return
                records, self._following = await self.store.follow(
                    self._following, FOLLOW_BLOCK_MS, FEED_COUNT
                )
        except StoreError as e:
            self._store_failed(e)
            return
        newest: dict[bytes, FlowRecord] = {}
        me = self.id
        for rec in records:
            if rec.writer != me:
                newest[rec.key] = rec
        self.counters.feed_ignored += len(records) - len(newest)
        now = self._clock()
        record = self.engine.record
        for rec in newest.values():
            if record(rec, now):
                self.counters.feed_applied += 1
            else:
                self.counters.feed_ignored += 1
        if len(records) < FEED_COUNT:
            await asyncio.sleep(FEED_INTERVAL)

    async def _retarget(self) -> None:
        """follow = "backup": follow the writers the membership says this instance backs up
        (statetable/ring.py). A writer followed anew: its stream position first, then its flows
        (the store's index of them), then its changes from that position, so none is lost."""
        assert self.store is not None
        members = await self.store.members()
        want = followed(self.id, members) - {self.id}
        # A failed instance's flows, once: the master rebalances its buckets after a failover
        # to its backup (its successor, which followed it and needs nothing).
        self._preloaded &= {i for i, r in members.items() if r == FAILED}
        for writer in sorted(to_preload(self.id, members, [*self._following, *self._preloaded])):
            records = await self.store.owned(writer)
            self.engine.load(records, self._clock())
            self.counters.bulk_loaded += len(records)
            self._preloaded.add(writer)
        for writer in sorted(set(self._following) - want):
            del self._following[writer]
            self._preloaded.add(writer)  # it holds that writer's flows: no load if it failed
            self.counters.follow_switches += 1
        for writer in sorted(want - set(self._following)):
            position = await self.store.position(writer)
            records = await self.store.owned(writer)
            self.engine.load(records, self._clock())
            self.counters.bulk_loaded += len(records)
            self._following[writer] = position
            self.counters.follow_switches += 1

    @property
    def following(self) -> list[str]:
        """The writers whose changes this instance applies ("*": all of them)."""
        return ["*"] if self.follow_all else sorted(self._following)

    # ------------------------------------------------------------ look-ups on a miss
    async def _lookup(self, pid: int, key: bytes) -> None:
        """Ask the store for ``key`` on behalf of held packet ``pid``; the engine decides again."""
        assert self.store is not None
        try:
            try:
                (rec,) = await self.store.get([key])
            except StoreError as e:
                self.counters.lookup_errors += 1
                self._store_failed(e)
                self.engine.lookup_failed(pid)
            else:
                self.engine.lookup_done(pid, rec, self._clock())
        except Exception as e:  # never a task that dies with an exception nobody reads
            self.task_errors.note("lookup", e)
            with contextlib.suppress(Exception):
                self.engine.lookup_failed(pid)  # fail closed: the held packet is dropped
        self.on_engine_output()

    # ------------------------------------------------------------ outage and recovery
    def _store_failed(self, e: Exception) -> None:
        self.counters.store_errors += 1
        if self.store_up:
            log.warning(
                "instance %s: store down: %s", self.id, e, extra=eventlog.fields("store-down", error=str(e))
            )
            self._mark_down()

    def _mark_down(self) -> None:
        self.store_up = False
        self.engine.set_store_up(False)
        self.counters.outages += 1
        self._fail_pending()

    async def _watch_health(self) -> None:
        while not self._stopping:
            await asyncio.sleep(HEALTH_INTERVAL)
            if self.store_up:
                continue
            try:
                await self._recover()
            except Exception as e:  # the store stays down (fail closed); the next round tries again
                self.task_errors.note("health", e)

    async def _recover(self) -> None:
        assert self.store is not None
        try:
            await self.store.ping()
            await self._resync()
        except StoreError:
            return
        self.store_up = True
        self.engine.set_store_up(True)
        self.counters.reconnects += 1
        log.warning(
            "instance %s: store back; %d flows resynchronized",
            self.id,
            self.counters.resynced_flows,
            extra=eventlog.fields("store-back", resynced_flows=self.counters.resynced_flows),
        )

    async def _resync(self) -> None:
        """After an outage: learn what others wrote, then tell the store what we hold.

        Our flows go in as clean writes whatever the access mode, so this can only move the
        store forward."""
        assert self.store is not None
        await self._load_snapshot()
        self._following = {}  # follow = "backup": positions taken anew (and the flows loaded)
        self._members_at = 0.0
        records: list[tuple[FlowRecord, int]] = []
        timeout = self.engine.timeout_ms
        for key, state, orig_is_lo, version, proto in self.engine.flows(self._clock()):
            if state in self.publish_states:
                records.append(
                    (FlowRecord(key, state, orig_is_lo, version, proto, self.id), timeout(state, proto))
                )
        for i in range(0, len(records), WRITE_BATCH):
            await self.store.write(records[i : i + WRITE_BATCH], clean=True)
        self.counters.resynced_flows += len(records)

    def stats(self) -> dict[str, object]:
        c = self.counters
        e = self.engine.counters
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
            "follow": self.settings.follow.value,
            "following": self.following,
            "bulk_loaded": c.bulk_loaded,
            "follow_switches": c.follow_switches,
            "lookups": e.lookups,
            "lookup_hits": e.lookup_hits,
            "lookup_misses": e.lookup_misses,
            "lookup_retries": e.lookup_retries,
            "lookup_errors": c.lookup_errors,
            "lookup_negative_cached": self.engine.gate.negative_cached,
            "lookup_rate_limited": self.engine.gate.rate_limited,
            "refused_writes": c.refused_writes,
            "bad_records": dict(self.store.bad_records.by_source) if self.store is not None else {},
        }
