"""`fwcluster bench datapath --json` end to end on a small count (figures are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns


def test_bench_datapath_json_has_all_three_setups() -> None:
    argv = [
        sys.executable,
        "-m",
        "fwcluster",
        "bench",
        "datapath",
        "--json",
        "--count",
        "300",
        "--rounds",
        "1",
    ]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    for setup in ("fwcluster", "kernel", "direct"):
        r = doc[setup]
        assert r["connections_per_second"] > 0 and r["connect_us_p50"] > 0
        assert r["completed"] == 300 and r["failed"] == 0
    assert doc["ratios"]["fwcluster_over_kernel_rate"] > 0
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "fwc-" not in names  # the benchmark tears its testbed down
