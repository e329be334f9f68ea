"""report.md from a results document: the goals, the study's findings beside ours, a table per
load, the cluster sizes. Pure, so a stored results.json can be rendered again."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fwcluster.bench.study.ratios import sizes_per_setting
from fwcluster.bench.study.results import BASE_INSTANCES


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def _met(g: dict[str, Any]) -> str:
    if g["target"] is None:
        return "reported"
    if g["met"] is None:
        return "no data"
    return "met" if g["met"] else f"missed by {g['missed_by']:.1f}%"


def _meta_lines(meta: dict[str, Any]) -> list[str]:
    m = meta.get("machine", {})
    packages = ", ".join(f"{k} {v}" for k, v in sorted(m.get("packages", {}).items()))
    lines = [
        f"{meta.get('date', '?')} · `{meta.get('command', '?')}` · {m.get('hostname', '?')}: "
        f"kernel {m.get('kernel', '?')}, {m.get('cpus', '?')} CPUs, Python {m.get('python', '?')}"
        + (f"; {packages}" if packages else ""),
        "",
        f"{meta.get('runs', '?')} interleaved runs x {meta.get('count', '?')} downloads per configuration, "
        f"loads {', '.join(str(x) for x in meta.get('loads', []))} concurrent connections.",
        "",
    ]
    if meta.get("quick"):
        lines += ["**Quick run**: few samples, the figures are indicative only.", ""]
    return lines


def _goal_lines(goals: list[dict[str, Any]]) -> list[str]:
    rows = [
        [g["goal"], str(g["load"]), f"{g['numerator']} / {g['denominator']}", _x(g["value"]),
         "-" if g["target"] is None else f"≤ {g['target']:.2f}", _met(g)]
        for g in goals
    ]  # fmt: skip
    return ["## Goals", "", *table(["goal", "load", "ratio of medians", "value", "target", "result"], rows)]


def _ours_text(ours: list[dict[str, Any]]) -> str:
    """Our ratios grouped by cluster size and load, each group as a range of percent changes."""
    groups: dict[tuple[int, int], list[float]] = {}
    for o in ours:
        if o["percent"] is not None:
            groups.setdefault((o["instances"], o["load"]), []).append(o["percent"])
    parts = [
        f"{load} concurrent, {inst} instances: {min(p):+.1f}%"
        + ("" if len(p) == 1 else f" to {max(p):+.1f}% ({len(p)})")
        for (inst, load), p in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
    return "<br>".join(parts) or "no data"


def _study_lines(findings: list[dict[str, Any]]) -> list[str]:
    rows = [
        [f["claim"], f"“{f['study']['quote']}”", _ours_text(f["ours"]), f["comparison"]] for f in findings
    ]
    return [
        "## Against the study",
        "",
        "The study's numbers are from its closing slide (Erlang prototype on VMs, 25 and 100 concurrent "
        "downloads of a 1-byte file). Ours: change of the median connect time, range over the settings "
        "compared (their count in brackets).",
        "",
        *table(["claim", "study", "ours", "how we compare"], rows),
    ]


def _load_lines(configs: list[dict[str, Any]], load: int, plots: Sequence[str]) -> list[str]:
    rows = [
        [f"`{c['name']}`", f"{c['samples']:,}", f"{c['failed']:,}", _us(c["connect_us_p50"]),
         _us(c["connect_us_p90"]), _us(c["connect_us_p99"]),
         f"{_us(c['connect_us_mean'])} ± {_us(c['connect_us_sd'])}", _x(c["p50_over_none"]),
         _x(c["p50_over_kernel"]), f"{c['connections_per_second']:,.0f}"]
        for c in configs
        if c["load"] == load and c["instances"] == BASE_INSTANCES
    ]  # fmt: skip
    header = ["configuration", "samples", "failed", "median µs", "p90 µs", "p99 µs", "mean ± sd µs",
              "over none", "over kernel", "conn/s"]  # fmt: skip
    lines = [f"## {BASE_INSTANCES} instances, {load} concurrent connections", "", *table(header, rows)]
    lines += [
        f"![{title}]({name})"
        for name, title in [(f"box-setup-time-{load}.png", "box plot"), (f"cdf-{load}.png", "CDF")]
        if name in plots
    ]
    return [*lines, ""]


def _cluster_lines(doc: dict[str, Any], plots: Sequence[str]) -> list[str]:
    per_load = sizes_per_setting(doc["configurations"])
    if not per_load:
        return []
    sizes = sorted({c["instances"] for by in per_load.values() for cs in by.values() for c in cs})
    ratio = {(r["name"], r["load"], r["instances"]): r["ratio"] for r in doc["ratios"]["cluster_size"]}
    rows = []
    for load, settings in per_load.items():
        for name, cs in settings.items():
            p50 = {c["instances"]: c["connect_us_p50"] for c in cs}
            feed = {c["instances"]: c.get("feed_applied_per_connection") for c in cs}
            rows.append(
                [f"`{name}`", str(load)]
                + [_us(p50.get(n)) for n in sizes]
                + [_x(ratio.get((name, load, n))) for n in sizes if n != BASE_INSTANCES]
                + [_x(feed.get(n)) for n in sizes]
            )
    header = ["setting", "load"] + [f"median µs at {n}" for n in sizes]
    header += [f"{n} over {BASE_INSTANCES}" for n in sizes if n != BASE_INSTANCES]
    header += [f"feed/conn at {n}" for n in sizes]
    lines = [
        "## Cluster size",
        "",
        "Feed/conn: feed records the instances applied (together) per download; `+all` is the seed's "
        'design (every instance follows every change), no suffix `follow = "backup"`.',
        "",
        *table(header, rows),
    ]
    return lines + (["![cluster size](cluster-size.png)", ""] if "cluster-size.png" in plots else [])


def render_markdown(doc: dict[str, Any], plots: Sequence[str] = ()) -> str:
    """The report's tables from a results document; ``plots`` are file names to link (relative)."""
    loads = sorted({c["load"] for c in doc["configurations"]})
    lines = ["# fwcluster bench study: the price of sharing state", "", *_meta_lines(doc["meta"])]
    lines += _goal_lines(doc["goals"]) + _study_lines(doc["study_findings"])
    lines += [
        "Connect time: from `connect()` to the connection established, all runs pooled; failed "
        "connections are counted, not timed. Over none: median over the pooled `none/*/*` median at the same "
        "size and load; over kernel: over the kernel firewall's. Box plots draw no outliers: see p99.",
        "",
    ]
    for load in loads:
        lines += _load_lines(doc["configurations"], load, plots)
    lines += _cluster_lines(doc, plots)
    lines += ["Raw data: [results.json](results.json), [samples.csv](samples.csv).", ""]
    return "\n".join(lines)
