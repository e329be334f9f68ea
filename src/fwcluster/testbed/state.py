"""The running testbed as recorded in ``<run_dir>/testbed.json``: what other processes read.

The CLI, the benchmarks and the tests find the namespaces, addresses, processes and sockets of
the testbed here instead of knowing the address plan.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from fwcluster.credentials import write_secret
from fwcluster.testbed.errors import TestbedError

DEFAULT_RUN_DIR = Path("/run/fwcluster")
STATE_FILE = "testbed.json"
STATE_VERSION = 1


@dataclass(slots=True)
class InstanceState:
    id: str  # "fw1"
    index: int  # 1
    netns: str  # "fwc-fw1"
    pid: int | None  # None while no instance process runs
    queue: int  # NFQUEUE number
    control_socket: str  # "<run_dir>/fw1.sock"
    log: str  # "<run_dir>/fw1.log"
    mgmt_addr: str  # on the management network
    mgmt_addr6: str
    mode: str  # filter mode: fwcluster | kernel | direct
    role: str = "active"  # active (carries buckets) | standby (ready, no traffic, first on a failure)

    @property
    def control(self) -> str:
        """The control socket's path (short name for ``control_socket``)."""
        return self.control_socket


@dataclass(slots=True)
class MasterState:
    id: str  # "m1"
    pid: int
    log: str
    status: str  # the status file the master keeps up to date (id, pid, leader, epoch)


@dataclass(slots=True)
class StoreNodeState:
    kind: str  # "data" (redis-server) | "sentinel"
    addr: str  # "IP:PORT" on the management bridge
    port: int
    pid: int | None  # None while it is stopped (or killed)


@dataclass(slots=True)
class TestbedState:
    __test__: ClassVar[bool] = False  # not a pytest test class despite the name

    run_dir: str
    config_path: str
    instances: list[InstanceState]
    nginx_pid: int | None
    buckets: int
    steering_kind: str
    client_netns: str
    server_netns: str
    lb_netns: str
    rt_netns: str
    mgmt_netns: str
    server_addr: str
    server_addr6: str
    client_addr: str
    client_addr6: str
    mgmt_addr: str  # fwc-mgmt's own address (redis, masters)
    mgmt_addr6: str
    http_port: int
    created: float
    version: int = STATE_VERSION
    docroot: str = ""
    files: dict[str, str] = field(default_factory=dict)  # URL path -> sha256 of the served files
    store_backend: str = ""  # "redis" | "memory"
    store_url: str = ""  # the store's admin URL ("" with the memory backend); this file is 0600
    store_pid: int | None = None  # the testbed's own redis-server (None: stopped or not ours)
    store_conf: str = ""  # its config file ("" when the store is not the testbed's own)
    store_ha: str = "none"  # "sentinel": the testbed's store is a primary, 2 replicas, 3 sentinels
    store_nodes: list[StoreNodeState] = field(default_factory=list)  # with Sentinel: every node
    masters: list[MasterState] = field(default_factory=list)
    agent_pid: int | None = None  # the provisioning agent masters ask for instances (testbed/provision.py)

    def instance(self, instance_id: str) -> InstanceState:
        for inst in self.instances:
            if inst.id == instance_id:
                return inst
        raise TestbedError(f"no instance {instance_id!r} in the testbed")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TestbedState:
        data: dict[str, Any] = json.loads(text)
        if data.get("version") != STATE_VERSION:
            raise TestbedError(f"testbed state has version {data.get('version')!r}, expected {STATE_VERSION}")
        instances = [InstanceState(**i) for i in data.pop("instances")]
        masters = [MasterState(**m) for m in data.pop("masters", [])]
        nodes = [StoreNodeState(**n) for n in data.pop("store_nodes", [])]
        return cls(instances=instances, masters=masters, store_nodes=nodes, **data)


def state_path(run_dir: str | Path = DEFAULT_RUN_DIR) -> Path:
    return Path(run_dir) / STATE_FILE


def save_state(state: TestbedState) -> None:
    """Write the state atomically (readers never see half a file), mode 0600: it holds the
    store's admin URL."""
    path = state_path(state.run_dir)
    tmp = path.with_suffix(".json.tmp")
    write_secret(tmp, state.to_json())
    os.replace(tmp, path)


def load_state(run_dir: str | Path = DEFAULT_RUN_DIR) -> TestbedState | None:
    """The recorded state, or None when no testbed is up."""
    try:
        text = state_path(run_dir).read_text()
    except FileNotFoundError:
        return None
    try:
        return TestbedState.from_json(text)
    except (ValueError, TypeError, KeyError) as e:
        raise TestbedError(f"{state_path(run_dir)}: unreadable testbed state: {e}") from None


def require_state(run_dir: str | Path = DEFAULT_RUN_DIR) -> TestbedState:
    """The recorded state; TestbedError when no testbed is up."""
    state = load_state(run_dir)
    if state is None:
        raise TestbedError("no testbed is up (run `fwcluster testbed up` first)")
    return state
