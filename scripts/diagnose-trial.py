"""Why a ``bench scale`` or ``bench failover`` trial failed requests.

STEP ``scale`` (the default) is the trial of ``fwcluster bench scale`` (20 long downloads,
5 concurrent short requests, 3 -> 6 -> 3 through the leading master); ``kill`` is the SIGKILL
trial of ``fwcluster bench failover`` (every bucket on fw1, the same load, SIGKILL of fw1, which
is restarted and given every bucket again before the next trial); ``failover`` is ``kill``
followed, as in ``bench failover``, by its SIGSTOP and master-takeover trials (not captured).
Each runs with captures at
the client and the server (the short requests only), the instances' counters polled through the
trial (the instances that leave at scale-in, or die, vanish with theirs), and for each connection
that sent its SYN twice or lived over 1.5 s the packets seen at each end: a packet the client
sent and the server never saw (or the reverse) was dropped by a firewall instance.

    flock /tmp/fwc-testbed.lock python scripts/diagnose-trial.py LEVEL STEERING TRIALS OUTDIR [STEP]

Prints per trial the failures, the scale steps' times, each instance's drop reasons and store
counters, and the suspects' packets; keeps the pcaps and a JSON of the counters in OUTDIR. Brings
a testbed up and down (it replaces one that is up).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from fwcluster.bench.datapath import SteadyLoad
from fwcluster.bench.failover import _config, _downloads, _reset, _wait_event, trial_sigstop, trial_takeover
from fwcluster.instance.control import query
from fwcluster.testbed import down, require_state, up
from fwcluster.testbed.masters import admin_call

level = sys.argv[1] if len(sys.argv) > 1 else "full"
steering = sys.argv[2] if len(sys.argv) > 2 else "ecmp"
trials = int(sys.argv[3]) if len(sys.argv) > 3 else 3
out = Path(sys.argv[4] if len(sys.argv) > 4 else "diagnose-trial")
step = sys.argv[5] if len(sys.argv) > 5 else "scale"
if step not in ("scale", "kill", "failover"):
    sys.exit(f"diagnose-trial: STEP is scale, kill or failover, not {step!r}")
out.mkdir(parents=True, exist_ok=True)

FILTER = "tcp port 80 and not portrange 20000-21999"
CT_SHOWN = (
    "clashres",
    "invalid",
    "ignore",
    "insert_failed",
    "drop",
    "early_drop",
    "icmp_error",
    "search_restart",
)


def cap(netns: str, path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "timeout",
            "60",
            "ip",
            "netns",
            "exec",
            netns,
            "tcpdump",
            "-i",
            "any",
            "-n",
            "-s",
            "96",
            "-w",
            str(path),
            "-U",
            FILTER,
        ],
        stderr=subprocess.DEVNULL,
    )


def read(path: Path) -> list[tuple[float, str, int, str]]:
    """(time, direction c2s/s2c, client port, flags+seq text); a capture on ``any`` interface
    keeps the interface and In/Out in front of the text."""
    txt = subprocess.run(
        ["tcpdump", "-r", str(path), "-n", "-tt", "-S"], check=False, capture_output=True, text=True
    ).stdout
    rows = []
    for line in txt.splitlines():
        parts = line.split()
        try:
            t = float(parts[0])
            i = parts.index(">")
            src, dst = parts[i - 1], parts[i + 1].rstrip(":")
        except (ValueError, IndexError):
            continue
        where = f"{parts[1]} {parts[2]} " if parts[2] in ("In", "Out") else ""
        sp, dp = int(src.rsplit(".", 1)[1]), int(dst.rsplit(".", 1)[1])
        rest = where + (line.split(": ", 1)[1] if ": " in line else "")
        if dp == 80:
            rows.append((t, "c2s", sp, rest[:80]))
        elif sp == 80:
            rows.append((t, "s2c", dp, rest[:80]))
    return rows


def ct_stats(netns: str) -> dict[str, int]:
    """The kernel's conntrack counters of a namespace, summed over the CPUs."""
    try:
        lines = subprocess.run(
            ["ip", "netns", "exec", netns, "cat", "/proc/net/stat/nf_conntrack"],
            check=False, capture_output=True, text=True, timeout=5,
        ).stdout.split("\n")  # fmt: skip
    except subprocess.TimeoutExpired:
        return {}
    names = lines[0].split() if lines else []
    total: dict[str, int] = defaultdict(int)
    for line in lines[1:]:
        for name, value in zip(names, line.split(), strict=False):
            total[name] += int(value, 16)
    return {k: v for k, v in total.items() if k != "entries"}


def connections(rows: list[tuple[float, str, int, str]]) -> dict[tuple[int, str], list[float]]:
    """The client's connections, by (port, the SYN's sequence number): their packets' times."""
    isn: dict[int, str] = {}
    out: dict[tuple[int, str], list[float]] = defaultdict(list)
    for t, d, p, x in rows:
        if d == "c2s" and "[S]" in x:
            isn[p] = x.split("seq ", 1)[1].split(",", 1)[0]
        if p in isn:
            out[(p, isn[p])].append(t)
    return out


