"""The summaries the benches print as JSON, from made-up runs (no root, no testbed)."""

from __future__ import annotations

import tomllib
from typing import Any

from fwcluster.bench import datapath
from fwcluster.bench.rounds import interleaved, rotated
from fwcluster.config import load_config, parse_config


def _run(rate: float, connect: list[int], open_loop: bool = False, cpu_us: float = 0.0) -> dict[str, Any]:
    run: dict[str, Any] = {
        "connections_per_second": rate,
        "connect_us": connect,
        "total_us": [c * 2 for c in connect],
        "completed": len(connect),
        "failed": 0,
        "dropped_arrivals": 0,
        "cpu_s": 0.5,
        "window_s": 1.0,
        "instance_cpu_us_per_connection": cpu_us,
        "instance_cpu_cores": 0.8,
        "user_space_packets_per_connection": 7.0,
    }
    if open_loop:
        run["sojourn_us"] = [c + 100 for c in connect]
    return run


def test_datapath_summary_takes_medians_of_runs_and_pools_latencies() -> None:
    fw = datapath.summarize_setup(
        [_run(100.0, [10, 20], cpu_us=50.0), _run(300.0, [30], cpu_us=70.0), _run(200.0, [40], cpu_us=60.0)],
        with_instance=True,
    )
    assert fw["connections_per_second"] == 200.0 and fw["runs_connections_per_second"] == [
        100.0,
        300.0,
        200.0,
    ]
    assert fw["connect_us_p50"] == 20 and fw["completed"] == 4 and fw["loadgen_cpu_cores"] == 0.5
    assert fw["instance_cpu_us_per_connection"] == 60.0
    assert fw["runs_instance_cpu_us_per_connection"] == [50.0, 70.0, 60.0]
    kernel = datapath.summarize_setup([_run(400.0, [10])], with_instance=False)
    assert "instance_cpu_us_per_connection" not in kernel and "sojourn_us_p50" not in kernel
    r = datapath.ratios({"fwcluster": fw, "kernel": kernel})
    assert r == {"fwcluster_over_kernel_rate": 0.5, "fwcluster_over_kernel_connect_p50": 2.0}


def test_datapath_summary_of_an_open_loop_has_the_sojourn_and_its_ratio() -> None:
    fw = datapath.summarize_setup([_run(100.0, [200, 300, 400], open_loop=True)], with_instance=True)
    kernel = datapath.summarize_setup([_run(100.0, [100, 100, 100], open_loop=True)], with_instance=False)
    assert fw["sojourn_us_p50"] == 400 and kernel["sojourn_us_p50"] == 200
    assert datapath.ratios({"fwcluster": fw, "kernel": kernel})["fwcluster_over_kernel_sojourn_p50"] == 2.0


def test_datapath_default_config_is_one_instance_with_nothing_to_share() -> None:

    config = parse_config(tomllib.loads(datapath.DATAPATH_CONFIG), "<datapath>")
    assert config.sync.level.value == "none" and config.store.backend.value == "memory"
    assert config.cluster.masters == 0
    assert config.ruleset == load_config(None).ruleset  # the built-in config's policy and rules


def test_rounds_rotate_the_order_of_the_setups() -> None:

    assert [rotated("abc", r) for r in range(4)] == [list("abc"), list("bca"), list("cab"), list("abc")]
    assert list(interleaved("t", ["x", "y"], 2)) == [(0, "x"), (0, "y"), (1, "y"), (1, "x")]
