"""The output half of ``fwcluster bench study`` on synthetic runs: the ratio and goal arithmetic,
baselines that are missing, the CSV, the plots, the report and the schema check (no network)."""

from __future__ import annotations

import copy
import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest

from fwcluster.bench.study.markdown import render_markdown
from fwcluster.bench.study.outputs import write_outputs
from fwcluster.bench.study.results import BASELINES, SETTINGS, Configuration, Run
from fwcluster.bench.study.schema import validate
from fwcluster.bench.study.summary import summarize_study

META: dict[str, Any] = {
    "command": "fwcluster bench study --quick",
    "date": "2026-12-01T10:00:00+00:00",
    "quick": True,
    "runs": 2,
    "count": 20,
    "loads": [25, 100],
    "machine": {
        "hostname": "bench1",
        "kernel": "6.18.0",
        "cpus": 2,
        "python": "3.11.9",
        "packages": {"fwcluster": "0.1.0", "nginx": "1.22.1", "redis-server": "7.0.15"},
    },
}


def configuration(name: str, instances: int = 3, load: int = 100) -> Configuration:
    if name in BASELINES:
        return Configuration.baseline(name, instances=instances, load=load)
    level, access, confirm = name.split("/")
    return Configuration.setting(level, access, confirm, instances=instances, load=load)


def run(
    name: str, connect: list[int], instances: int = 3, load: int = 100, index: int = 0, failed: int = 0
) -> Run:
    return Run(
        configuration=configuration(name, instances, load),
        run=index,
        started=1_796_000_000.0 + index,
        connect_us=connect,
        total_us=[us + 700 for us in connect],
        failed=failed,
        completed=len(connect),
        connections_per_second=1000.0 + 10 * index,
    )


def nones(p50: int, instances: int = 3, load: int = 100) -> list[Run]:
    return [run(s, [p50], instances, load) for s in SETTINGS if s.startswith("none/")]


