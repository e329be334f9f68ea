"""bench bulk's configs and JSON summary, from made-up runs (no root, no iperf3)."""

from __future__ import annotations

import tomllib
from typing import Any

from fwcluster.bench import bulk
from fwcluster.config import load_config, parse_config


def test_the_configs_differ_only_in_the_fast_path_and_let_iperf3_through() -> None:
    slow = parse_config(tomllib.loads(bulk.config_text(False)), "<bulk>")
    fast = parse_config(tomllib.loads(bulk.config_text(True)), "<bulk>")
    assert (slow.datapath.fast_path, fast.datapath.fast_path) == (False, True)
    assert slow.ruleset == fast.ruleset != load_config(None).ruleset  # the built-in rules + iperf3's port
    assert slow.sync.level.value == "none" and slow.cluster.masters == 0


def _run(gbit: float, packets: int | None = None) -> dict[str, Any]:
    run: dict[str, Any] = {"bits_per_second": gbit * 1e9, "bytes": int(gbit * 1e9), "retransmits": 1}
    if packets is not None:
        run.update(user_space_packets=packets, user_space_packets_per_gb=packets / gbit,
                   instance_cpu_s_per_gb=0.5)  # fmt: skip
    return run


def test_summary_has_medians_per_setup_and_ratios_to_the_kernel() -> None:
    runs = {
        "fwcluster": [_run(1.0, 800), _run(3.0, 2400), _run(2.0, 1600)],
        "fwcluster-fast": [_run(18.0, 10), _run(19.0, 10), _run(20.0, 10)],
        "kernel": [_run(20.0), _run(19.0), _run(21.0)],
        "direct": [_run(22.0), _run(22.0), _run(22.0)],
    }
    doc = bulk.summarize_runs(runs, bulk.SETUPS, 8, 4, 3)
    assert list(doc["setups"]) == ["fwcluster", "fwcluster-fast", "kernel", "direct"]
    fw = doc["setups"]["fwcluster"]
    assert fw["gbit_per_second"] == 2.0 and fw["runs_gbit_per_second"] == [1.0, 3.0, 2.0]
    assert fw["user_space_packets"] == 4800 and fw["user_space_packets_per_gb"] == 800.0
    assert fw["fast_path"] is False and doc["setups"]["fwcluster-fast"]["fast_path"] is True
    assert "user_space_packets_per_gb" not in doc["setups"]["kernel"]
    assert doc["setups"]["kernel"]["fast_path"] is None and doc["setups"]["kernel"]["retransmits"] == 3
    assert doc["ratios"] == {
        "fwcluster_over_kernel": 0.1, "fwcluster-fast_over_kernel": 0.95, "direct_over_kernel": 1.1,
    }  # fmt: skip
