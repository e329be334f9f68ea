"""Why a ``bench scale`` trial failed requests: the trial of ``fwcluster bench scale`` (20 long
downloads, 5 concurrent short requests, 3 -> 6 -> 3 through the leading master) with captures at
the client and the server (the short requests only), the instances' counters polled through the
trial (the instances that leave at scale-in vanish with theirs), and for each connection that
sent its SYN twice or lived over 1.5 s the packets seen at each end: a packet the client sent
and the server never saw (or the reverse) was dropped by a firewall instance.

    flock /tmp/fwc-testbed.lock python scripts/diagnose-scale.py LEVEL STEERING TRIALS OUTDIR

Prints per trial the failures, the scale steps' times, each instance's drop reasons and store
counters, and the suspects' packets; keeps the pcaps and a JSON of the counters in OUTDIR. Brings
a testbed up and down (it replaces one that is up).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from fwcluster.bench.datapath import SteadyLoad
from fwcluster.bench.failover import _config, _downloads
from fwcluster.instance.control import query
from fwcluster.testbed import down, require_state, up
from fwcluster.testbed.masters import admin_call

level = sys.argv[1] if len(sys.argv) > 1 else "full"
steering = sys.argv[2] if len(sys.argv) > 2 else "ecmp"
trials = int(sys.argv[3]) if len(sys.argv) > 3 else 3
out = Path(sys.argv[4] if len(sys.argv) > 4 else "diagnose-scale")
out.mkdir(parents=True, exist_ok=True)

FILTER = "tcp port 80 and not portrange 20000-21999"


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
    """(time, direction c2s/s2c, client port, flags+seq text)."""
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
        sp, dp = int(src.rsplit(".", 1)[1]), int(dst.rsplit(".", 1)[1])
        rest = line.split(": ", 1)[1] if ": " in line else ""
        if dp == 80:
            rows.append((t, "c2s", sp, rest[:70]))
        elif sp == 80:
            rows.append((t, "s2c", dp, rest[:70]))
    return rows


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
            state = require_state()
            stats: dict[str, dict] = {}
            first: dict[str, dict] = {}
            stop = threading.Event()

            poller = threading.Thread(target=poll, args=(stats, first, stop), daemon=True)
            poller.start()
            pc, ps = out / f"t{k}-client.pcap", out / f"t{k}-server.pcap"
            caps = [cap(state.client_netns, pc), cap(state.server_netns, ps)]
            time.sleep(1.0)
            streams = _downloads(state)
            steady = SteadyLoad(state, 5, 6.0)
            time.sleep(1.0)
            marks = {"out0": time.time()}
            o = admin_call(state, "POST", "/v1/scale", {"active": 6})
            marks["out1"] = time.time()
            time.sleep(1.0)
            marks["in0"] = time.time()
            b = admin_call(state, "POST", "/v1/scale", {"active": 3})
            marks["in1"] = time.time()
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
            if res["failed"]:
                cl, sv = read(pc), read(ps)
                byc: dict[int, list] = defaultdict(list)
                for t, d, p, x in cl:
                    byc[p].append((t, "C", d, x))
                for t, d, p, x in sv:
                    byc[p].append((t, "S", d, x))
                # failed: ports whose client SYN repeats with no completion, or long-lived conns
                suspects = []
                for p, rows in byc.items():
                    syns = [r for r in rows if r[1] == "C" and r[2] == "c2s" and "[S]" in r[3]]
                    span = max(r[0] for r in rows) - min(r[0] for r in rows)
                    if len(syns) > 1 or span > 1.5:
                        suspects.append((min(r[0] for r in rows), p))
                print(f"   suspects: {len(suspects)}")
                for t0, p in sorted(suspects)[:12]:
                    print(f"   -- port {p} starting +{t0 - t_start:.3f}s")
                    for t, where, d, x in sorted(byc[p]):
                        print(f"      +{t - t_start:7.3f} {where} {d} {x}")
            (out / f"t{k}-stats.json").write_text(
                json.dumps({"first": first, "last": stats, "marks": marks, "result": res, "out": o, "in": b})
            )
    finally:
        down()
