"""The instance process: join the shared table, bind the queue, serve the control socket, expire
flows, stop cleanly. One asyncio loop carries it all: the queue's socket, the control socket,
the store's connections and the timers.

The engine (``engine/``) decides; this module only wires its events and commands: packets from
the driver, store outcomes from the shared table, the clock from a timer; after each event the
verdicts go to the driver and the store commands to the shared table (:meth:`Instance._pump`).

Its loops (expiry sweep, fast-path count, the held-packet ticker) survive an exception in one
round: counted per task in ``task_errors`` (with the shared table's: statetable/guard.py), one
log line now and then, and the loop goes on."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from fwcluster import eventlog
from fwcluster.config import Config, HeldVerdict, OutagePolicy, SteeringKind
from fwcluster.core.firewall import Firewall
from fwcluster.datapath.fastpath import conntrack_entries, fast_path_flows
from fwcluster.datapath.nfqueue import NfqueueDriver
from fwcluster.datapath.replies import ReplySender
from fwcluster.engine.counters import Counters
from fwcluster.engine.engine import Engine, EnginePolicy
from fwcluster.instance.control import ControlServer
from fwcluster.instance.denied import DeniedLog
from fwcluster.instance.flowlist import flow_list
from fwcluster.instance.heartbeat import Heartbeat
from fwcluster.instance.metrics import InstanceMetrics, ListenAddr
from fwcluster.instance.policy_watch import PolicyWatch
from fwcluster.policy import Policy
from fwcluster.statetable.factory import make_store
from fwcluster.statetable.guard import ERROR_PAUSE, CountedLog, TaskErrors
from fwcluster.statetable.settings import Confirm, Follow
from fwcluster.statetable.shared import LOOKUP_RETRY, OPENING, PUBLISHED, SharedTable, opening_hints
from fwcluster.storeurl import with_sentinels

log = logging.getLogger("fwcluster.instance")

SWEEP_INTERVAL = 0.1  # seconds between expiry steps
TICK_SLACK = 0.0002  # seconds: an armed tick this much later than needed is armed anew
SWEEP_PASS = 10.0  # a full pass over the table takes at most about this long
FAST_COUNT_INTERVAL = 2.0  # seconds between counts of the kernel's fast-path flows (status only)


class Instance:
    def __init__(
        self,
        instance_id: str,
        config: Config,
        queue: int,
        run_dir: Path,
        store_url: str = "",
        metrics_addr: ListenAddr | None = None,
    ) -> None:
        self.id = instance_id
        self.config = config
        self.queue = queue
        self.run_dir = run_dir
        self.started = time.time()
        self.counters = Counters()
        ct = config.conntrack
        self.firewall = Firewall(
            config.ruleset,
            ct.timeouts,
            ct.max_flows,
            windows=not ct.be_liberal,
            one_way=config.steering.kind == SteeringKind.ECMP,  # a direction may cross another instance
        )
        store = make_store(config, store_url)
        st = config.store
        publish = PUBLISHED[config.sync.level] if store is not None else frozenset()
        ecmp = config.steering.kind == SteeringKind.ECMP
        hints = opening_hints(config.sync.level, ecmp) if store is not None else frozenset()
        self.engine = Engine(
            self.firewall,
            EnginePolicy(
                publish=publish,
                confirm=config.sync.confirm == Confirm.SYNC,
                hold_timeout=st.timeout_ms / 1000,
                accept_on_timeout=st.on_timeout == HeldVerdict.ACCEPT,
                refuse_new_in_outage=st.outage == OutagePolicy.REFUSE,
                lookup_rate=st.lookup_rate,
                fast_path=config.datapath.fast_path,
                kernel_tracking=config.datapath.fast_path and config.datapath.kernel_tracking,
                # ECMP: the other direction's instance may be one whose changes are not followed
                refresh=ecmp and config.sync.follow == Follow.BACKUP,
                # ECMP: the opening states are shared at any level, and a miss is asked again
                # while the other direction's write may be on its way (statetable/shared.py,
                # OPENING). Symmetric steering keeps both directions on one instance: no retry.
                hints=hints,
                lookup_retry=LOOKUP_RETRY if ecmp and (publish | hints) & OPENING else 0.0,
                retry_window=st.handshake_wait_ms / 1000,
            ),
            self.counters,
            time.monotonic(),
        )
        # denied new connections: log lines, at most [log] denied_per_second (instance/denied.py)
        self.denied = DeniedLog(self.engine, config.log.denied_per_second, time.monotonic())
        # a failing queue socket: one line now and then, not one per wake-up
        self._datapath_errors = CountedLog(
            log, ("queue-read", "verdicts"), event="datapath-error", key="what"
        )
        self.task_errors = TaskErrors(f"instance {instance_id}", log)
        self.table = SharedTable(
            instance_id, self.engine, config.sync, store, replicas=st.replicas, task_errors=self.task_errors
        )
        self.table.on_engine_output = self._pump_soon
        self._pump_scheduled = False
        self._ticker: asyncio.TimerHandle | None = None
        self._tick_interval = max(0.001, st.timeout_ms / 5000)
        self._fast_flows: int | None = 0
        self.expired = 0
        cluster = config.cluster
        self.heartbeat = (
            Heartbeat(
                with_sentinels(store_url, st.sentinels, st.service),
                instance_id,
                cluster.heartbeat_ms,
                cluster.heartbeat_ttl_ms,
            )
            if store_url
            else None
        )
        # the cluster policy (fwcluster/policy.py): the stored one, else the config's rules
        self.policy_watch = (
            PolicyWatch(
                with_sentinels(store_url, st.sentinels, st.service), instance_id, Policy(config.ruleset)
            )
            if store_url
            else None
        )
        self.datapath: NfqueueDriver | None = None
        self.control: ControlServer | None = None
        self._stop = asyncio.Event()
        # metrics: /metrics on metrics_addr while running (instance/metrics.py); None: off
        self.metrics_addr = metrics_addr
        self.metrics: InstanceMetrics | None = None

    def _on_request(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd", "stats")
        if cmd == "stats":
            return self.stats()
        if cmd == "ping":
            return {"ok": True}
        if cmd == "flows":
            return flow_list(request, self.engine.flows(time.monotonic()))
        return {"error": f"unknown command {cmd!r} (allowed: stats, ping, flows)"}

    def stats(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": os.getpid(),
            "health": "ok" if self.table.store_up or not self.table.enabled else "store-down",
            "uptime": round(time.time() - self.started, 3),
            "flows": len(self.firewall.table),
            "max_flows": self.firewall.table.max_flows,
            "expired": self.expired,
            "held_now": len(self.engine.held),
            "user_space_packets": self.datapath.packets if self.datapath else 0,
            "queue_overruns": self.datapath.overruns if self.datapath else 0,
            "verdict_errors": self.datapath.verdict_errors if self.datapath else 0,
            "fast_path": {
                "enabled": self.config.datapath.fast_path,
                "marked": self.datapath.marked if self.datapath else 0,
                "flows": self._fast_flows,  # conntrack entries with the mark (refreshed every 2 s)
                "kernel_tracking": self.engine.kernel_tracking,
                "kernel_marked": self.datapath.kernel_marked if self.datapath else 0,
                "conntrack_entries": conntrack_entries(),  # all of them, kernel-tracked flows too
            },
            "sync": self.config.sync.as_dict(),
            "store": self.table.stats() if self.table.enabled else None,
            "heartbeats": self.heartbeat.sent if self.heartbeat else None,
            "policy": {
                "version": self.engine.policy_version,  # -1: none could be read (fail closed)
                "rules": len(self.firewall.ruleset.rules),
                "refused": self.policy_watch.refused if self.policy_watch else 0,
                "read_errors": self.policy_watch.read_errors if self.policy_watch else 0,
            },
            "task_errors": dict(self.task_errors.counts),
            "log": {"denied_logged": self.denied.logged, "denied_suppressed": self.denied.suppressed},
            **self.counters.snapshot(),
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        log.info(
            "instance %s starting pid=%d queue=%d",
            self.id,
            os.getpid(),
            self.queue,
            extra=eventlog.fields(
                "start",
                pid=os.getpid(),
                queue=self.queue,
                config=self.config.source,
                sync=self.config.sync.as_dict(),
                store=self.table.enabled,
            ),
        )
        # metrics: start the endpoint first, so a bad address fails the start at once
        if self.metrics_addr is not None:
            self.metrics = InstanceMetrics(self)
            self.metrics.serve(self.metrics_addr)
        # Join first: load the shared table. Until the queue is bound the kernel drops what it
        # would queue here, so a joining instance fails closed.
        if self.heartbeat is not None:
            await asyncio.to_thread(self.heartbeat.register)
        if self.policy_watch is not None:
            # the stored policy before the queue is bound (fail closed: see policy_watch.py)
            self.apply_policy(*await asyncio.to_thread(self.policy_watch.initial))
            self.policy_watch.start(loop, self.apply_policy)
        await self.table.start()
        self.datapath = NfqueueDriver(self.queue, self.engine, ReplySender())
        loop.add_reader(self.datapath.fileno(), self._process)
        # The control socket appears last: its existence means "ready".
        self.control = ControlServer(self.run_dir / f"{self.id}.sock", self._on_request)
        loop.add_reader(self.control.fileno(), self.control.handle)
        sweeper = asyncio.create_task(self._sweeper())
        fast_counter = (
            asyncio.create_task(self._count_fast_flows()) if self.config.datapath.fast_path else None
        )
        if self.heartbeat is not None:
            self.heartbeat.start()
        log.info(
            "instance %s ready pid=%d flows=%d sync=%s",
            self.id,
            os.getpid(),
            len(self.firewall.table),
            self.config.sync.as_dict(),
            extra=eventlog.fields(
                "ready",
                pid=os.getpid(),
                flows=len(self.firewall.table),
                sync=self.config.sync.as_dict(),
                rules=len(self.firewall.ruleset.rules),
                start_ms=round((time.time() - self.started) * 1000),
            ),
        )
        try:
            await self._stop.wait()
        finally:
            sweeper.cancel()
            if fast_counter is not None:
                fast_counter.cancel()
            if self.heartbeat is not None:
                await self.heartbeat.stop()
            if self.policy_watch is not None:
                await asyncio.to_thread(self.policy_watch.stop)
            loop.remove_reader(self.control.fileno())
            loop.remove_reader(self.datapath.fileno())
            self.control.close()
            self.datapath.close()
            await self.table.stop()
            if self.metrics is not None:  # metrics: stop the endpoint
                await asyncio.to_thread(self.metrics.close)
            log.info(
                "instance %s stopped",
                self.id,
                extra=eventlog.fields("stop", uptime_s=round(time.time() - self.started, 3)),
            )

    def apply_policy(self, version: int, policy: Policy) -> None:
        """A policy version for the engine (on the event loop, so between two packets)."""
        self.engine.set_ruleset(policy.ruleset, version)
        if self.policy_watch is not None:
            self.policy_watch.applied = version
        if self.heartbeat is not None:
            self.heartbeat.policy_version = version  # the next beat's registration reports it
        log.info(
            "instance %s: policy version %s applied (%d rules, default %s)",
            self.id,
            version if version >= 0 else "none (fail closed: no new connection)",
            len(policy.ruleset.rules),
            policy.ruleset.default.name.lower(),
            extra=eventlog.fields("policy-applied", version=version, rules=len(policy.ruleset.rules)),
        )

    def _process(self) -> None:
        assert self.datapath is not None
        try:
            self.datapath.read(time.monotonic())
        except Exception as e:  # the queue socket itself failed (ENOBUFS is counted, not raised)
            self.counters.errors += 1
            self._datapath_errors.note(
                "queue-read", "instance %s: queue read failed: %s", self.id, e, error=str(e)
            )
        self._pump()

    def _pump(self) -> None:
        """Carry out what the engine decided: verdicts to the kernel, store work to the table."""
        self._pump_scheduled = False
        if self.datapath is not None:
            try:
                self.datapath.flush()
            except OSError as e:
                self.counters.errors += 1
                self._datapath_errors.note(
                    "verdicts", "instance %s: verdicts not sent (retried): %s", self.id, e, error=str(e)
                )
        self.table.submit()
        engine = self.engine
        if engine.denied or engine.denied_skipped:
            self.denied.drain(time.monotonic())
        due = engine.next_deadline()
        if due is not None:
            # a tick at the next deadline or look-up to ask again, at the latest one interval on
            loop = asyncio.get_running_loop()
            at = min(due, loop.time() + self._tick_interval)
            if self._ticker is not None and self._ticker.when() > at + TICK_SLACK:
                self._ticker.cancel()
                self._ticker = None
            if self._ticker is None:
                self._ticker = loop.call_at(at, self._tick)

    def _pump_soon(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _tick(self) -> None:
        """Held packets past their deadline get their verdict."""
        self._ticker = None
        try:
            self.engine.tick(time.monotonic())
        except Exception as e:  # counted; the next pump arms the ticker again
            self.task_errors.note("ticker", e)
        self._pump()

    async def _count_fast_flows(self) -> None:
        """Ask the kernel how many flows it forwards on the fast path (off the event loop: a
        conntrack dump of many flows takes a while)."""
        while True:
            try:
                self._fast_flows = await asyncio.to_thread(fast_path_flows)
            except Exception as e:
                self.task_errors.note("fast-count", e)
            await asyncio.sleep(FAST_COUNT_INTERVAL)

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                self.sweep_step(time.monotonic())
            except Exception as e:
                self.task_errors.note("sweeper", e)
                await asyncio.sleep(ERROR_PAUSE)

    def sweep_step(self, now: float) -> None:
        """One bounded step of the expiry sweep."""
        budget = max(1024, int(len(self.firewall.table) * SWEEP_INTERVAL / SWEEP_PASS))
        self.expired += self.engine.expire(now, budget)
        self.denied.flush(now)  # the last denied-suppressed line once a flood is over
        if self.heartbeat is not None:
            self.engine.pickup = self.heartbeat.takeover  # the beats' news, every sweep (100 ms)
