"""The study's plots (matplotlib, Agg): box plots and CDFs of connect time at 3 instances, and
connect time against cluster size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from fwcluster.bench.stats import percentile
from fwcluster.bench.study.ratios import sizes_per_setting
from fwcluster.bench.study.results import (
    BASE_INSTANCES,
    DIRECT,
    KERNEL,
    Configuration,
    Run,
    connects,
)
from fwcluster.statetable.settings import SyncLevel

LEVEL_COLORS: dict[str, str] = {
    SyncLevel.NONE: "tab:blue",
    SyncLevel.ESTABLISHED: "tab:green",
    SyncLevel.FULL: "tab:red",
}
# The seed's design (``+all``: every instance follows every change) beside follow = "backup".
SEED_COLORS: dict[str, str] = {SyncLevel.ESTABLISHED: "tab:olive", SyncLevel.FULL: "tab:pink"}
BASELINE_COLORS = {DIRECT: "black", KERNEL: "tab:gray"}  # lines; boxes of baselines are light gray
LINESTYLES = {
    ("dirty", "async"): "-",
    ("dirty", "sync"): "--",
    ("clean", "async"): ":",
    ("clean", "sync"): "-.",
}


def _style(name: str, level: str | None, access: str | None, confirm: str | None) -> tuple[str, str]:
    """Color by level (baselines black/gray; the seed's ``+all`` design a shade of its own), line
    style by access and confirm: one legend reads all."""
    if level is None:
        return BASELINE_COLORS.get(name, "tab:purple"), "-"
    colors = SEED_COLORS if name.endswith("+all") else LEVEL_COLORS
    return colors.get(level, "tab:purple"), LINESTYLES.get((access or "", confirm or ""), "-")


def at_base(groups: dict[Configuration, list[Run]]) -> dict[int, list[tuple[Configuration, list[int]]]]:
    """Per load, every configuration at the study's cluster size that has samples, in report order."""
    out: dict[int, list[tuple[Configuration, list[int]]]] = {}
    for c, runs in groups.items():
        samples = connects(runs)
        if c.instances == BASE_INSTANCES and samples:
            out.setdefault(c.load, []).append((c, samples))
    return out


def _log_us(ax: Any, which: str) -> None:
    """Log scale with plain µs labels (1,000 rather than 10^3), minor ticks labelled at 2 and 5 only."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if f"{v:.0e}"[0] in "25" else ""))


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def box_plot(out_dir: Path, load: int, items: list[tuple[Configuration, list[int]]]) -> Path:
    fig, ax = plt.subplots(figsize=(max(8.0, 0.6 * len(items) + 5.0), 5.5))
    data = [samples for _, samples in items]
    box = ax.boxplot(
        data,
        whis=1.5,
        showfliers=False,
        patch_artist=True,
        tick_labels=[c.name for c, _ in items],
        medianprops={"color": "black"},
    )
    for patch, (c, _) in zip(box["boxes"], items, strict=True):
        patch.set_facecolor(_style(c.name, c.level, c.access, c.confirm)[0] if c.level else "lightgray")
        patch.set_alpha(0.55)
    p99 = [percentile(sorted(s), 99) for s in data]
    ax.scatter(range(1, len(items) + 1), p99, marker="x", s=30, color="black", zorder=3)
    _log_us(ax, "y")
    ax.set_ylabel("TCP connect time (µs, log scale)")
    ax.set_xlabel("configuration (level/access/confirm, or baseline)")
    ax.set_title(f"TCP connection setup time: {BASE_INSTANCES} instances, {load} concurrent connections")
    plt.setp(ax.get_xticklabels(), rotation=35, ha="right")
    handles: list[Artist] = [Patch(facecolor="lightgray", alpha=0.55, label="baselines (no fwcluster)")]
    handles += [Patch(facecolor=color, alpha=0.55, label=f"level {lv}") for lv, color in LEVEL_COLORS.items()]
    handles += [
        Line2D([], [], color="black", label="median; box p25-p75; whiskers 1.5 IQR (outliers not drawn)"),
        Line2D([], [], color="black", marker="x", linestyle="", label="p99"),
    ]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, out_dir / f"box-setup-time-{load}.png")


def cdf_plot(out_dir: Path, load: int, items: list[tuple[Configuration, list[int]]]) -> Path:
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for c, samples in items:
        xs = sorted(samples)
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        color, linestyle = _style(c.name, c.level, c.access, c.confirm)
        ax.step(xs, ys, where="post", color=color, linestyle=linestyle, linewidth=1.3, label=c.name)
    _log_us(ax, "x")
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("TCP connect time (µs, log scale)")
    ax.set_ylabel("fraction of connections set up within")
    ax.set_title(
        f"CDF of TCP connection setup time: {BASE_INSTANCES} instances, {load} concurrent connections"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="level/access/confirm")
    return _save(fig, out_dir / f"cdf-{load}.png")


def cluster_plot(out_dir: Path, configs: list[dict[str, Any]]) -> list[Path]:
    per_load = sizes_per_setting(configs)
    if not per_load:
        return []
    fig, axes = plt.subplots(1, len(per_load), figsize=(6.5 * len(per_load) + 2, 5.5), squeeze=False)
    ax: Axes
    for ax, (load, settings) in zip(axes[0], per_load.items(), strict=True):
        sizes = sorted({c["instances"] for cs in settings.values() for c in cs})
        for i, (name, cs) in enumerate(settings.items()):
            shift = (i - (len(settings) - 1) / 2) * 0.06  # keep the p90 bars apart
            p50 = [c["connect_us_p50"] for c in cs]
            color, linestyle = _style(name, cs[0]["level"], cs[0]["access"], cs[0]["confirm"])
            ax.errorbar(
                [c["instances"] + shift for c in cs],
                p50,
                yerr=[[0] * len(cs), [c["connect_us_p90"] - m for c, m in zip(cs, p50, strict=True)]],
                color=color,
                linestyle=linestyle,
                marker="o",
                markersize=4,
                capsize=3,
                label=name,
            )
        ax.set_xticks(sizes)
        ax.set_xlabel("cluster size (firewall instances)")
        ax.set_ylabel("TCP connect time (µs): median, bar up to p90")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{load} concurrent connections")
        ax.grid(True, alpha=0.3)
    axes[0][-1].legend(
        fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="level/access/confirm"
    )
    fig.suptitle("TCP connection setup time vs cluster size")
    return [_save(fig, out_dir / "cluster-size.png")]
