"""The testbed's Sentinel-managed store at run time: start and stop its six processes (a primary,
two replicas, three sentinels; their files: testbed/store.py), ask the sentinels which node is
the primary, and kill it (a test's failure). Everything is asked as the ``admin`` user from
inside fwc-mgmt; every process is stopped by the pid recorded when it was started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from fwcluster.credentials import write_secret
from fwcluster.steering.netns import inside
from fwcluster.testbed import addressing as a
from fwcluster.testbed import store
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.processes import alive
from fwcluster.testbed.state import StoreNodeState

READY_TIMEOUT = 20.0  # seconds for the sentinels to find each other and the replicas
QUERY_TIMEOUT = 1.0


def node_states() -> list[StoreNodeState]:
    """The six nodes, none running yet."""
    ip = a.mgmt_bridge_addr().ip4
    return [StoreNodeState(n.kind, f"{ip}:{n.port}", n.port, None) for n in store.HA_NODES]


def _node(rec: StoreNodeState) -> store.Node:
    return store.Node(rec.kind, rec.port)


def start_stopped(run: Path, records: list[StoreNodeState]) -> None:
    """Start every recorded node that does not run, data nodes first. A data node started while
    another is the primary comes up as its replica (the sentinels would demote it anyway)."""
    primary = primary_port(run) if any(r.pid is not None for r in records) else None
    for rec in sorted(records, key=lambda r: r.kind != "data"):
        if rec.pid is not None and alive(rec.pid):
            continue
        node = _node(rec)
        if node.kind == "data" and primary is not None and primary != node.port:
            conf = node.conf(run).read_text()
            lines = [ln for ln in conf.splitlines() if not ln.startswith(("replicaof ", "slaveof "))]
            ip = a.mgmt_bridge_addr().ip4
            write_secret(node.conf(run), "\n".join([*lines, f"replicaof {ip} {primary}"]))
        rec.pid = store.start(run, node.conf(run), node=node)


def stop_all(records: list[StoreNodeState]) -> None:
    """Stop every node, sentinels first (so that they start no failover meanwhile)."""
    for rec in sorted(records, key=lambda r: r.kind != "sentinel"):
        store.stop(rec.pid)
        rec.pid = None


def _ask(run: Path, port: int, query: Callable[[Any], Any]) -> Any:
    """``query(client)`` on one node as admin, from inside fwc-mgmt."""
    with inside(a.MGMT_NETNS):
        r = store.admin_client(run, port, QUERY_TIMEOUT)
        try:
            return query(r)
        finally:
            r.close()


def primary_port(run: Path) -> int | None:
    """The port of the primary the sentinels name (the first that answers), None if none does."""
    for port in store.SENTINEL_PORTS:
        with contextlib.suppress(redis.RedisError, OSError):
            reply = _ask(run, port, lambda r: r.sentinel_get_master_addr_by_name(store.SERVICE))
            if reply:
                return int(reply[1])
    return None


def role_of(run: Path, port: int) -> str | None:
    """ "primary" or "replica" as the data node itself says (ROLE); None when it does not answer."""
    try:
        reply = _ask(run, port, lambda r: r.execute_command("ROLE"))
    except (redis.RedisError, OSError):
        return None
    return {b"master": "primary", b"slave": "replica"}.get(reply[0]) if reply else None


def roles(run: Path, records: list[StoreNodeState]) -> dict[int, str]:
    """port -> "primary" | "replica" | "sentinel" of every running node (a data node that does not
    answer is left out)."""
    out: dict[int, str] = {}
    for rec in records:
        if rec.pid is None or not alive(rec.pid):
            continue
        if rec.kind == "sentinel":
            out[rec.port] = "sentinel"
        elif (role := role_of(run, rec.port)) is not None:
            out[rec.port] = role
    return out


def _ready(run: Path) -> bool:
    primary = primary_port(run)
    if primary is None or role_of(run, primary) != "primary":
        return False
    replicas = len(store.DATA_PORTS) - 1
    info = _ask(run, primary, lambda r: r.info("replication"))
    online = [
        k
        for k, v in info.items()
        if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
    ]
    if len(online) < replicas:
        return False
    for port in store.SENTINEL_PORTS:
        view = _ask(run, port, lambda r: r.sentinel_master(store.SERVICE))
        if int(view.get("num-other-sentinels", 0)) < len(store.SENTINEL_PORTS) - 1:
            return False
        if int(view.get("num-slaves", 0)) < replicas or view.get("is_odown"):
            return False
    return True


def wait_ready(run: Path, timeout: float = READY_TIMEOUT) -> None:
    """Until the primary has both replicas online and every sentinel knows the other two and
    both replicas: only then can a failover happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError, ValueError, IndexError):
            if _ready(run):
                return
        time.sleep(0.1)
    raise TestbedError(f"the store's sentinels are not ready after {timeout:g} s; see {run}/sentinel-*.log")


def kill_primary(run: Path, records: list[StoreNodeState]) -> StoreNodeState:
    """SIGKILL the primary (after the sentinels are ready to replace it); return its record (pid
    as it was; the caller records it as gone)."""
    wait_ready(run)
    port = primary_port(run)
    rec = next((r for r in records if r.kind == "data" and r.port == port), None)
    if rec is None or rec.pid is None or not alive(rec.pid):
        raise TestbedError(f"the sentinels name port {port} as the primary, which the testbed does not run")
    os.kill(rec.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while alive(rec.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return StoreNodeState(rec.kind, rec.addr, rec.port, rec.pid)
