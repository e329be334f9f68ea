"""A steering driver described as JSON, so another process (a master) can rebuild it.

The testbed writes the description of its balancers and instances once; masters load it and
drive the same kernel tables without knowing anything about the testbed.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fwcluster.steering.base import Balancer, NextHop, SteeringDriver, SteeringError, Target
from fwcluster.steering.drivers import make_driver


def dump_spec(kind: str, balancers: list[Balancer], buckets: int, targets: list[Target]) -> dict[str, Any]:
    return {
        "kind": kind,
        "buckets": buckets,
        "balancers": [asdict(b) for b in balancers],
        "targets": [
            {"id": t.id, "mark": t.mark, "table": t.table, "hops": [[ns, asdict(h)] for ns, h in t.hops]}
            for t in targets
        ],
    }


def driver_from_spec(spec: dict[str, Any]) -> SteeringDriver:
    try:
        balancers = [Balancer(**b) for b in spec["balancers"]]
        targets = [
            Target(
                id=t["id"],
                mark=int(t["mark"]),
                table=int(t["table"]),
                hops=tuple((ns, NextHop(**h)) for ns, h in t["hops"]),
            )
            for t in spec["targets"]
        ]
        return make_driver(spec["kind"], balancers, int(spec["buckets"]), targets)
    except (KeyError, TypeError, ValueError) as e:
        raise SteeringError(f"malformed steering description: {e}") from None


def load_driver(path: str | Path) -> SteeringDriver:
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SteeringError(f"{path}: cannot read the steering description: {e}") from None
    return driver_from_spec(spec)


def load_standby(path: str | Path) -> list[str]:
    """The instances the description names as standby (ready, no buckets), in order."""
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SteeringError(f"{path}: cannot read the steering description: {e}") from None
    return [str(i) for i in spec.get("standby", [])]


def load_provisioner(path: str | Path) -> str:
    """The socket of the agent that adds and removes instances ("" when the cluster has none)."""
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SteeringError(f"{path}: cannot read the steering description: {e}") from None
    return str(spec.get("provisioner", ""))
