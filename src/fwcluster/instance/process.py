"""The instance process: join the shared table, bind the queue, serve the control socket, expire
flows, stop cleanly. One asyncio loop carries it all: the queue's socket, the control socket,
the store's connections and the timers."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from fwcluster.config import Config, HeldVerdict, OutagePolicy
from fwcluster.core.firewall import Firewall
from fwcluster.datapath.counters import Counters
from fwcluster.datapath.nfqueue import NfqueueDatapath
from fwcluster.datapath.replies import ReplySender
from fwcluster.instance.control import ControlServer
from fwcluster.instance.heartbeat import Heartbeat
from fwcluster.instance.metrics import InstanceMetrics, ListenAddr
from fwcluster.statetable.factory import make_store
from fwcluster.statetable.shared import SharedTable

log = logging.getLogger("fwcluster.instance")

SWEEP_INTERVAL = 0.1  # seconds between expiry steps
SWEEP_PASS = 10.0  # a full pass over the table takes at most about this long


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
        self.firewall = Firewall(config.ruleset, config.conntrack.timeouts, config.conntrack.max_flows)
        self.table = SharedTable(
            instance_id,
            self.firewall,
            config.sync,
            make_store(config, store_url),
            replicas=config.store.replicas,
            lookup_rate=config.store.lookup_rate,
        )
        self.expired = 0
        cluster = config.cluster
        self.heartbeat = (
            Heartbeat(store_url, instance_id, cluster.heartbeat_ms, cluster.heartbeat_ttl_ms)
            if store_url
            else None
        )
        self.datapath: NfqueueDatapath | None = None
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
        return {"error": f"unknown command {cmd!r} (allowed: stats, ping)"}

    def stats(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": os.getpid(),
            "health": "ok" if self.table.store_up or not self.table.enabled else "store-down",
            "uptime": round(time.time() - self.started, 3),
            "flows": len(self.firewall.table),
            "max_flows": self.firewall.table.max_flows,
            "expired": self.expired,
            "held_now": self.datapath.held if self.datapath else 0,
            "sync": self.config.sync.as_dict(),
            "store": self.table.stats() if self.table.enabled else None,
            "heartbeats": self.heartbeat.sent if self.heartbeat else None,
            **self.counters.snapshot(),
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        # metrics: start the endpoint first, so a bad address fails the start at once
        if self.metrics_addr is not None:
            self.metrics = InstanceMetrics(self)
            self.metrics.serve(self.metrics_addr)
        # Join first: load the shared table. Until the queue is bound the kernel drops what it
        # would queue here, so a joining instance fails closed.
        if self.heartbeat is not None:
            await asyncio.to_thread(self.heartbeat.announce_joining)
        await self.table.start()
        store = self.config.store
        self.datapath = NfqueueDatapath(
            self.queue,
            self.firewall,
            self.counters,
            ReplySender(),
            self.table,
            hold_timeout=store.timeout_ms / 1000,
            accept_on_timeout=store.on_timeout == HeldVerdict.ACCEPT,
            refuse_new_in_outage=store.outage == OutagePolicy.REFUSE,
        )
        loop.add_reader(self.datapath.fileno(), self._process)
        # The control socket appears last: its existence means "ready".
        self.control = ControlServer(self.run_dir / f"{self.id}.sock", self._on_request)
        loop.add_reader(self.control.fileno(), self.control.handle)
        sweeper = asyncio.create_task(self._sweeper())
        if self.heartbeat is not None:
            self.heartbeat.start()
        log.info(
            "instance %s ready pid=%d flows=%d sync=%s",
            self.id,
            os.getpid(),
            len(self.firewall.table),
            self.config.sync.as_dict(),
        )
        try:
            await self._stop.wait()
        finally:
            sweeper.cancel()
            if self.heartbeat is not None:
                await self.heartbeat.stop()
            loop.remove_reader(self.control.fileno())
            loop.remove_reader(self.datapath.fileno())
            self.control.close()
            self.datapath.close()
            await self.table.stop()
            if self.metrics is not None:  # metrics: stop the endpoint
                await asyncio.to_thread(self.metrics.close)
            log.info("instance %s stopped", self.id)

    def _process(self) -> None:
        assert self.datapath is not None
        try:
            self.datapath.process()
        except Exception as e:  # the queue socket itself failed (ENOBUFS is counted, not raised)
            self.counters.errors += 1
            log.warning("instance %s: queue read failed: %s", self.id, e)

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            budget = max(1024, int(len(self.firewall.table) * SWEEP_INTERVAL / SWEEP_PASS))
            self.expired += len(self.firewall.expire(time.monotonic(), budget))
