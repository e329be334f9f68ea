"""Smoke test of ``fwcluster bench core`` on a tiny size: it runs and returns sane numbers (no timings)."""

from __future__ import annotations

import math

from fwcluster.bench.core import CoreResult, memory_per_flow, throughput
from fwcluster.bench.packets import realistic_mix
from fwcluster.config import load_config
from fwcluster.core.decision import Reason
from fwcluster.core.firewall import Firewall


def test_throughput_runs() -> None:
    packets, seconds, liberal = throughput(load_config(None), 200, 1)
    assert packets == len(realistic_mix(200))
    assert packets > 200
    assert seconds > 0 and liberal > 0
    assert math.isfinite(seconds) and math.isfinite(liberal)


def test_memory_per_flow_runs() -> None:
    per_flow = memory_per_flow(load_config(None), 1000)
    assert math.isfinite(per_flow)


def test_the_mix_is_mostly_accepted_by_the_default_config() -> None:
    config = load_config(None)
    fw = Firewall(config.ruleset, config.conntrack.timeouts, config.conntrack.max_flows)
    reasons = [fw.decide(pkt, 1000.0).reason for pkt in realistic_mix(100)]
    assert reasons.count(Reason.RULE_ACCEPT) >= 80  # the HTTP connections open
    assert Reason.TRACKED in reasons


def test_result_as_dict() -> None:
    r = CoreResult(
        packets=10, packets_per_second=1234.56, seconds=0.0081, rounds=1, flows=5, bytes_per_flow=99.94,
        packets_per_second_liberal=2000.4, kernel_bytes_per_flow=256,
    )  # fmt: skip
    assert r.as_dict() == {
        "packets": 10,
        "packets_per_second": 1235,
        "packets_per_second_liberal": 2000,
        "seconds": 0.008,
        "rounds": 1,
        "flows": 5,
        "bytes_per_flow": 99.9,
        "kernel_bytes_per_flow": 256,
        "bytes_per_flow_total": 355.9,
    }
