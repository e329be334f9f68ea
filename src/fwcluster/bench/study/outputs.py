"""Writing a study's outputs: results.json, samples.csv, the plots and report.md."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from fwcluster.bench.study.markdown import render_markdown
from fwcluster.bench.study.plots import at_base, box_plot, cdf_plot, cluster_plot
from fwcluster.bench.study.results import Run, group_runs, report_order

CSV_HEADER = (
    "configuration", "name", "instances", "load", "level", "access", "confirm", "run", "index",
    "connect_us", "total_us",
)  # fmt: skip


def write_outputs(out_dir: Path, runs: list[Run], doc: dict[str, Any]) -> list[Path]:
    """results.json, samples.csv, the plots whose data is present, and report.md linking them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "results.json"
    results.write_text(json.dumps(doc, indent=2) + "\n")
    samples = write_csv(out_dir / "samples.csv", runs)
    groups = group_runs(runs)
    plots = [
        *(box_plot(out_dir, load, items) for load, items in at_base(groups).items()),
        *cluster_plot(out_dir, doc["configurations"]),
        *(cdf_plot(out_dir, load, items) for load, items in at_base(groups).items()),
    ]
    report = out_dir / "report.md"
    report.write_text(render_markdown(doc, [p.name for p in plots]))
    return [results, samples, report, *plots]


def write_csv(path: Path, runs: list[Run]) -> Path:
    """One row per successful connection; failures only as counts in results.json."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_HEADER)
        for r in sorted(runs, key=lambda r: (report_order(r.configuration), r.run)):
            c = r.configuration
            head = [c.key, c.name, c.instances, c.load, c.level or "", c.access or "", c.confirm or "", r.run]
            for i, (connect, total) in enumerate(zip(r.connect_us, r.total_us, strict=True)):
                w.writerow([*head, i, connect, total])
    return path
