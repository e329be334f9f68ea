"""``fwcluster bench failover``: what a failure costs, measured on the real testbed.

Per trial (three instances, two masters, 20 rate-limited long downloads all steered to fw1):
- ``sigkill``: SIGKILL fw1; ``reroute_done_ms`` is the time from the kill until the master has
  moved fw1's buckets (its failover line is written after the steering write returns): from then
  on another instance forwards the downloads' packets (steady streams: the client reads at a
  fixed rate); the TCP stall is the
  longest time without data arriving on any of the downloads (tcpdump in the client), around the
  kill. The master's own detection and reroute times come from its failover line.
- ``sigstop``: SIGSTOP fw1; detection is the time from the stop to the master's failover line
  (missed heartbeats), minus the reroute it reports.
- ``takeover``: SIGKILL the leading master; the time until the other logs that it leads.
- ``scale``: with ``--flows`` flows in the shared table, the time from a scale request to the
  leading master (3 -> 4) until the new instance forwards: cold (the master asks the testbed's
  agent for a new instance) and warm (a ready standby is promoted).
- ``sigkill`` also counts the long downloads lost and the short requests that failed, and gives
  the reroute gap to the first packet another instance forwards (``reroute_gap_ms``).
Bounded: every trial has timeouts; the testbed is torn down at the end, whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.progress import Progress

from fwcluster.bench.capture import LiveCapture, Seen, first_of, flows, longest_silence
from fwcluster.bench.datapath import SteadyLoad, loadgen
from fwcluster.core.states import FlowState
from fwcluster.instance.control import query
from fwcluster.statetable.record import FlowRecord
from fwcluster.statetable.redis_store import RedisStore
from fwcluster.steering.netns import inside
from fwcluster.testbed import down, require_state, restart_instance, steer_move, steer_spread, up
from fwcluster.testbed import masters as master_proc
from fwcluster.testbed.masters import admin_call, master_events, read_status
from fwcluster.testbed.processes import alive
from fwcluster.testbed.provision import ask
from fwcluster.testbed.state import save_state

DOWNLOADS = 20
# A steady stream: the client reads at a fixed rate from a small receive buffer, so each
# download keeps sending small segments (server-side pacing, as /slow/ does, sends bursts with
# idle gaps that would hide the reroute gap behind the application's own silence).
STREAM = "/files/10M.bin"
STREAM_RATE = 2_000_000  # bytes per second per download: 5 s each (bench/stream.py reads them)
# The downloads bind their local ports here, below the client's ephemeral range (32768-60999),
# so the capture sees only them: the short requests' ephemeral ports come back within a trial,
# and the time between two short connections on one port read as a "stall" of the download.
STREAM_PORTS = (20000, 21999)
STREAM_CAPTURE = f"tcp src port 80 and dst portrange {STREAM_PORTS[0]}-{STREAM_PORTS[1]} and greater 200"


LEVELS = ("none", "established", "full")


STEERING = ("symmetric", "ecmp")


def _config(tmp: Path, level: str = "full", steering: str = "symmetric") -> Path:
    f = tmp / f"failover-{level}-{steering}.toml"
    f.write_text(
        f'[sync]\nlevel = "{level}"\naccess = "clean"\nconfirm = "async"\n'
        f'[steering]\nkind = "{steering}"\n'
        '[policy]\ndefault = "drop"\n[[rules]]\naction = "accept"\nproto = "tcp"\ndport = 80\n'
    )
    return f


class Streams:
    """The long downloads of a trial: ``bench/stream.py`` in the client namespace."""

    def __init__(self, client_netns: str, server_addr: str, expected: str) -> None:
        argv = ["ip", "netns", "exec", client_netns, sys.executable, "-m", "fwcluster.bench.stream",
                "--host", server_addr, "--path", STREAM, "--count", str(DOWNLOADS),
                "--rate", str(STREAM_RATE), "--ports", "{}-{}".format(*STREAM_PORTS),
                "--timeout", "30"]  # fmt: skip
        self.expected = expected  # the file's SHA-256
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

    def lost(self, timeout: float = 40.0) -> int:
        """Downloads that failed or arrived other than intact (all of them if the reader failed)."""
        try:
            out, _ = self._proc.communicate(timeout=timeout)
            return sum(1 for d in json.loads(out) if d["error"] or d["sha256"] != self.expected)
        except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
            self._proc.kill()
            self._proc.wait()
            return DOWNLOADS


def stall_ms(data: list[Seen], t_kill: float) -> float:
    """The TCP stall around a kill: the longest silence on any stream, by kernel capture stamps,
    from 0.5 s before the kill to 2 s after it (a silence running into the end counts)."""
    return longest_silence(data, t_kill - 0.5, t_kill + 2.0, to_end=True, kernel=True) * 1000


def _downloads(state: Any) -> Streams:
    return Streams(state.client_netns, state.server_addr, state.files.get(STREAM, ""))


def _wait_event(state: Any, kind: str, after: float, timeout: float = 5.0) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = master_events(state, kind, after)
        if found:
            return found[0]
        time.sleep(0.01)
    return None


def _reset(state: Any) -> Any:
    """Every instance up again, every bucket on fw1."""

    for inst in state.instances:
        if inst.pid is None or not alive(inst.pid):
            restart_instance(inst.id)
    state = require_state()
    for inst in state.instances:
        if inst.id != "fw1":
            steer_move(inst.id, ["fw1"])
    time.sleep(0.3)  # masters see everyone beating again
    return state


def trial_sigkill(state: Any) -> dict[str, float]:
    state = _reset(state)
    streams = _downloads(state)
    steady = SteadyLoad(state, 5, 5.0)
    time.sleep(1.0)
    out = {i.id: LiveCapture(i.netns, "tcp port 80", "out") for i in state.instances}
    client = LiveCapture(state.client_netns, STREAM_CAPTURE)
    time.sleep(0.6)
    t_kill = time.time()
    os.kill(state.instance("fw1").pid, signal.SIGKILL)
    fo = _wait_event(state, "failover", t_kill)
    time.sleep(2.0)
    seen = {k: c.stop() for k, c in out.items()}
    data = client.stop()
    lost = streams.lost()
    steady_failed = int(steady.join()["failed"])
    dead = flows(seen["fw1"], t_kill)
    firsts = [t for k, s in seen.items() if k != "fw1" and (t := first_of(s, dead, t_kill)) is not None]
    return {
        "reroute_gap_ms": (min(firsts) - t_kill) * 1000 if firsts else float("nan"),
        "reroute_done_ms": (fo["time"] - t_kill) * 1000 if fo else float("nan"),
        "tcp_stall_ms": stall_ms(data, t_kill),
        # the same measure over the half second before the kill: the streams' own pacing
        "stream_gap_before_ms": longest_silence(data, t_kill - 0.5, t_kill, kernel=True) * 1000,
        "master_detect_ms": float(fo["detect_ms"]) if fo else float("nan"),
        "master_reroute_ms": float(fo["reroute_ms"]) if fo else float("nan"),
        "long_downloads_lost": float(lost),
        "steady_requests_failed": float(steady_failed),
    }


def trial_sigstop(state: Any) -> dict[str, float]:
    state = _reset(state)
    pid = state.instance("fw1").pid
    t_stop = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        fo = _wait_event(state, "failover", t_stop)
    finally:
        os.kill(pid, signal.SIGCONT)
    if fo is None:
        return {"detection_ms": float("nan")}
    return {"detection_ms": (fo["time"] - t_stop) * 1000 - float(fo["reroute_ms"])}


def trial_takeover(state: Any) -> dict[str, float]:

    leader = next((m for m in state.masters if (read_status(m) or {}).get("leader")), None)
    if leader is None:
        return {"takeover_ms": float("nan")}
    t_kill = time.time()
    os.kill(leader.pid, signal.SIGKILL)
    ev = None
    deadline = time.monotonic() + 5
    while ev is None and time.monotonic() < deadline:
        ev = next((e for e in master_events(state, "leader", t_kill) if e["master"] != leader.id), None)
        time.sleep(0.01)
    result = {"takeover_ms": (ev["time"] - t_kill) * 1000 if ev else float("nan")}
    _restart_master(state, leader)
    return result


def _restart_master(state: Any, dead: Any) -> None:

    new = master_proc.spawn(dead.id, state)
    state.masters = [new if m.id == dead.id else m for m in state.masters]
    save_state(state)
    time.sleep(0.5)


def _fill_store(state: Any, flows: int) -> None:

    async def fill() -> None:
        # The store is in fwc-mgmt: write from inside it.
        store = RedisStore(state.store_url, timeout=5.0)
        try:
            batch = []
            for i in range(flows):
                key = (
                    bytes([6])
                    + (0xC6120000 + 2).to_bytes(4)
                    + (10000 + i % 50000).to_bytes(2)
                    + (0xC6130002).to_bytes(4)
                    + (i // 50000 + 81).to_bytes(2)
                )
                batch.append((FlowRecord(key, FlowState.ESTABLISHED, True, 3, 6, "filler"), 3_600_000))
                if len(batch) == 1000:
                    await store.write(batch, clean=False)
                    batch = []
            if batch:
                await store.write(batch, clean=False)
        finally:
            await store.close()

    with inside(state.mgmt_netns):
        asyncio.run(fill())


def _add_standby(state: Any) -> None:
    """Ask the testbed's provisioning agent for one more standby instance and wait until the
    leading master lists it (it then holds the table and follows the feed)."""

    added = ask(Path(state.run_dir), {"op": "add", "count": 1, "role": "standby"})["added"][0]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        doc = admin_call(state, "GET", "/v1/status")
        if any(i["id"] == added and i["role"] == "standby" for i in doc["instances"]):
            return
        time.sleep(0.1)


def trial_scale(state: Any, flows: int, warm: bool = False) -> dict[str, float]:
    """Scale out by one under load and time it until the new instance forwards; ``warm``: with a
    ready standby instance, which the master promotes instead of provisioning one."""

    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            loadgen(state.client_netns, state.server_addr, 5, 200, timeout=3.0, duration=2.0)

    # Every active instance carries its share again (the failure trials put every bucket on fw1,
    # and the master counts as active what carries buckets): the scale is 3 -> 4.
    active_ids = [i.id for i in state.instances if i.role == "active"]
    steer_spread(active_ids)
    active = len(active_ids)
    if warm:
        _add_standby(state)
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    t0 = time.monotonic()
    answer = admin_call(state, "POST", "/v1/scale", {"active": active + 1})
    ready = time.monotonic()
    state = require_state()
    new = state.instance(answer["added"][0])
    carrying = float("nan")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if int(query(new.control_socket, {"cmd": "stats"})["packets"]) > 0:
                carrying = (time.monotonic() - t0) * 1000
                break
        except OSError:
            pass
        time.sleep(0.005)
    stop.set()
    worker.join(timeout=10)
    snap = query(new.control_socket, {"cmd": "stats"}).get("store") or {}
    admin_call(state, "POST", "/v1/scale", {"active": active})
    prefix = "scale_warm_" if warm else "scale_"
    return {
        prefix + "to_traffic_ms": carrying,
        prefix + "ready_ms": (ready - t0) * 1000,
        prefix + "provision_ms": float(answer.get("provision_ms", "nan")),
        prefix + "steer_ms": float(answer.get("steer_ms", "nan")),
        prefix + "build_ms": float(answer.get("build_ms", "nan")),
        prefix + "join_ms": float(answer.get("join_ms", "nan")),
        prefix + "snapshot_flows": float(snap.get("snapshot_flows", 0)),
    }


def _summary(values: list[float]) -> dict[str, float]:
    vals = sorted(v for v in values if not math.isnan(v))  # a trial that saw nothing is NaN
    if not vals:
        return {"median": float("nan"), "p90": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {
        "median": round(statistics.median(vals), 1),
        "p90": round(vals[min(len(vals) - 1, math.ceil(0.9 * len(vals)) - 1)], 1),
        "min": round(vals[0], 1),
        "max": round(vals[-1], 1),
        "n": len(vals),
    }


def run(
    trials: int, flows: int, levels: tuple[str, ...] = ("full",), steering: str = "symmetric"
) -> dict[str, Any]:
    """``trials`` of each failure for each sync level (a fresh testbed per level), then with
    ``flows`` flows in the table the time from a scale request to the new instance's first packet."""

    per_level: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fwcluster-failover-") as tmp_name:
        tmp = Path(tmp_name)
        with Progress(transient=True) as progress:
            task = progress.add_task("bench failover", total=len(levels) * (trials * 3 + (1 if flows else 0)))
            for level in levels:
                results: dict[str, list[float]] = {}

                def add(doc: dict[str, float], into: dict[str, list[float]] = results) -> None:
                    for k, v in doc.items():
                        into.setdefault(k, []).append(v)

                down()
                state = up(3, str(_config(tmp, level, steering)))
                try:
                    for i in range(trials):
                        for kind in ("sigkill", "sigstop", "takeover"):
                            progress.update(task, description=f"{level}: trial {i + 1}/{trials}: {kind}")
                            state = require_state()  # restarts change pids: always work from the file
                            if kind == "sigkill":
                                add(trial_sigkill(state))
                            elif kind == "sigstop":
                                add(trial_sigstop(state))
                            else:
                                add(trial_takeover(state))
                            progress.advance(task)
                    if flows:
                        progress.update(task, description=f"{level}: scale with {flows:,} flows")
                        state = _reset(state)
                        _fill_store(state, flows)
                        add(trial_scale(state, flows))
                        add(trial_scale(require_state(), flows, warm=True))
                        progress.advance(task)
                finally:
                    down()
                per_level[level] = {"figures": {k: _summary(v) for k, v in results.items()}, "raw": results}
    return {"trials": trials, "flows": flows, "steering": steering, "levels": per_level}