def poll(stats: dict[str, dict], first: dict[str, dict], stop: threading.Event) -> None:
    """Every instance's counters, 10 times a second: the last and the first seen of each."""
    while not stop.is_set():
        for inst in require_state().instances:
            try:
                s = query(inst.control_socket, {"cmd": "stats"}, timeout=0.5)
            except (OSError, ValueError):
                continue
            stats[inst.id] = s
            first.setdefault(inst.id, s)
        time.sleep(0.1)


with tempfile.TemporaryDirectory() as tmp:
    down()
    up(3, str(_config(Path(tmp), level, steering)))
    try:
        for k in range(trials):
            state = require_state() if step == "scale" else _reset(require_state())
            stats: dict[str, dict] = {}
            first: dict[str, dict] = {}
            stop = threading.Event()

            poller = threading.Thread(target=poll, args=(stats, first, stop), daemon=True)
            poller.start()
            pc, ps = out / f"t{k}-client.pcap", out / f"t{k}-server.pcap"
            caps = [cap(state.client_netns, pc), cap(state.server_netns, ps)]
            pi = {i.id: out / f"t{k}-{i.id}.pcap" for i in state.instances}
            caps += [cap(i.netns, pi[i.id]) for i in state.instances]
            ct0 = {i.id: ct_stats(i.netns) for i in state.instances}
            time.sleep(1.0)
            streams = _downloads(state)
            o: object = None
            b: object = None
            if step == "scale":
                steady = SteadyLoad(state, 5, 6.0)
                time.sleep(1.0)
                marks = {"out0": time.time()}
                o = admin_call(state, "POST", "/v1/scale", {"active": 6})
                marks["out1"] = time.time()
                time.sleep(1.0)
                marks["in0"] = time.time()
                b = admin_call(state, "POST", "/v1/scale", {"active": 3})
                marks["in1"] = time.time()
            else:  # as bench failover's trial_sigkill
                steady = SteadyLoad(state, 5, 5.0)
                time.sleep(1.6)
                marks = {"kill": time.time()}
                os.kill(state.instance("fw1").pid, signal.SIGKILL)
                fo = _wait_event(state, "failover", marks["kill"])
                if fo:
                    marks["failover"] = fo["time"]
                rb = _wait_event(state, "rebalanced", marks["kill"], timeout=4.0)
                if rb:
                    marks["rebalance"] = rb["time"]
            lost = streams.lost(60.0)
            res = steady.join()
            time.sleep(1.0)
            stop.set()
            poller.join()
            for c in caps:
                c.terminate()
                c.wait()
            print(
                f"== trial {k}: failed={res['failed']} completed={res['completed']} lost={lost} "
                f"errors={res.get('errors')}",
                flush=True,
            )
            t_start = steady.t0
            for name, t in marks.items():
                print(f"   {name} at +{t - t_start:.3f}s")
            print(f"   failed_s={res.get('failed_s')}")
            keys = (
                "lookups",
                "lookup_hits",
                "lookup_misses",
                "lookup_retries",
                "hold_timeouts",
                "picked_up",
                "resolved_by_store",
                "write_refused",
                "renumbered",
                "stale_lookups",
                "rebased",
                "errors",
            )
            for iid, s in sorted(stats.items()):
                f0 = first[iid]
                reasons = {
                    r: v - f0.get("reasons", {}).get(r, 0)
                    for r, v in s.get("reasons", {}).items()
                    if v - f0.get("reasons", {}).get(r, 0) and not r.startswith(("tracked", "rule_accept"))
                }
                cnt = {kk: s.get(kk, 0) - f0.get(kk, 0) for kk in keys if s.get(kk, 0) - f0.get(kk, 0)}
                print(f"   {iid}: {reasons} {cnt}")
            for i in state.instances:
                d = {n: v - ct0[i.id].get(n, 0) for n, v in ct_stats(i.netns).items()}
                print(f"   {i.id} conntrack: { ({n: v for n, v in d.items() if v and n in CT_SHOWN}) }")
            if res["failed"]:
                cl = read(pc)
                views = {"C": cl, "S": read(ps)} | {iid: read(path) for iid, path in pi.items()}
                # suspects: connections (port and ISN) that lived over 1.5 s (a request takes ms)
                suspects = sorted(
                    (min(ts), p) for (p, _), ts in connections(cl).items() if max(ts) - min(ts) > 1.5
                )
                print(f"   suspects: {len(suspects)}")
                for t0, p in suspects[:12]:
                    print(f"   -- port {p} starting +{t0 - t_start:.3f}s")
                    rows = [
                        (t, where, d, x)
                        for where, view in views.items()
                        for t, d, pp, x in view
                        if pp == p and t0 - 0.01 <= t <= t0 + 6
                    ]
                    for t, where, d, x in sorted(rows):
                        print(f"      +{t - t_start:7.3f} {where:>3} {d} {x}")
            (out / f"t{k}-stats.json").write_text(
                json.dumps({"first": first, "last": stats, "marks": marks, "result": res, "out": o, "in": b})
            )
            if step == "failover":
                print(f"   then sigstop {trial_sigstop(require_state())}", flush=True)
                print(f"   then takeover {trial_takeover(require_state())}", flush=True)
    finally:
        down()
