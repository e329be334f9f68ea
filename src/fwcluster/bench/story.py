"""The demo's story on a running testbed: steady load and long downloads while an instance is
killed, the cluster scales to 6 and back to 3, and the leading master is killed; a timeline of
connections per second and of the instances carrying traffic, with the events marked.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt

from fwcluster.bench.datapath import loadgen
from fwcluster.testbed import require_state, steer_table
from fwcluster.testbed.masters import admin_call, master_events, read_status
from fwcluster.testbed.scaling import active as carrying_instances

SLICE = 0.5  # seconds per point of the timeline
STORY_SECONDS = 22.0  # how long the steady load runs (the phases fit inside)
LOAD_RATE = 500.0  # new short downloads per second, an open loop (Poisson arrivals)
LOAD = 200  # at most this many open at once (beyond it an arrival is counted as dropped)
LONG = 10  # long-lived downloads
LONG_PATH = "/files/10M.bin"
LONG_RATE = "600K"  # each long download reads at this rate: ~17 s


@dataclass
class Timeline:
    t0: float = field(default_factory=time.time)
    points: list[tuple[float, int, int, int]] = field(default_factory=list)  # t, ok, failed, carrying
    carrying: list[tuple[float, int]] = field(default_factory=list)
    load: dict[str, Any] = field(default_factory=dict)
    load_started: float = 0.0
    events: list[tuple[float, str]] = field(default_factory=list)
    phases: list[tuple[float, str]] = field(default_factory=list)

    def mark(self, label: str) -> None:
        self.events.append((time.time() - self.t0, label))

    def phase(self, name: str) -> None:
        self.phases.append((time.time() - self.t0, name))


def _carrying() -> int:

    try:
        return len(set(steer_table()["forward"].values()))
    except Exception:
        return 0


def _load(state: Any, tl: Timeline) -> None:
    """One load generator for the whole story, reporting when each download ended."""
    tl.load_started = time.time() - tl.t0
    # An open loop: arrivals keep their schedule whatever happens to earlier connections, so the
    # timeline shows what a failover costs new connections (a closed loop's workers all stall
    # behind one lost packet and the plot drops to zero for a second).
    tl.load = loadgen(
        state.client_netns,
        state.server_addr,
        LOAD,
        10_000_000,
        timeout=10.0,  # a connection caught in the failover gap waits out TCP retransmissions
        duration=STORY_SECONDS,
        timeline=True,
        rate=LOAD_RATE,
    )


def _sample(tl: Timeline, stop: threading.Event) -> None:
    while not stop.is_set():
        tl.carrying.append((time.time() - tl.t0, _carrying()))
        stop.wait(SLICE)


def _bin(tl: Timeline) -> None:
    """Completions and failures per SLICE, with the instances carrying traffic at that time."""
    offset = tl.load_started
    done = [offset + t for t in tl.load.get("done_s", [])]
    failed = [offset + t for t in tl.load.get("failed_s", [])]
    end = max(done + failed + [c[0] for c in tl.carrying] + [0.0])
    t = 0.0
    while t < end:
        carrying = [n for ts, n in tl.carrying if ts <= t + SLICE]
        tl.points.append(
            (
                t + SLICE,
                sum(1 for d in done if t <= d < t + SLICE),
                sum(1 for f in failed if t <= f < t + SLICE),
                carrying[-1] if carrying else 0,
            )
        )
        t += SLICE


def _wait(what: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.02)
    return None


def run(state: Any, out_dir: Path) -> dict[str, Any]:
    """Run the story on a testbed with masters; returns the summary and writes the plot."""

    tl = Timeline()
    stop = threading.Event()
    files = out_dir / "downloads"
    files.mkdir(parents=True, exist_ok=True)
    longs = []
    for i in range(LONG):
        argv = [
            "ip",
            "netns",
            "exec",
            state.client_netns,
            "curl",
            "-s",
            "--max-time",
            "60",
            "--limit-rate",
            LONG_RATE,
        ]
        longs.append(
            subprocess.Popen([*argv, "-o", str(files / f"long{i}"), f"http://{state.server_addr}{LONG_PATH}"])
        )
    worker = threading.Thread(target=_load, args=(state, tl), daemon=True)
    sampler = threading.Thread(target=_sample, args=(tl, stop), daemon=True)
    worker.start()
    sampler.start()
    summary: dict[str, Any] = {}
    tl.phase("steady")
    time.sleep(3)

    tl.phase("instance killed")
    victim = next(i for i in state.instances if i.role == "active")
    t_kill = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    tl.mark(f"SIGKILL {victim.id}")
    fo = _wait(lambda: master_events(state, "failover", t_kill), 5)
    if fo:
        e = fo[0]
        summary["failover"] = {
            "instance": victim.id,
            "to": e["to"],
            "detect_ms": e["detect_ms"],
            "reroute_ms": e["reroute_ms"],
            "gap_ms": round((e["time"] - t_kill) * 1000, 1),
        }
    time.sleep(3)

    tl.phase("scaled out")
    active = len(carrying_instances(require_state()))  # after the failover: the standby carries
    t = time.monotonic()
    admin_call(state, "POST", "/v1/scale", {"active": active + 3})  # as an operator: via the leader
    summary["scale_out_s"] = round(time.monotonic() - t, 2)
    tl.mark(f"scale {active} -> {active + 3}")
    time.sleep(3)

    tl.phase("scaled in")
    t = time.monotonic()
    admin_call(state, "POST", "/v1/scale", {"active": active})
    summary["scale_in_s"] = round(time.monotonic() - t, 2)
    tl.mark(f"scale {active + 3} -> {active}")
    time.sleep(2)

    tl.phase("master killed")
    state = require_state()
    leader = next((m for m in state.masters if (read_status(m) or {}).get("leader")), None)
    if leader is not None:
        t_kill = time.time()
        os.kill(leader.pid, signal.SIGKILL)
        tl.mark(f"SIGKILL master {leader.id}")
        took = _wait(
            lambda: [e for e in master_events(state, "leader", t_kill) if e["master"] != leader.id], 5
        )
        if took:
            summary["takeover_ms"] = round((took[0]["time"] - t_kill) * 1000, 1)
    worker.join(timeout=STORY_SECONDS + 30)
    tl.phase("end")
    stop.set()
    sampler.join(timeout=5)
    _bin(tl)

    expected = state.files.get(LONG_PATH, "")
    intact = 0
    for i, p in enumerate(longs):
        p.wait(timeout=60)
        path = files / f"long{i}"
        if p.returncode == 0 and path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == expected:
            intact += 1
    summary["long_downloads"] = {"intact": intact, "total": LONG}
    summary["phases"] = _per_phase(tl)
    summary["errors"] = tl.load.get("errors", {})
    summary["plot"] = str(plot(tl, out_dir / "fwcluster-demo-timeline.png"))
    return summary


def _per_phase(tl: Timeline) -> list[dict[str, Any]]:
    rows = []
    bounds = tl.phases
    for (start, name), (end, _) in itertools.pairwise(bounds):
        pts = [p for p in tl.points if start <= p[0] < end]
        rows.append(
            {
                "phase": name,
                "start_s": round(start, 1),
                "ok": sum(p[1] for p in pts),
                "failed": sum(p[2] for p in pts),
            }
        )
    return rows


def plot(tl: Timeline, path: Path) -> Path:

    matplotlib.use("Agg")

    fig, ax = plt.subplots(figsize=(10, 4.5))
    ts = [p[0] for p in tl.points]
    ax.plot(ts, [p[1] / SLICE for p in tl.points], color="tab:blue", label="connections/s completed")
    ax.plot(ts, [p[2] / SLICE for p in tl.points], color="tab:red", label="connections/s failed")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("connections per second")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.step(
        ts, [p[3] for p in tl.points], where="post", color="tab:green", label="instances carrying traffic"
    )
    ax2.set_ylabel("instances carrying traffic")
    ax2.set_ylim(0, max([p[3] for p in tl.points] + [1]) + 1)
    for t, label in tl.events:
        ax.axvline(t, color="gray", linestyle="--", linewidth=1)
        ax.annotate(label, (t, ax.get_ylim()[1] * 0.95), rotation=90, va="top", ha="right", fontsize=8)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower left", fontsize=8)
    ax.set_title("fwcluster demo: load through failover, scaling and a master takeover")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
