"""``fwcluster bench study --quick`` end to end on the real testbed: every configuration measured,
the outputs written and valid against their schema."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fwcluster.bench.study.results import BASELINES, SETTINGS
from fwcluster.bench.study.runner import SIZE_SETTINGS, SIZES
from fwcluster.bench.study.schema import validate

pytestmark = pytest.mark.netns


def test_bench_study_quick_writes_every_configuration(tmp_path: Path) -> None:
    out = tmp_path / "study"
    fwcluster = str(Path(sys.executable).with_name("fwcluster"))
    p = subprocess.run(
        [fwcluster, "bench", "study", "--quick", "--count", "100", "--out", str(out)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads((out / "results.json").read_text())
    assert validate(doc) == []
    keys = {(c["name"], c["instances"], c["load"]) for c in doc["configurations"]}
    wanted = {(n, 3, load) for n in (*SETTINGS, *BASELINES) for load in (25, 100)}
    wanted |= {("/".join(s), size, load) for s in SIZE_SETTINGS for size in SIZES for load in (25, 100)}
    assert keys == wanted
    assert all(c["samples"] > 0 for c in doc["configurations"])
    assert doc["meta"]["quick"] is True and doc["meta"]["machine"]["cpus"] >= 1
    with (out / "samples.csv").open() as f:
        rows = sum(1 for _ in csv.DictReader(f))
    assert rows == sum(c["samples"] for c in doc["configurations"])
    for name in (
        "report.md",
        "box-setup-time-25.png",
        "box-setup-time-100.png",
        "cdf-100.png",
        "cluster-size.png",
    ):
        assert (out / name).stat().st_size > 1000, name
    report = (out / "report.md").read_text()
    assert "full/clean/sync" in report and "kernel" in report
