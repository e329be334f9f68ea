"""``fwcluster bench datapath``: new connections per second and TCP connect time at a fixed
concurrency, through (a) one fwcluster instance, (b) the kernel's own stateful firewall in the
same namespace, (c) plain forwarding. One testbed, one run, setups interleaved round by round so
that drift on a shared machine spreads over all three."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.progress import Progress

from fwcluster.bench.stats import summarize

SETUPS = ("fwcluster", "kernel", "direct")
WARMUP = 200


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
    on_mark: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the load generator inside ``netns``; returns its JSON result.

    ``rate`` (new connections per second) makes it an open loop with ``concurrency`` as the bound
    on open connections; ``warmup`` seconds of the same load run first, unrecorded; ``on_mark`` is
    called with ``"measuring"`` when the measured window starts and ``"stopped"`` when it ends
    (e.g. to read the instance's CPU time at those moments)."""
    argv = [
        "ip", "netns", "exec", netns, sys.executable, "-m", "fwcluster.bench.loadgen",
        "--host", host, "--concurrency", str(concurrency), "--count", str(count), "--path", path,
        "--duration", str(duration), "--timeout", str(timeout),
    ]  # fmt: skip
    if timeline:
        argv.append("--timeline")
    if rate is not None:
        argv += ["--rate", str(rate), "--arrivals", arrivals]
    if warmup > 0:
        argv += ["--warmup", str(warmup)]
    if seed is not None:
        argv += ["--seed", str(seed)]
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


def run(config_path: str | None, concurrency: int, count: int, rounds: int) -> dict[str, Any]:
    from fwcluster.config import load_config
    from fwcluster.testbed.api import down, set_filter_mode, up

    config = load_config(config_path)
    down()
    state = up(1, config_path)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SETUPS}
    try:
        fw = state.instances[0].netns
        with Progress(transient=True) as progress:
            task = progress.add_task("bench datapath", total=rounds * len(SETUPS))
            for r in range(rounds):
                order = SETUPS[r % 3 :] + SETUPS[: r % 3]  # rotate who goes first
                for setup in order:
                    progress.update(task, description=f"round {r + 1}/{rounds}: {setup}")
                    set_filter_mode(fw, setup, config)
                    loadgen(state.client_netns, state.server_addr, concurrency, WARMUP)
                    runs[setup].append(loadgen(state.client_netns, state.server_addr, concurrency, count))
                    progress.advance(task)
    finally:
        down()
    doc: dict[str, Any] = {"concurrency": concurrency, "count": count, "rounds": rounds}
    for setup in SETUPS:
        connect = [us for run in runs[setup] for us in run["connect_us"]]
        total = [us for run in runs[setup] for us in run["total_us"]]
        c, t = summarize(connect), summarize(total)
        doc[setup] = {
            "connections_per_second": statistics.median(run["connections_per_second"] for run in runs[setup]),
            "runs_connections_per_second": [round(run["connections_per_second"], 1) for run in runs[setup]],
            "connect_us_p50": c["p50"],
            "connect_us_p90": c["p90"],
            "connect_us_p99": c["p99"],
            "total_us_p50": t["p50"],
            "completed": sum(run["completed"] for run in runs[setup]),
            "failed": sum(run["failed"] for run in runs[setup]),
        }
    doc["ratios"] = {
        "fwcluster_over_kernel_rate": doc["fwcluster"]["connections_per_second"]
        / doc["kernel"]["connections_per_second"],
        "fwcluster_over_kernel_connect_p50": doc["fwcluster"]["connect_us_p50"]
        / max(1, doc["kernel"]["connect_us_p50"]),
    }
    return doc
