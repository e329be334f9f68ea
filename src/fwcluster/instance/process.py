"""The instance process: bind the queue, serve the control socket, expire flows, stop cleanly."""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

from fwcluster.config import Config
from fwcluster.core.decision import StateChange
from fwcluster.core.firewall import Firewall
from fwcluster.datapath.counters import Counters
from fwcluster.datapath.nfqueue import NfqueueDatapath
from fwcluster.datapath.replies import ReplySender
from fwcluster.instance.control import ControlServer

log = logging.getLogger("fwcluster.instance")

SWEEP_INTERVAL = 0.1  # seconds between expiry steps
SWEEP_PASS = 10.0  # a full pass over the table takes at most about this long


class Instance:
    def __init__(self, instance_id: str, config: Config, queue: int, run_dir: Path) -> None:
        self.id = instance_id
        self.config = config
        self.started = time.time()
        self.counters = Counters()
        self.firewall = Firewall(config.ruleset, config.conntrack.timeouts, config.conntrack.max_flows)
        self.expired = 0
        self._stop = False
        # Order matters for failing closed: the queue is bound before we say we are ready.
        self.datapath = NfqueueDatapath(
            queue, self.firewall.decide, self._on_change, self.counters, ReplySender()
        )
        self.control = ControlServer(run_dir / f"{instance_id}.sock", self._on_request)

    def _on_change(self, event: StateChange) -> None:
        """State changes go to the shared state table (next issue); the datapath counts them."""

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
            "health": "ok",
            "uptime": round(time.time() - self.started, 3),
            "flows": len(self.firewall.table),
            "max_flows": self.firewall.table.max_flows,
            "expired": self.expired,
            "sync": self.config.sync.as_dict(),
            **self.counters.snapshot(),
        }

    def stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stop = True

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.datapath.fileno(), selectors.EVENT_READ, self.datapath.process)
        sel.register(self.control.fileno(), selectors.EVENT_READ, self.control.handle)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        log.info("instance %s ready pid=%d", self.id, os.getpid())
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        try:
            while not self._stop:
                for key, _ in sel.select(timeout=SWEEP_INTERVAL):
                    key.data()
                if time.monotonic() >= next_sweep:
                    self._sweep()
                    next_sweep = time.monotonic() + SWEEP_INTERVAL
        finally:
            sel.close()
            self.control.close()
            self.datapath.close()
            log.info("instance %s stopped", self.id)

    def _sweep(self) -> None:
        budget = max(1024, int(len(self.firewall.table) * SWEEP_INTERVAL / SWEEP_PASS))
        for event in self.firewall.expire(time.monotonic(), budget):
            self.expired += 1
            self._on_change(event)
