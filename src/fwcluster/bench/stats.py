"""Summary statistics for latency samples (medians and percentiles; machines here are noisy)."""

from __future__ import annotations

import statistics


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return 0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summarize(samples: list[int]) -> dict[str, float | int]:
    s = sorted(samples)
    return {
        "samples": len(s),
        "p50": percentile(s, 50),
        "p90": percentile(s, 90),
        "p99": percentile(s, 99),
        "mean": round(statistics.fmean(s), 1) if s else 0.0,
        "sd": round(statistics.stdev(s), 1) if len(s) > 1 else 0.0,
    }
