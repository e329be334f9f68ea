"""``fwcluster bench datapath``: new connections per second and TCP connect time through (a) one
fwcluster instance, (b) the kernel's own stateful firewall in the same namespace, (c) plain
forwarding. One testbed, one run, setups interleaved round by round (the order rotates) so that
drift on a shared machine spreads over all three.

Each round measures the steady state: after the filter-mode switch, ``warmup`` seconds of the same
load run unrecorded in the same load generator, then ``seconds`` are measured. The instance's CPU
time (``/proc/<pid>/stat``) over the measured window, per connection completed in it, stands
beside the rates, and so does the load generator's own CPU time (how close it is to being the
bottleneck). By default the instance runs at sync level ``none`` with nothing beside it (no store,
no masters), the closest match to the kernel firewall; ``--config`` gives it another setting.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fwcluster.bench.procstat import cpu_seconds
from fwcluster.bench.rounds import interleaved
from fwcluster.bench.stats import summarize
from fwcluster.config import DEFAULT_TOML, load_config
from fwcluster.instance.control import query
from fwcluster.testbed import down, set_filter_mode, up

SETUPS = ("fwcluster", "kernel", "direct")
INSTANCE_FIGURES = (
    "instance_cpu_us_per_connection", "instance_cpu_cores", "user_space_packets_per_connection",
)  # fmt: skip
UNBOUNDED = 10_000_000  # downloads per round when only time bounds it

# One instance with nothing to share with and nothing watching it; the built-in config's policy and rules.
DATAPATH_CONFIG = (
    '[sync]\nlevel = "none"\n[store]\nbackend = "memory"\n[cluster]\nmasters = 0\n'
    + DEFAULT_TOML[DEFAULT_TOML.index("[policy]") :]
)


def loadgen(
    netns: str,
    host: str,
    concurrency: int,
    count: int,
    path: str = "/index.html",
    timeout: float = 5.0,
    duration: float = 600.0,
    timeline: bool = False,
    *,
    rate: float | None = None,
    arrivals: str = "poisson",
    warmup: float = 0.0,
    seed: int | None = None,
    procs: int = 1,
    on_mark: Callable[[str], None] | None = None,
    port: int = 80,
) -> dict[str, Any]:
    """Run the load generator inside ``netns``; returns its JSON result.

    ``rate`` (new connections per second) makes it an open loop with ``concurrency`` as the bound
    on open connections; ``warmup`` seconds of the same load run first, unrecorded; ``on_mark`` is
    called with ``"measuring"`` when the measured window starts and ``"stopped"`` when it ends
    (e.g. to read the instance's CPU time at those moments). ``procs`` worker processes share the
    load (one Python process is one core; on a fast path one would be the bottleneck). ``port``:
    the server's port (the testbed's nginx serves 80 and 8081)."""
    argv = [
        "ip", "netns", "exec", netns, sys.executable, "-m", "fwcluster.bench.loadgen",
        "--host", host, "--concurrency", str(concurrency), "--count", str(count), "--path", path,
        "--duration", str(duration), "--timeout", str(timeout),
    ]  # fmt: skip
    if port != 80:
        argv += ["--port", str(port)]
    if timeline:
        argv.append("--timeline")
    if rate is not None:
        argv += ["--rate", str(rate), "--arrivals", arrivals]
    if warmup > 0:
        argv += ["--warmup", str(warmup)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    if procs > 1:
        argv += ["--procs", str(procs)]
    bound = warmup + min(duration, 600.0) + timeout + 300
    if on_mark is None:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=bound, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"load generator failed: {p.stderr.strip().splitlines()[-1:]}")
        result: dict[str, Any] = json.loads(p.stdout)
        return result
    return _loadgen_with_marks([*argv, "--marks"], bound, on_mark)


def _loadgen_with_marks(argv: list[str], bound: float, on_mark: Callable[[str], None]) -> dict[str, Any]:
    """The load generator with ``--marks``: each mark line is handed to ``on_mark`` as it comes."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(bound, proc.kill)  # bounded: the generator is ended by its pid
    watchdog.start()
    last = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            doc = json.loads(line) if line.startswith("{") else None
            if isinstance(doc, dict) and set(doc) == {"mark"}:
                on_mark(str(doc["mark"]))
            else:
                last = line
        _, err = proc.communicate()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or not last:
        raise RuntimeError(f"load generator failed: {err.strip().splitlines()[-1:]}")
    result: dict[str, Any] = json.loads(last)
    return result


class SteadyLoad:
    """Short downloads in a thread for ``seconds`` (the background load of the failure and
    scaling trials): ``concurrency`` at a time (closed loop), or with ``rate`` new connections per
    second (open loop, at most ``concurrency`` open); remembers when each failure happened."""

    def __init__(
        self,
        state: Any,
        concurrency: int,
        seconds: float,
        timeout: float = 3.0,
        rate: float | None = None,
    ) -> None:
        self.result: dict[str, Any] = {}
        self.t0 = time.time()
        self.timeout = timeout
        self._thread = threading.Thread(
            target=lambda: self.result.update(
                loadgen(state.client_netns, state.server_addr, concurrency, 1_000_000, timeout=timeout,
                        duration=seconds, timeline=True, rate=rate)
            ),
            daemon=True,
        )  # fmt: skip
        self._thread.start()

    def join(self) -> dict[str, Any]:
        self._thread.join(timeout=60)
        return self.result

    def started_after(self, t: float) -> list[float]:
        """Failed requests that started after ``t`` (unix time). The loader started a little after
        ``t0``, so this errs towards fewer."""
        return [f for f in self.result["failed_s"] if self.t0 + f - self.timeout > t]


