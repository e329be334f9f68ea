"""``fwcluster status`` and ``fwcluster check-config``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fwcluster import hostconfig
from fwcluster.cli.errors import UserError
from fwcluster.config import Config, load_config, load_toml
from fwcluster.instance.control import query
from fwcluster.policy import rule_line


def require_root(what: str) -> None:

    if os.geteuid() != 0:
        raise UserError(f"{what} needs root (network namespaces, NFQUEUE)", code=1)


def collect() -> dict[str, Any]:
    """The status document: the contract outside tools rely on (see docs/architecture.md)."""
    from fwcluster.testbed import load_state

    state = load_state()
    if state is None:
        raise UserError("the testbed is not up (run: fwcluster testbed up)", code=1)
    config = load_config(state.config_path)
    buckets = _bucket_counts()
    leader = _leader_status() if state.masters else {}
    roles = {str(i["id"]): str(i["role"]) for i in leader.get("instances", []) if "id" in i and "role" in i}
    stored = leader.get("policy", {}).get("version")  # the stored policy's version (None: unknown)
    instances = []
    for inst in state.instances:
        role = roles.get(inst.id, inst.role)
        entry: dict[str, Any] = {"id": inst.id, "pid": inst.pid, "netns": inst.netns, "role": role}
        entry["buckets"] = buckets.get(inst.id, 0) if buckets is not None else None
        try:
            stats = query(inst.control_socket, {"cmd": "stats"}, timeout=1.0)
            entry.update(health=stats.get("health", "ok"), flows=stats.get("flows", 0), stats=stats)
            applied = stats.get("policy", {}).get("version")
        except (OSError, ValueError):
            entry.update(health="down", flows=None)
            applied = None
        # the policy version it applied, and whether that lags behind the stored one
        entry["policy_version"] = applied
        entry["policy_lag"] = isinstance(stored, int) and applied is not None and applied != stored
        instances.append(entry)
    from fwcluster.testbed.masters import read_status
    from fwcluster.testbed.processes import alive

    masters = []
    for m in state.masters:
        doc = read_status(m) or {}
        running = alive(m.pid)
        masters.append(
            {
                "id": m.id,
                "pid": m.pid,
                "alive": running,
                "leader": running and bool(doc.get("leader")),
                "epoch": doc.get("epoch"),
            }
        )
    return {
        "instances": instances,
        "masters": masters,
        "policy": {"version": stored},
        "store": _store_nodes(state),
        "sync": config.sync.as_dict(),
        "testbed": {
            "client_netns": state.client_netns,
            "server_netns": state.server_netns,
            "server_addr": state.server_addr,
            "server_addr6": state.server_addr6,
            "http_port": state.http_port,
            "steering": {"kind": state.steering_kind, "buckets": state.buckets},
            "config": state.config_path,
        },
    }


def _store_nodes(state: Any) -> dict[str, Any]:
    """``{"ha": "sentinel" | "none", "nodes": [{"addr", "pid", "role"}]}``: the nodes of the
    testbed's own store that run, each with its role as it says itself (a data node that does not
    answer is left out); an external store lists no nodes."""
    from fwcluster.testbed import sentinel
    from fwcluster.testbed.processes import alive

    nodes: list[dict[str, Any]] = []
    if state.store_nodes:
        roles = sentinel.roles(Path(state.run_dir), state.store_nodes)
        order = {"primary": 0, "replica": 1, "sentinel": 2}
        for n in state.store_nodes:
            if n.port in roles:
                nodes.append({"addr": n.addr, "pid": n.pid, "role": roles[n.port]})
        nodes.sort(key=lambda n: (order[n["role"]], n["addr"]))
    elif state.store_conf and state.store_pid is not None and alive(state.store_pid):
        nodes.append({"addr": f"{state.mgmt_addr}:6379", "pid": state.store_pid, "role": "primary"})
    return {"ha": state.store_ha, "nodes": nodes}


def _leader_status() -> dict[str, Any]:
    """The leading master's view (each instance's role, joining .. failed: control/admin.py; the
    stored policy's version), asked over the admin API; empty when no master answers (the
    testbed's record is used then)."""
    from fwcluster.cli.api_client import call

    try:
        return call("GET", "/v1/status")
    except UserError:
        return {}


def _bucket_counts() -> dict[str, int] | None:
    """Buckets per instance in the forward direction, read from the kernel (None if unreadable)."""
    from fwcluster.steering import SteeringError
    from fwcluster.testbed import TestbedError, steer_table

    try:
        table = steer_table()["forward"]
    except (SteeringError, TestbedError, OSError, KeyError):
        return None
    counts: dict[str, int] = {}
    for owner in table.values():
        counts[owner] = counts.get(owner, 0) + 1
    return counts


