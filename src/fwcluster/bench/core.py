"""``fwcluster bench core``: packets per second through parse + track + rules, and the memory of
the local flow table per tracked flow. Pure CPU, one core, no network."""

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
    packets_per_second: float
    seconds: float
    rounds: int
    flows: int
    bytes_per_flow: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "packets": self.packets,
            "packets_per_second": round(self.packets_per_second),
            "seconds": round(self.seconds, 3),
            "rounds": self.rounds,
            "flows": self.flows,
            "bytes_per_flow": round(self.bytes_per_flow, 1),
        }


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * 4096


def throughput(config: Config, connections: int, rounds: int) -> tuple[int, float]:
    """Best of ``rounds`` passes over the same mix, each through a fresh firewall."""
    mix = realistic_mix(connections)
    best = float("inf")
    for _ in range(rounds):
        fw = Firewall(config.ruleset, config.conntrack.timeouts, config.conntrack.max_flows)
        decide = fw.decide
        now = 1000.0
        gc.disable()
        t0 = time.perf_counter()
        for pkt in mix:
            decide(pkt, now)
        best = min(best, time.perf_counter() - t0)
        gc.enable()
    return len(mix), best


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
    packets, seconds = throughput(config, connections, rounds)
    per_flow = memory_per_flow(config, flows)
    return CoreResult(packets, packets / seconds, seconds, rounds, flows, per_flow)