def find(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return next(c for c in doc["configurations"] if c["key"] == key)


def goal(doc: dict[str, Any], starts: str, load: int) -> dict[str, Any]:
    return next(g for g in doc["goals"] if g["goal"].startswith(starts) and g["load"] == load)


def study(seed: int = 7) -> list[Run]:
    """Every setting and both baselines at 3 instances and both loads, two settings also at 6 and 9."""
    rng = random.Random(seed)
    base = {"direct": 500, "kernel": 550} | {s: 1000 + 40 * i for i, s in enumerate(SETTINGS)}
    points = [(name, 3) for name in base] + [
        (s, n) for s in ("full/clean/sync", "established/dirty/async") for n in (6, 9)
    ]
    return [
        run(name, [int(base[name] * (1 + n / 100) * rng.uniform(0.8, 1.6)) for _ in range(20)], n, load, i)
        for name, n in points
        for load in (25, 100)
        for i in range(2)
    ]


def test_the_key_names_setting_size_and_load() -> None:
    assert configuration("full/clean/sync").key == "full/clean/sync@3x100"
    assert configuration("kernel", load=25).key == "kernel@3x25"
    assert configuration("kernel").level is None
    with pytest.raises(ValueError):
        Configuration.baseline("nginx", load=25)


def test_full_over_none_is_reported_without_a_target() -> None:
    doc = summarize_study([*nones(1000), run("full/clean/sync", [1100])], META)
    assert find(doc, "full/clean/sync@3x100")["p50_over_none"] == pytest.approx(1.10)
    g = goal(doc, "full/clean/sync over none", 100)
    assert (g["value"], g["target"], g["met"], g["missed_by"]) == (pytest.approx(1.10), None, None, None)
    assert "| - | reported |" in render_markdown(doc)


def test_performance_at_1_5_of_the_kernel_meets_the_goal() -> None:
    doc = summarize_study([run("kernel", [1000]), run("established/dirty/async", [1500])], META)
    g = goal(doc, "established/dirty/async over the kernel", 100)
    assert (g["value"], g["target"], g["met"], g["missed_by"]) == (pytest.approx(1.5), 1.5, True, None)


def test_a_missed_goal_says_by_how_much() -> None:
    doc = summarize_study([run("kernel", [1000]), run("established/dirty/async", [1650])], META)
    g = goal(doc, "established/dirty/async over the kernel", 100)
    assert (g["met"], g["missed_by"]) == (False, pytest.approx(10.0))


def test_the_four_none_settings_pool_into_one_baseline() -> None:
    runs = [run("none/dirty/async", [900, 900, 900]), run("none/clean/sync", [1000, 1000, 1000, 1000])]
    (baseline,) = summarize_study(runs, META)["ratios"]["none"]
    assert baseline["samples"] == 7
    assert baseline["connect_us_p50"] == 1000
    assert baseline["pooled"] == ["none/dirty/async@3x100", "none/clean/sync@3x100"]


def test_missing_baselines_give_null_ratios_and_goals() -> None:
    doc = summarize_study([run("full/clean/sync", [1100]), run("established/dirty/async", [900])], META)
    c = find(doc, "full/clean/sync@3x100")
    assert (c["p50_over_none"], c["p50_over_kernel"]) == (None, None)
    assert doc["ratios"]["none"] == []
    for g in doc["goals"]:
        assert (g["value"], g["met"], g["missed_by"]) == (None, None, None)
    assert validate(doc) == []


def test_the_kernel_baseline_falls_back_to_another_cluster_size() -> None:
    runs = [run("kernel", [500], instances=9), run("established/dirty/async", [1200])]
    doc = summarize_study(runs, META)
    assert find(doc, "established/dirty/async@3x100")["p50_over_kernel"] == pytest.approx(2.4)
    g = goal(doc, "established/dirty/async over the kernel", 100)
    assert (g["denominator"], g["met"], g["missed_by"]) == ("kernel@9x100", False, pytest.approx(60.0))
    assert goal(doc, "established/dirty/async over the kernel", 25)["value"] is None


def test_cluster_sizes_are_compared_per_setting_and_load() -> None:
    runs = [
        run("full/clean/sync", [1000]),
        run("full/clean/sync", [1020], instances=9),
        run("none/dirty/sync", [1000]),
        run("none/dirty/sync", [1100], instances=9),
        run("none/dirty/sync", [1050], instances=6),
    ]
    doc = summarize_study(runs, META)
    assert not [g for g in doc["goals"] if "instances over" in g["goal"]]  # compared, not a goal
    sizes = doc["study_findings"][2]["ours"]
    assert sorted((o["key"], o["percent"]) for o in sizes) == [
        ("full/clean/sync@9x100", 2.0),
        ("none/dirty/sync@6x100", 5.0),
        ("none/dirty/sync@9x100", 10.0),
    ]


def test_findings_put_our_percentages_beside_the_study() -> None:
    runs = [*nones(1000), run("full/clean/sync", [1250]), run("established/dirty/async", [1000])]
    full_over_none, performance, _ = summarize_study(runs, META)["study_findings"]
    assert full_over_none["study"]["percent"] == [19, 26]
    assert [o["percent"] for o in full_over_none["ours"]] == [25.0]
    assert [o["percent"] for o in performance["ours"]] == [-20.0]


def test_runs_pool_and_keep_their_own_figures() -> None:
    runs = [run("kernel", [300, 100], index=1), run("kernel", [200], index=0, failed=2)]
    c = find(summarize_study(runs, META), "kernel@3x100")
    assert (c["samples"], c["failed"], c["completed"], c["connect_us_p50"]) == (3, 2, 3, 200)
    assert (c["total_us_p50"], c["connect_us_mean"]) == (900, 200.0)
    assert c["connections_per_second"] == pytest.approx(1005.0)
    assert [(r["run"], r["samples"], r["connect_us_p50"]) for r in c["runs"]] == [(0, 1, 200), (1, 2, 300)]


def test_unequal_sample_lists_are_refused() -> None:
    bad = run("kernel", [100, 200])
    bad.total_us.pop()
    with pytest.raises(ValueError, match="differ in length"):
        summarize_study([bad], META)


def test_write_outputs(tmp_path: Path) -> None:
    runs = study()
    doc = summarize_study(runs, META)
    written = write_outputs(tmp_path / "out", runs, doc)
    names = {p.name for p in written}
    assert names == {
        "results.json", "samples.csv", "report.md", "cluster-size.png",
        "box-setup-time-25.png", "box-setup-time-100.png", "cdf-25.png", "cdf-100.png",
    }  # fmt: skip
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    assert validate(json.loads((tmp_path / "out" / "results.json").read_text())) == []
    with (tmp_path / "out" / "samples.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert (
        len(rows) == sum(c["samples"] for c in doc["configurations"]) == sum(len(r.connect_us) for r in runs)
    )
    assert rows[0]["configuration"] == "direct@3x25"
    assert (rows[0]["level"], rows[0]["run"], rows[0]["index"]) == ("", "0", "0")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "](box-setup-time-100.png)" in report
    assert "](cluster-size.png)" in report


def test_plots_without_data_are_skipped(tmp_path: Path) -> None:
    runs = [run("full/clean/sync", [1000, 1100], instances=6)]
    written = write_outputs(tmp_path, runs, summarize_study(runs, META))
    assert {p.name for p in written} == {"results.json", "samples.csv", "report.md"}


def test_the_report_has_the_goal_lines_and_readable_numbers() -> None:
    runs = [*nones(1000), run("full/clean/sync", [12_345]), run("kernel", [500])]
    runs.append(run("established/dirty/async", [5_000]))
    text = render_markdown(summarize_study(runs, META))
    assert "## Goals" in text
    assert "## Against the study" in text
    assert "| full/clean/sync over none, 3 instances | 100 |" in text
    assert "| 12.35 | - | reported |" in text
    assert "missed by 566.7%" in text  # established/dirty/async at 10 x the kernel, target 1.5
    assert "no data" in text
    assert "| `full/clean/sync` | 1 | 0 | 12,345 |" in text
    assert "Quick run" in text
    assert "19-26% slower" in text


def test_validate_accepts_a_study_and_catches_what_is_wrong() -> None:
    doc = summarize_study(study(), META)
    assert validate(doc) == []
    broken = copy.deepcopy(doc)
    del broken["configurations"][0]["connect_us_p90"]
    broken["configurations"][1]["level"] = "none"  # the kernel baseline has no knobs
    del broken["meta"]["machine"]["kernel"]
    problems = validate(broken)
    assert any("missing 'connect_us_p90'" in p for p in problems)
    assert any("kernel@3x25" in p and "baseline" in p for p in problems)
    assert any("meta.machine: missing 'kernel'" in p for p in problems)


def test_validate_catches_an_empty_sample_set() -> None:
    doc = summarize_study([*nones(1000), run("full/clean/sync", [], failed=20)], META)
    c = find(doc, "full/clean/sync@3x100")
    assert (c["connect_us_p50"], c["p50_over_none"]) == (None, None)
    assert validate(doc) == [
        "configuration full/clean/sync@3x100: no samples (every connection failed or none was made)"
    ]
    assert validate({"schema": "other"})[0].startswith("schema is 'other'")
