"""``fwcluster bench scale``: scale 3 -> 6 -> 3 under load, through the leading master, repeated
for each sync level.

Per trial: 20 long downloads (steady streams, checked for completion) and 5 concurrent short
downloads run while the cluster scales out to 6 active instances, carries traffic for a second,
and scales back in to 3. Reported per level as distributions over the trials: the time of each
scale request (out: new instances built, joined, their fair share moved; in: buckets handed back,
instances stopped), the buckets moved, the long downloads lost and the short requests failed.
Bounded: every step has a timeout; each level gets a fresh testbed, torn down at the end.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from rich.progress import Progress

from fwcluster.bench.datapath import SteadyLoad
from fwcluster.bench.failover import _config, _downloads, _summary
from fwcluster.testbed import down, require_state, up
from fwcluster.testbed.masters import admin_call

TRIALS = 10
LEVELS = ("none", "established", "full")


def trial(state: Any) -> dict[str, float]:
    streams = _downloads(state)
    steady = SteadyLoad(state, 5, 6.0)
    time.sleep(1.0)
    t0 = time.monotonic()
    out = admin_call(state, "POST", "/v1/scale", {"active": 6})
    t1 = time.monotonic()
    time.sleep(1.0)
    t2 = time.monotonic()
    back = admin_call(state, "POST", "/v1/scale", {"active": 3})
    t3 = time.monotonic()
    lost = streams.lost(60.0)
    failed = int(steady.join()["failed"])
    return {
        "scale_out_ms": (t1 - t0) * 1000,
        "scale_in_ms": (t3 - t2) * 1000,
        "buckets_moved_out": float(len(out.get("moved", {}).get("forward", {}))),
        "buckets_moved_in": float(len(back.get("moved", {}).get("forward", {}))),
        "long_downloads_lost": float(lost),
        "steady_requests_failed": float(failed),
    }


def run(
    trials: int = TRIALS, levels: tuple[str, ...] = LEVELS, steering: str = "symmetric"
) -> dict[str, Any]:

    per_level: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fwcluster-scale-") as tmp_name:
        tmp = Path(tmp_name)
        with Progress(transient=True) as progress:
            task = progress.add_task("bench scale", total=len(levels) * trials)
            for level in levels:
                results: dict[str, list[float]] = {}
                down()
                up(3, str(_config(tmp, level, steering)))
                try:
                    for i in range(trials):
                        progress.update(task, description=f"{level}: trial {i + 1}/{trials}: 3 -> 6 -> 3")
                        for k, v in trial(require_state()).items():
                            results.setdefault(k, []).append(v)
                        progress.advance(task)
                finally:
                    down()
                per_level[level] = {"figures": {k: _summary(v) for k, v in results.items()}, "raw": results}
    return {"trials": trials, "steering": steering, "levels": per_level}
