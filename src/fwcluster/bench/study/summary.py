"""From runs to the results document (schema ``fwcluster-study/1``): per configuration all runs
pooled, the ratios, the goals and the study's findings beside ours."""

from __future__ import annotations

import statistics
from typing import Any

from fwcluster.bench.stats import summarize
from fwcluster.bench.study.goals import goals, study_findings
from fwcluster.bench.study.ratios import (
    add_baseline_ratios,
    cluster_size,
    none_baselines,
    p50,
    performance_over_consistency,
    point,
)
from fwcluster.bench.study.results import KERNEL, SCHEMA, STATS, Configuration, Run, connects, group_runs


def summarize_study(runs: list[Run], meta: dict[str, Any]) -> dict[str, Any]:
    """The results document (schema ``fwcluster-study/1``): per configuration all runs pooled,
    ratios against the baselines, our goals and the study's findings beside ours."""
    groups = group_runs(runs)
    configs = [_configuration_doc(c, rs) for c, rs in groups.items()]
    nones = none_baselines(groups)
    add_baseline_ratios(configs, nones)
    ratios = {
        "none": nones,
        "kernel": [point(c) for c in configs if c["name"] == KERNEL],
        "cluster_size": cluster_size(configs),
        "performance_over_consistency": performance_over_consistency(configs),
    }
    return {
        "schema": SCHEMA,
        "meta": meta,
        "configurations": configs,
        "ratios": ratios,
        "goals": goals(configs, ratios),
        "study_findings": study_findings(configs, ratios),
    }


def _stats(prefix: str, samples: list[int]) -> dict[str, float | int | None]:
    """summarize() under prefixed names; None without samples (summarize says 0, which reads as a time)."""
    s = summarize(samples)
    return {f"{prefix}_{k}": s[k] if samples else None for k in STATS}


def _configuration_doc(c: Configuration, runs: list[Run]) -> dict[str, Any]:
    connect = connects(runs)
    return {
        "key": c.key,
        "name": c.name,
        "instances": c.instances,
        "load": c.load,
        "level": c.level,
        "access": c.access,
        "confirm": c.confirm,
        "follow": c.follow,
        "samples": len(connect),
        "failed": sum(r.failed for r in runs),
        "completed": sum(r.completed for r in runs),
        **_stats("connect_us", connect),
        **_stats("total_us", [us for r in runs for us in r.total_us]),
        "connections_per_second": round(statistics.median(r.connections_per_second for r in runs), 1),
        "runs": [
            {
                "run": r.run,
                "started": r.started,
                "samples": len(r.connect_us),
                "failed": r.failed,
                "completed": r.completed,
                "connect_us_p50": p50(r.connect_us),
                "connections_per_second": round(r.connections_per_second, 1),
            }
            for r in runs
        ],
        "p50_over_none": None,
        "p50_over_kernel": None,
        "feed_applied_per_connection": _per_connection(runs),
    }


def _per_connection(runs: list[Run]) -> float | None:
    """Feed records applied (by all instances together) per completed connection; None when the
    runs did not count them (baselines, or an older run)."""
    counted = [r for r in runs if r.feed_applied is not None]
    done = sum(r.completed for r in counted)
    if not counted or not done:
        return None
    return round(sum(r.feed_applied or 0 for r in counted) / done, 3)
