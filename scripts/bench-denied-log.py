"""The engine's cost per packet with and without the denied-connection log (issue 12, point 4).

Runs in the tree on PYTHONPATH: the realistic mix (bench core's: HTTP connections, a few denied)
and a flood of SYNs the default policy drops (distinct ports), each through Engine.packet with
the verdict lists drained every 64 packets as the instance does; with ``log_denied`` off and on
(on: the DeniedLog drain after each batch, 10 lines a second). Prints one JSON object: ns per
packet, the best of the rounds. On a tree without the log, only the "off" figures.

    PYTHONPATH=/path/to/tree/src python scripts/bench-denied-log.py
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable

from fwcluster.bench.packets import SYN, client_addr, realistic_mix, tcp
from fwcluster.config import load_config
from fwcluster.core.firewall import Firewall
from fwcluster.engine.engine import Engine, EnginePolicy

try:
    from fwcluster.instance.denied import DeniedLog
except ImportError:  # the baseline tree
    DeniedLog = None  # type: ignore[assignment,misc]

logging.disable(logging.CRITICAL)  # the lines themselves are not measured: at most 10 a second
BATCH = 64
ROUNDS = 7
config = load_config(None)  # default drop, TCP 80 accepted
mix = realistic_mix(5000)
server = bytes([198, 19, 0, 2])
flood = [tcp(client_addr(i % 250, False), server, 1024 + i % 60000, 22, SYN) for i in range(100_000)]


def run(packets: list[bytes], log: bool) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        fw = Firewall(config.ruleset, config.conntrack.timeouts, 10_000_000, windows=True)
        e = Engine(fw, EnginePolicy(), now=1000.0)
        drain: Callable[[float], None] | None = None
        if log and DeniedLog is not None:
            drain = DeniedLog(e, 10, 1000.0).drain
        gc.disable()
        t0 = time.perf_counter()
        now = 1000.0
        for n, pkt in enumerate(packets):
            e.packet(n, pkt, now)
            if n % BATCH == BATCH - 1:
                e.accepts.clear()
                e.drops.clear()
                e.marks.clear()
                e.writes.clear()
                if drain is not None and (e.denied or e.denied_skipped):
                    drain(now)
                now += 0.0001
        best = min(best, time.perf_counter() - t0)
        gc.enable()
    return best / len(packets) * 1e9


out = {"mix_off_ns": run(mix, False), "flood_off_ns": run(flood, False)}
if DeniedLog is not None:
    out |= {"mix_on_ns": run(mix, True), "flood_on_ns": run(flood, True)}
print(json.dumps({k: round(v, 1) for k, v in out.items()}))
