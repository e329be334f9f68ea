"""``fwcluster bench store-failover``: what losing the Redis primary costs, ``outage = "local"``
beside ``"refuse"`` in one run (a fresh testbed per policy: three instances, two masters, the
Sentinel-managed store, level established/clean/async).

Per trial: 20 long downloads streamed at a steady rate (bench/stream.py) and a steady stream of
short requests (8 at a time, 3 s timeout) run while the primary is SIGKILLed (once the sentinels
are ready to replace it). A probe in fwc-mgmt writes a record every 10 ms through the sentinels
(as the instances do):

- ``writes_back_ms``: from the kill to the first write the store confirmed again;
- ``replicated_back_ms``: to the first write a replica also acknowledged (``WAIT 1``);
- ``instances_back_ms``: to the moment every instance has its store back (its outage over);
- ``new_connections_failed``: short requests that failed; ``established_lost``: long downloads
  that did not arrive intact (sha256).

After a trial the killed node comes back as a replica. Bounded: every wait has a timeout; the
testbed is torn down at the end, whatever happened.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.progress import Progress

from fwcluster.bench.datapath import SteadyLoad
from fwcluster.bench.failover import _downloads, _summary
from fwcluster.core.states import FlowState
from fwcluster.instance.control import query
from fwcluster.statetable.record import FlowRecord
from fwcluster.statetable.redis_store import RedisStore
from fwcluster.statetable.store import StoreError
from fwcluster.steering.netns import inside
from fwcluster.testbed import down, require_state, store_kill_primary, store_primary, store_start, up
from fwcluster.testbed import sentinel as sentinel_nodes

POLICIES = ("local", "refuse")
PROBE_INTERVAL = 0.01
PROBE_KEY = b"\x06" + b"store-probe\x00"
WAIT_BOUND = 60.0  # seconds for the store and the instances to come back


def failover_config(tmp: Path, outage: str) -> Path:
    """The config of the store-failover runs (the bench and the system test): established/clean/async,
    a Sentinel-managed store with the given outage policy, port 80 open."""
    f = tmp / f"store-failover-{outage}.toml"
    f.write_text(
        '[sync]\nlevel = "established"\naccess = "clean"\nconfirm = "async"\n'
        f'[store]\nha = "sentinel"\noutage = "{outage}"\n'
        '[policy]\ndefault = "drop"\n[[rules]]\naction = "accept"\nproto = "tcp"\ndport = 80\n'
    )
    return f


class Probe:
    """Writes through the sentinels from fwc-mgmt every 10 ms, in a thread; remembers when writes
    were confirmed (and when a replica also acknowledged one)."""

    def __init__(self, url: str, mgmt_netns: str) -> None:
        self.url = url
        self.netns = mgmt_netns
        self.ok: list[float] = []
        self.replicated: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with inside(self.netns):
            asyncio.run(self._loop())

    async def _loop(self) -> None:
        store = RedisStore(self.url, timeout=0.2)
        version = 0
        try:
            while not self._stop.is_set():
                version = (version + 1) % 4096
                rec = FlowRecord(PROBE_KEY, FlowState.ESTABLISHED, True, version, 6, "probe")
                try:
                    await store.write([(rec, 60_000)], clean=False)
                    self.ok.append(time.time())
                    await store.write([(rec, 60_000)], clean=False, replicas=1)
                    self.replicated.append(time.time())
                except StoreError:
                    pass
                await asyncio.sleep(PROBE_INTERVAL)
        finally:
            await store.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _all_store_up(state: Any) -> bool:
    for inst in state.instances:
        try:
            s = query(inst.control_socket, {"cmd": "stats"}, timeout=1.0)
        except (OSError, ValueError):
            return False
        if not (isinstance(s.get("store"), dict) and s["store"].get("store_up")):
            return False
    return True


def _first_after(times: list[float], t: float) -> float:
    return next(((x - t) * 1000 for x in times if x > t), float("nan"))


def trial(state: Any, tmp: Path) -> dict[str, float]:
    sentinel_nodes.wait_ready(Path(state.run_dir))
    streams = _downloads(state)
    steady = SteadyLoad(state, 8, 8.0, 3.0)
    probe = Probe(state.store_url, state.mgmt_netns)
    time.sleep(1.5)
    old = store_primary(state)
    store_kill_primary()
    t_kill = time.time()
    back = float("nan")
    deadline = time.monotonic() + WAIT_BOUND
    while time.monotonic() < deadline:
        if store_primary(state) not in (None, old) and _all_store_up(state):
            back = (time.time() - t_kill) * 1000
            break
        time.sleep(0.02)
    time.sleep(1.0)
    probe.stop()
    failed = int(steady.join().get("failed", 0))
    lost = streams.lost()
    store_start()  # the killed node comes back as a replica of the new primary
    return {
        "writes_back_ms": _first_after(probe.ok, t_kill),
        "replicated_back_ms": _first_after(probe.replicated, t_kill),
        "instances_back_ms": back,
        "new_connections_failed": float(failed),
        "established_lost": float(lost),
    }


def run(trials: int, policies: tuple[str, ...] = POLICIES) -> dict[str, Any]:
    """``trials`` SIGKILLs of the primary for each outage policy, a fresh testbed per policy."""
    per_policy: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fwcluster-store-failover-") as tmp_name:
        tmp = Path(tmp_name)
        with Progress(transient=True) as progress:
            task = progress.add_task("bench store-failover", total=len(policies) * trials)
            for policy in policies:
                results: dict[str, list[float]] = {}
                down()
                up(3, str(failover_config(tmp, policy)))
                try:
                    for i in range(trials):
                        progress.update(task, description=f"{policy}: trial {i + 1}/{trials}")
                        for k, v in trial(require_state(), tmp).items():
                            results.setdefault(k, []).append(v)
                        progress.advance(task)
                finally:
                    down()
                per_policy[policy] = {"figures": {k: _summary(v) for k, v in results.items()}, "raw": results}
    return {"trials": trials, "levels": per_policy}
