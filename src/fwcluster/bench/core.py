"""``fwcluster bench core``: packets per second through parse + track + rules, with sequence-window
tracking (the default) and without it (``be_liberal``), side by side in one run, and the memory
of the local flow table per tracked flow, beside the kernel's conntrack entry that the fast path
adds. Pure CPU, one core, no network."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

from fwcluster.bench.packets import SERVER4, SYN, client_addr, realistic_mix, tcp
from fwcluster.config import Config
from fwcluster.core.firewall import Firewall


@dataclass(frozen=True, slots=True)
class CoreResult:
    packets: int
    packets_per_second: float  # with window tracking
    seconds: float
    rounds: int
    flows: int
    bytes_per_flow: float
    packets_per_second_liberal: float = 0.0  # without (be_liberal)
    kernel_bytes_per_flow: int | None = None  # one nf_conntrack entry (slab object), if known

    def as_dict(self) -> dict[str, float | int | None]:
        kernel = self.kernel_bytes_per_flow
        return {
            "packets": self.packets,
            "packets_per_second": round(self.packets_per_second),
            "packets_per_second_liberal": round(self.packets_per_second_liberal),
            "seconds": round(self.seconds, 3),
            "rounds": self.rounds,
            "flows": self.flows,
            "bytes_per_flow": round(self.bytes_per_flow, 1),
            "kernel_bytes_per_flow": kernel,
            "bytes_per_flow_total": None if kernel is None else round(self.bytes_per_flow + kernel, 1),
        }


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * 4096


def throughput(config: Config, connections: int, rounds: int) -> tuple[int, float, float]:
    """Best of ``rounds`` passes over the same mix, each through a fresh firewall, with window
    tracking and without, the two interleaved: (packets, seconds with, seconds without)."""
    mix = realistic_mix(connections)
    best = {True: float("inf"), False: float("inf")}
    for _ in range(rounds):
        for windows in (True, False):
            fw = Firewall(
                config.ruleset, config.conntrack.timeouts, config.conntrack.max_flows, windows=windows
            )
            decide = fw.decide
            now = 1000.0
            gc.disable()
            t0 = time.perf_counter()
            for pkt in mix:
                decide(pkt, now)
            best[windows] = min(best[windows], time.perf_counter() - t0)
            gc.enable()
    return len(mix), best[True], best[False]


def kernel_entry_bytes() -> int | None:
    """The size of one kernel conntrack entry (``nf_conntrack`` slab objects), None if unknown."""
    try:
        with open("/proc/slabinfo", encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] == "nf_conntrack":
                    return int(fields[3])
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_per_flow(config: Config, flows: int) -> float:
    """RSS growth per flow after opening ``flows`` connections (SYNs from distinct sockets)."""
    fw = Firewall(config.ruleset, config.conntrack.timeouts, flows)
    gc.collect()
    before = _rss_bytes()
    decide = fw.decide
    for i in range(flows):
        c = client_addr(i // 60000 + 1, False)
        decide(tcp(c, SERVER4, 1024 + i % 60000, 80, SYN), 1000.0)
    gc.collect()
    grown = _rss_bytes() - before
    if len(fw.table) != flows:
        raise RuntimeError(f"expected {flows} flows in the table, found {len(fw.table)}")
    return grown / flows


def run(config: Config, connections: int = 20_000, rounds: int = 5, flows: int = 1_000_000) -> CoreResult:
    packets, seconds, liberal = throughput(config, connections, rounds)
    per_flow = memory_per_flow(config, flows)
    return CoreResult(
        packets, packets / seconds, seconds, rounds, flows, per_flow, packets / liberal, kernel_entry_bytes()
    )