@dataclass(frozen=True)
class Plan:
    """What one ``bench datapath`` run measures."""

    rounds: int = 3
    seconds: float = 8.0  # measured per round and setup
    warmup: float = 2.0  # unrecorded, before each measured window
    concurrency: int = 25  # closed loop: in flight; open loop: the bound on open connections
    count: int = UNBOUNDED  # an extra bound on the downloads of one round
    procs: int = 2  # load generator processes
    rate: float | None = None  # open loop: new connections per second
    arrivals: str = "poisson"


def run(config_path: str | None, plan: Plan) -> dict[str, Any]:

    described = config_path or "built-in: one instance, sync none, memory store, no masters"
    with tempfile.TemporaryDirectory(prefix="fwcluster-bench-") as tmp:
        if config_path is None:
            config_path = str(Path(tmp) / "datapath.toml")
            Path(config_path).write_text(DATAPATH_CONFIG)
        config = load_config(config_path)
        down()
        state = up(1, config_path)
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SETUPS}
        try:
            inst = state.instances[0]
            for _, setup in interleaved("bench datapath", SETUPS, plan.rounds):
                set_filter_mode(inst.netns, setup, config)
                runs[setup].append(measure(state, inst, plan))
        finally:
            down()
    doc: dict[str, Any] = {
        "concurrency": plan.concurrency,
        "rounds": plan.rounds,
        "seconds": plan.seconds,
        "warmup": plan.warmup,
        "count": None if plan.count >= UNBOUNDED else plan.count,
        "procs": plan.procs,
        "mode": "closed" if plan.rate is None else "open",
        "rate": plan.rate,
        "arrivals": None if plan.rate is None else plan.arrivals,
        "sync": config.sync.as_dict(),
        "fast_path": config.datapath.fast_path,
        "config": described,
    }
    for setup in SETUPS:
        doc[setup] = summarize_setup(runs[setup], with_instance=setup == "fwcluster")
    doc["ratios"] = ratios(doc)
    return doc


def measure(state: Any, inst: Any, plan: Plan) -> dict[str, Any]:
    """One round of one setup: warm-up, then the measured window, with the instance's CPU time
    and user-space packets read at the window's edges."""

    marks: dict[str, tuple[float, int]] = {}

    def on_mark(name: str) -> None:
        try:
            packets = int(
                query(inst.control_socket, {"cmd": "stats"}, timeout=2.0).get("user_space_packets", 0)
            )
        except (OSError, ValueError):
            packets = 0
        marks[name] = (cpu_seconds(inst.pid), packets)

    res = loadgen(
        state.client_netns, state.server_addr, plan.concurrency, plan.count, duration=plan.seconds,
        warmup=plan.warmup, rate=plan.rate, arrivals=plan.arrivals, procs=plan.procs, on_mark=on_mark,
    )  # fmt: skip
    (cpu0, pk0), (cpu1, pk1) = marks["measuring"], marks["stopped"]
    n = max(1, int(res["window_completed"]))
    res["instance_cpu_us_per_connection"] = round((cpu1 - cpu0) * 1e6 / n, 1)
    res["instance_cpu_cores"] = round((cpu1 - cpu0) / max(1e-9, float(res["window_s"])), 3)
    res["user_space_packets_per_connection"] = round((pk1 - pk0) / n, 2)
    return res


def summarize_setup(runs: list[dict[str, Any]], with_instance: bool) -> dict[str, Any]:
    """Medians over the rounds of one setup; latency percentiles pooled over all connections."""
    connect = [us for run in runs for us in run["connect_us"]]
    total = [us for run in runs for us in run["total_us"]]
    c, t = summarize(connect), summarize(total)
    out: dict[str, Any] = {
        "connections_per_second": statistics.median(run["connections_per_second"] for run in runs),
        "runs_connections_per_second": [round(run["connections_per_second"], 1) for run in runs],
        "connect_us_p50": c["p50"],
        "connect_us_p90": c["p90"],
        "connect_us_p99": c["p99"],
        "total_us_p50": t["p50"],
        "completed": sum(run["completed"] for run in runs),
        "failed": sum(run["failed"] for run in runs),
        "dropped_arrivals": sum(run.get("dropped_arrivals", 0) for run in runs),
        # how many cores the load generator itself used in the measured window (near `procs`: the
        # generator, not the path under test, set the pace)
        "loadgen_cpu_cores": statistics.median(run["cpu_s"] / max(1e-9, run["window_s"]) for run in runs),
    }
    sojourn = [us for run in runs for us in run.get("sojourn_us", [])]
    if sojourn:
        so = summarize(sojourn)
        out.update(sojourn_us_p50=so["p50"], sojourn_us_p99=so["p99"])
    if with_instance:
        for key in (
            "instance_cpu_us_per_connection",
            "instance_cpu_cores",
            "user_space_packets_per_connection",
        ):
            out[key] = statistics.median(run[key] for run in runs)
            out[f"runs_{key}"] = [run[key] for run in runs]
    return out


def ratios(doc: dict[str, Any]) -> dict[str, float]:
    fw, kernel = doc["fwcluster"], doc["kernel"]
    out = {
        "fwcluster_over_kernel_rate": fw["connections_per_second"]
        / max(1e-9, kernel["connections_per_second"]),
        "fwcluster_over_kernel_connect_p50": fw["connect_us_p50"] / max(1, kernel["connect_us_p50"]),
    }
    if "sojourn_us_p50" in fw and "sojourn_us_p50" in kernel:
        out["fwcluster_over_kernel_sojourn_p50"] = fw["sojourn_us_p50"] / max(1, kernel["sojourn_us_p50"])
    return out
