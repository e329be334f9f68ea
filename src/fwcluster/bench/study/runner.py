"""``fwcluster bench study``: the study's evaluation rerun on the real testbed.

The design (slides, "Test Bed Configuration" and after): clients in fwc-client download the 1-byte
``/index.html`` from nginx in fwc-server, one TCP connection per download, at 25 and 100 concurrent
connections; the metric is the connection setup time at the client. Measured here:

- the 12 settings (level x access x confirm) on 3 instances;
- cluster sizes 6 and 9 for the settings the study varied (``none``/dirty/async,
  ``established``/dirty/async, ``full``/clean/sync);
- the baselines on the same 3-instance topology: ``direct`` (plain forwarding) and ``kernel`` (the
  kernel's stateful firewall with conntrack in the instance namespaces).

With ``follows`` (``--follow all,backup``) each sharing setting is measured with each design of
``[sync] follow``: ``backup`` (an instance applies only its ring predecessor's changes) and
``all`` (the seed's: every instance applies every change), side by side in one run; the
instances' ``feed_applied`` before and after each measurement gives the feed records applied per
download. No master runs, so the runner publishes the membership a leader would (every instance
active) after each restart; the ring follows from it.

Every round (run) measures every configuration once; the order of cluster sizes, of setups within
a size and of the loads rotates from round to round, so drift on a shared machine spreads evenly.
Instances restart with the new settings between setups and the store is emptied (every setup
starts from the same empty table). No master runs: nothing should fail over while settings change.
The outputs (results.json, samples.csv, report.md, plots) come from the other modules here.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fwcluster.bench.datapath import loadgen
from fwcluster.bench.study.outputs import write_outputs
from fwcluster.bench.study.results import (
    BASE_INSTANCES,
    DIRECT,
    FOLLOW_DEFAULT,
    FOLLOWS,
    KERNEL,
    Configuration,
    Run,
)
from fwcluster.bench.study.summary import summarize_study
from fwcluster.bench.sync import SETTINGS, config_text, flush_store
from fwcluster.control.master import WRITE_MEMBERS
from fwcluster.instance.control import query
from fwcluster.testbed import down, reconfigure, scale, set_mode, store_client_argv, up

SIZE_SETTINGS = (("none", "dirty", "async"), ("established", "dirty", "async"), ("full", "clean", "sync"))
LOADS = (25, 100)
SIZES = (3, 6, 9)
RUNS, COUNT = 10, 10_000
QUICK_RUNS, QUICK_COUNT = 1, 300
CONNECT_TIMEOUT = 5.0
PACKAGES = ("fwcluster", "NetfilterQueue", "pyroute2", "redis", "hiredis", "rich", "matplotlib")


@dataclass(frozen=True)
class Setup:
    """What one measurement needs the testbed to be: cluster size plus a baseline or a setting."""

    instances: int
    name: str  # "direct", "kernel" or "level/access/confirm"
    follow: str = FOLLOW_DEFAULT  # [sync] follow

    def configuration(self, load: int) -> Configuration:
        if self.name in (DIRECT, KERNEL):
            return Configuration.baseline(self.name, instances=self.instances, load=load)
        level, access, confirm = self.name.split("/")
        return Configuration.setting(
            level, access, confirm, instances=self.instances, load=load, follow=self.follow
        )

    @property
    def config(self) -> str:
        """The key of its config file (setting and follow)."""
        return f"{self.name}|{self.follow}"


def plan(
    sizes: Sequence[int],
    follows: Sequence[str] = (FOLLOW_DEFAULT,),
    settings: Sequence[tuple[str, str, str]] | None = None,
) -> dict[int, list[Setup]]:
    """The setups per cluster size: all settings and both baselines at 3, the varied ones beyond
    (or ``settings`` at every size); each sharing setting once per design in ``follows`` (level
    none follows nothing: once)."""
    out: dict[int, list[Setup]] = {}
    for size in sizes:
        chosen = settings or (SETTINGS if size == BASE_INSTANCES else SIZE_SETTINGS)
        setups = [
            Setup(size, "/".join(s), f) for s in chosen for f in (follows[:1] if s[0] == "none" else follows)
        ]
        if size == BASE_INSTANCES:
            setups += [Setup(size, DIRECT), Setup(size, KERNEL)]
        out[size] = setups
    return out


def _rotate(items: Sequence[Any], k: int) -> list[Any]:
    k %= max(1, len(items))
    return [*items[k:], *items[:k]]


def machine() -> dict[str, Any]:
    packages: dict[str, str] = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    for tool, argv in (("redis-server", ["redis-server", "--version"]), ("nginx", ["nginx", "-v"])):
        if shutil.which(argv[0]):
            p = subprocess.run(argv, capture_output=True, text=True, check=False)
            packages[tool] = (p.stdout + p.stderr).strip().splitlines()[0] if (p.stdout + p.stderr) else "?"
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "cpus": os.cpu_count() or 0,
        "python": platform.python_version(),
        "packages": packages,
    }


def run(
    out_dir: Path,
    *,
    quick: bool = False,
    runs: int | None = None,
    count: int | None = None,
    loads: Sequence[int] = LOADS,
    sizes: Sequence[int] = SIZES,
    follows: Sequence[str] = (FOLLOW_DEFAULT,),
    settings: Sequence[tuple[str, str, str]] | None = None,
    command: str = "",
) -> tuple[dict[str, Any], list[Path]]:
    """Measure everything, write the outputs into ``out_dir``; returns (results doc, files written)."""
    runs = runs or (QUICK_RUNS if quick else RUNS)
    count = count or (QUICK_COUNT if quick else COUNT)
    warmup = max(20, count // 50)
    setups = plan(sizes, follows, settings)
    started = datetime.now(UTC)
    samples: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="fwcluster-study-") as tmp:
        configs: dict[str, Path] = {}
        for level, access, confirm in SETTINGS:
            for follow in FOLLOWS:
                f = Path(tmp) / f"{level}-{access}-{confirm}-{follow}.toml"
                f.write_text(config_text(level, access, confirm, follow))
                configs[f"{level}/{access}/{confirm}|{follow}"] = f
        down()
        state = up(min(sizes), str(configs[f"none/dirty/async|{FOLLOW_DEFAULT}"]))
        try:
            columns = (
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
            )  # fmt: skip
            with Progress(*columns, transient=True) as progress:
                total = runs * sum(len(s) for s in setups.values()) * len(loads)
                task = progress.add_task("bench study", total=total)
                for r in range(runs):
                    for size in _rotate(sorted(setups), r):
                        if len(state.instances) != size:
                            set_mode("fwcluster")
                            state, _ = scale(size)
                        for setup in _rotate(setups[size], r):
                            state = _apply(state, setup, configs, set_mode, reconfigure)
                            for load in _rotate(list(loads), r):
                                what = f"run {r + 1}/{runs}: {setup.name}@{size}x{load}"
                                progress.update(task, description=what)
                                samples.append(_measure(state, setup, load, r, warmup, count))
                                progress.advance(task)
        finally:
            down()
    meta = {
        "command": command or " ".join(sys.argv),
        "date": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "runs": runs,
        "count": count,
        "warmup": warmup,
        "loads": list(loads),
        "sizes": list(sizes),
        "follows": list(follows),
        "machine": machine(),
    }
    doc = summarize_study(samples, meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    return doc, write_outputs(out_dir, samples, doc)


def _measure(state: Any, setup: Setup, load: int, r: int, warmup: int, count: int) -> Run:
    """One run of one configuration: a warm-up, then ``count`` downloads at ``load`` concurrent."""
    loadgen(state.client_netns, state.server_addr, load, warmup)
    before = _feed_applied(state) if setup.name not in (DIRECT, KERNEL) else None
    t0 = time.time()
    res = loadgen(state.client_netns, state.server_addr, load, count, timeout=CONNECT_TIMEOUT)
    after = _feed_applied(state) if before is not None else None
    return Run(
        configuration=setup.configuration(load),
        run=r,
        started=t0,
        connect_us=list(res["connect_us"]),
        total_us=list(res["total_us"]),
        failed=int(res["failed"]),
        completed=int(res["completed"]),
        connections_per_second=float(res["connections_per_second"]),
        feed_applied=after - before if after is not None and before is not None else None,
    )


def _feed_applied(state: Any) -> int | None:
    """The feed records all instances have applied so far (None if one does not answer)."""
    total = 0
    for inst in state.instances:
        try:
            store = query(inst.control_socket, {"cmd": "stats"}, timeout=5.0).get("store") or {}
        except OSError:
            return None
        total += int(store.get("feed_applied", 0))
    return total


def publish_members(state: Any) -> None:
    """What a leading master would publish: every instance of the testbed active (the ring)."""
    pairs = [x for inst in state.instances for x in (inst.id, "active")]
    if state.store_conf and pairs:
        argv = [*store_client_argv(state=state), "EVAL", WRITE_MEMBERS, "1", "fwc:members", *pairs]
        subprocess.run(argv, capture_output=True, timeout=10, check=False)


def _apply(state: Any, setup: Setup, configs: dict[str, Path], set_mode: Any, reconfigure: Any) -> Any:
    """Make the testbed what ``setup`` needs: a baseline filter mode, or fwcluster instances
    restarted with the setting (from an empty store)."""
    if setup.name in (DIRECT, KERNEL):
        return set_mode(setup.name)
    set_mode("fwcluster")
    flush_store(state)
    publish_members(state)  # before the restart: the instances read it as they start
    return reconfigure(configs[setup.config])
