"""`fwcluster bench datapath --json` end to end on short runs (figures are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns


def _bench(*extra: str) -> dict[str, object]:
    argv = [sys.executable, "-m", "fwcluster", "bench", "datapath", "--json", "--rounds", "1", *extra]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "fwc-" not in names  # the benchmark tears its testbed down
    doc: dict[str, object] = json.loads(p.stdout)
    return doc


def test_bench_datapath_json_has_all_three_setups_and_the_instance_cpu() -> None:
    doc = _bench("--seconds", "2", "--warmup", "1")
    assert doc["mode"] == "closed" and doc["procs"] == 2 and doc["sync"] == {
        "level": "none", "access": "dirty", "confirm": "async", "follow": "backup",
    }  # fmt: skip
    for setup in ("fwcluster", "kernel", "direct"):
        r = doc[setup]
        assert isinstance(r, dict)
        assert r["connections_per_second"] > 0 and r["connect_us_p50"] > 0
        assert r["completed"] > 0 and r["failed"] == 0
        assert r["loadgen_cpu_cores"] > 0
    fw = doc["fwcluster"]
    assert isinstance(fw, dict)
    assert fw["instance_cpu_us_per_connection"] > 0 and fw["user_space_packets_per_connection"] > 0
    ratios = doc["ratios"]
    assert isinstance(ratios, dict) and ratios["fwcluster_over_kernel_rate"] > 0


def test_bench_datapath_open_loop_reports_the_time_from_each_arrival() -> None:
    doc = _bench("--seconds", "2", "--warmup", "0", "--rate", "300", "--procs", "1")
    assert doc["mode"] == "open" and doc["rate"] == 300 and doc["arrivals"] == "poisson"
    for setup in ("fwcluster", "kernel", "direct"):
        r = doc[setup]
        assert isinstance(r, dict)
        assert r["completed"] > 0 and r["failed"] == 0 and r["dropped_arrivals"] == 0
        assert r["sojourn_us_p50"] >= r["connect_us_p50"] > 0
    ratios = doc["ratios"]
    assert isinstance(ratios, dict) and ratios["fwcluster_over_kernel_sojourn_p50"] > 0
