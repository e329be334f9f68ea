"""Ratios of medians between configurations of a study: over the pooled ``none`` baseline, over
the kernel firewall, larger clusters over 3 instances, the performance end over the consistency end."""

from __future__ import annotations

from typing import Any

from fwcluster.bench.stats import percentile
from fwcluster.bench.study.results import (
    BASE_INSTANCES,
    FULL_CLEAN_SYNC,
    KERNEL,
    PERFORMANCE,
    Configuration,
    Run,
    connects,
)
from fwcluster.statetable.settings import SyncLevel


def p50(samples: list[int]) -> int | None:
    return percentile(sorted(samples), 50) if samples else None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is unknown (or b is no usable denominator)."""
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 4)


def percent(ratio: float) -> float:
    """A ratio as a change in percent: 1.19 -> +19.0, 0.8 -> -20.0."""
    return round((ratio - 1) * 100, 1)


def point(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": c["key"],
        "instances": c["instances"],
        "load": c["load"],
        "connect_us_p50": c["connect_us_p50"],
    }


def none_baselines(groups: dict[Configuration, list[Run]]) -> list[dict[str, Any]]:
    """Level none shares nothing, so access and confirm cannot matter: its four settings pool into
    one baseline per cluster size and load (four times the samples of any single setting)."""
    points: dict[tuple[int, int], list[Configuration]] = {}
    for c in groups:
        if c.level == SyncLevel.NONE:
            points.setdefault((c.instances, c.load), []).append(c)
    out = []
    for (instances, load), cs in sorted(points.items()):
        samples = [us for c in cs for us in connects(groups[c])]
        out.append(
            {
                "instances": instances,
                "load": load,
                "pooled": [c.key for c in cs],
                "samples": len(samples),
                "connect_us_p50": p50(samples),
            }
        )
    return out


def kernel_for(configs: list[dict[str, Any]], instances: int, load: int) -> dict[str, Any] | None:
    """The kernel baseline at this load: at the same cluster size if measured, else the smallest."""
    kernels = [c for c in configs if c["name"] == KERNEL and c["load"] == load]
    same = [c for c in kernels if c["instances"] == instances]
    return next(iter(same or kernels), None)


def add_baseline_ratios(configs: list[dict[str, Any]], nones: list[dict[str, Any]]) -> None:
    none_p50 = {(n["instances"], n["load"]): n["connect_us_p50"] for n in nones}
    for c in configs:
        kernel = kernel_for(configs, c["instances"], c["load"])
        c["p50_over_none"] = ratio(c["connect_us_p50"], none_p50.get((c["instances"], c["load"])))
        c["p50_over_kernel"] = ratio(c["connect_us_p50"], kernel["connect_us_p50"] if kernel else None)


def find(configs: list[dict[str, Any]], name: str, instances: int, load: int) -> dict[str, Any] | None:
    return next(
        (c for c in configs if (c["name"], c["instances"], c["load"]) == (name, instances, load)), None
    )


def cluster_size(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each sync setting at a larger cluster over the same setting at 3 instances, same load."""
    out = []
    for c in configs:
        base = find(configs, c["name"], BASE_INSTANCES, c["load"])
        if c["level"] is None or c["instances"] == BASE_INSTANCES or base is None:
            continue
        out.append(
            {
                "name": c["name"],
                "load": c["load"],
                "instances": c["instances"],
                "base_instances": BASE_INSTANCES,
                "connect_us_p50": c["connect_us_p50"],
                "base_connect_us_p50": base["connect_us_p50"],
                "ratio": ratio(c["connect_us_p50"], base["connect_us_p50"]),
            }
        )
    return out


def performance_over_consistency(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The performance end (established/dirty/async) over the consistency end (full/clean/sync)."""
    out = []
    for perf in (c for c in configs if c["name"] == PERFORMANCE):
        full = find(configs, FULL_CLEAN_SYNC, perf["instances"], perf["load"])
        if full is not None:
            out.append(
                {
                    "instances": perf["instances"],
                    "load": perf["load"],
                    "numerator": perf["key"],
                    "denominator": full["key"],
                    "ratio": ratio(perf["connect_us_p50"], full["connect_us_p50"]),
                }
            )
    return out


def sizes_per_setting(configs: list[dict[str, Any]]) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Per load, the settings measured at more than one cluster size (with samples), by size."""
    out: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for c in configs:
        if c["level"] is not None and c["samples"]:
            out.setdefault(c["load"], {}).setdefault(c["name"], []).append(c)
    return {
        load: {name: sorted(cs, key=lambda c: c["instances"]) for name, cs in by.items() if len(cs) > 1}
        for load, by in sorted(out.items())
        if any(len(cs) > 1 for cs in by.values())
    }
