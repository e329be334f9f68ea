"""`fwcluster bench bulk --json` end to end, one short round (figures are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns


def test_bench_bulk_reports_every_setup_and_the_packets_that_reached_user_space() -> None:
    argv = [sys.executable, "-m", "fwcluster", "bench", "bulk", "--json", "--rounds", "1", "--seconds", "2"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert (doc["seconds"], doc["streams"], doc["rounds"]) == (2, 4, 1)
    assert list(doc["setups"]) == ["fwcluster", "fwcluster-fast", "kernel", "direct"]
    for name, r in doc["setups"].items():
        assert r["gbit_per_second"] > 0 and r["gbytes"] > 0, name
    for name in ("fwcluster", "fwcluster-fast"):
        r = doc["setups"][name]
        assert r["user_space_packets"] > 0 and r["instance_cpu_s_per_gb"] >= 0  # the handshakes at least
    assert doc["setups"]["fwcluster"]["fast_path"] is False
    assert doc["setups"]["fwcluster-fast"]["fast_path"] is True
    assert set(doc["ratios"]) == {"fwcluster_over_kernel", "fwcluster-fast_over_kernel", "direct_over_kernel"}
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "fwc-" not in names  # the benchmark tears its testbed down (its iperf3 server with it)
