"""The Grafana dashboard (deploy/grafana/fwcluster.json): valid JSON Grafana can import, and every
metric it queries is one an instance or a master really exposes (so a renamed metric cannot
leave a dead panel behind)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fwcluster.config import parse_config
from fwcluster.control.master import Master
from fwcluster.instance.metrics import InstanceMetrics
from fwcluster.instance.process import Instance
from fwcluster.steering import Balancer, NextHop, Target
from fwcluster.steering.spec import dump_spec

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "fwcluster.json"
METRIC = re.compile(r"\b((?:fwcluster|process)_[a-z0-9_]+)\{")


def _exposed(tmp_path: Path) -> set[str]:
    """Every sample name an instance (sharing, so its store metrics exist) and a master expose."""
    config = parse_config(tomllib.loads('[sync]\nlevel = "full"\n[store]\nbackend = "memory"\n'), "<t>")
    registries = [InstanceMetrics(Instance("fw1", config, 0, tmp_path)).registry]
    hop = NextHop(dev="fw1", via4="198.18.1.2", via6="2001:2:0:101::2")
    targets = [Target(id="fw1", mark=0x101, table=101, hops=(("fwc-lb", hop),))]
    spec = dump_spec("symmetric", [Balancer("fwc-lb", "client")], 8, targets)
    (tmp_path / "steering.json").write_text(json.dumps(spec))
    registries.append(Master("m1", config, tmp_path, "redis://127.0.0.1:1").metrics.registry)
    names: set[str] = set()
    for registry in registries:
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            names.update(s.name for s in family.samples)
    return names


def test_dashboard_is_a_grafana_dashboard() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "fwcluster"
    assert dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert panel["title"] and panel["targets"], panel
        assert all(t["expr"] for t in panel["targets"])
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables


def test_every_queried_metric_is_exposed(tmp_path: Path) -> None:
    dash = json.loads(DASHBOARD.read_text())
    queried = {m for p in dash["panels"] for t in p["targets"] for m in METRIC.findall(t["expr"])}
    assert len(queried) > 20
    missing = queried - _exposed(tmp_path)
    assert not missing, f"the dashboard queries metrics nobody exposes: {sorted(missing)}"