def _fast(stats: dict[str, object]) -> str:
    """Flows on the kernel fast path (``-`` when off or unknown); with kernel tracking, the
    entries of the namespace's conntrack as ``kernel:N``."""
    fast = stats.get("fast_path")
    if not isinstance(fast, dict) or not fast.get("enabled"):
        return "-"
    if fast.get("kernel_tracking") and fast.get("conntrack_entries") is not None:
        return f"kernel:{fast['conntrack_entries']}"
    return "-" if fast.get("flows") is None else str(fast["flows"])


def _policy(i: dict[str, Any]) -> str:
    """The policy version an instance applied (``none``: it fails closed; ``LAG``: behind the store)."""
    v = i.get("policy_version")
    if v is None:
        return "-"
    return ("none" if v < 0 else str(v)) + (" LAG" if i.get("policy_lag") else "")


def status(args: argparse.Namespace) -> int:
    if args.api:  # one master's own view, over the network
        from fwcluster.cli.api_client import call

        print(json.dumps(call("GET", "/v1/status", api=args.api, token=args.token), indent=2))
        return 0
    doc = collect()
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    console = Console()
    t = Table(title="fwcluster instances")
    columns = (
        "id",
        "role",
        "pid",
        "health",
        "buckets",
        "flows",
        "fast",
        "packets",
        "accept",
        "drop",
        "invalid",
        "policy",
    )
    for col in columns:
        t.add_column(col, justify="left" if col in ("id", "role", "health") else "right")
    for i in doc["instances"]:
        s = i.get("stats", {})
        v = s.get("verdicts", {})
        t.add_row(
            i["id"],
            i["role"],
            str(i["pid"]),
            i["health"],
            str(i["buckets"] if i["buckets"] is not None else "-"),
            str(i["flows"] if i["flows"] is not None else "-"),
            _fast(s),
            *(str(x) for x in (s.get("packets", "-"), v.get("accept", "-"), v.get("drop", "-"))),
            str(s.get("invalid", "-")),
            _policy(i),
        )
    console.print(t)
    lagging = [i["id"] for i in doc["instances"] if i.get("policy_lag")]
    stored = doc["policy"]["version"]
    if stored is not None:
        console.print(
            f"policy: version {stored}"
            + (" (none stored: the config's rules)" if stored == 0 else "")
            + (f"; lagging behind it: {', '.join(lagging)}" if lagging else "")
        )
    sync, tb = doc["sync"], doc["testbed"]
    console.print(f"sync: level={sync['level']} access={sync['access']} confirm={sync['confirm']}")
    if doc["masters"]:
        console.print(
            "masters: "
            + ", ".join(
                f"{m['id']} (pid {m['pid']}{', leader' if m['leader'] else ''})" for m in doc["masters"]
            )
        )
    store = doc["store"]
    if store["nodes"]:
        console.print(
            f"store ({store['ha']}): "
            + ", ".join(f"{n['role']} {n['addr']} (pid {n['pid']})" for n in store["nodes"])
        )
    console.print(
        f"testbed: client={tb['client_netns']} server={tb['server_netns']} "
        f"http://{tb['server_addr']}:{tb['http_port']}/ http://[{tb['server_addr6']}]:{tb['http_port']}/ "
        f"steering={tb['steering']['kind']}/{tb['steering']['buckets']} buckets"
    )
    return 0


def describe(config: Config) -> list[str]:
    lines = [f"sync: {config.sync.as_dict()}", f"policy.default: {config.ruleset.default.name.lower()}"]
    for i, r in enumerate(config.ruleset.rules):
        lines.append(f"rules[{i}]: {rule_line(r)}")
    lines.append(f"conntrack.max_flows: {config.conntrack.max_flows}")
    lines.append(f"steering: {config.steering.kind.value}, {config.steering.buckets} buckets")
    return lines


def check_config(args: argparse.Namespace) -> int:
    """The cluster config, and the [instance] / [master] sections whole (the files they name
    too) as `fwcluster instance run` / `master run` would check them."""
    config = load_config(args.file)
    sections = load_toml(args.file)
    hostconfig.check_sections(sections, args.file)
    lines = describe(config)
    if "instance" in sections:
        _, inst = hostconfig.load_instance(args.file, {})
        lines.append(
            f"instance {inst.id}: queue {inst.queue}, run dir {inst.run_dir}, metrics {inst.metrics or 'off'}"
        )
    if "master" in sections:
        _, m = hostconfig.load_master(args.file, {})
        lines.append(
            f"master {m.id}: run dir {m.run_dir}, api {m.api or 'Unix socket only'}, steering {m.steering}"
        )
    print(f"{args.file}: ok")
    for line in lines:
        print(f"  {line}")
    return 0
