"""Start the masters: processes in fwc-mgmt, next to the store (see fwcluster.control).

Each is ``fwcluster master run --config C --id mK --run-dir R --store-url-file F --metrics ...
--listen-api ... --api-token-file T`` (cli/run_cmd.py), the command a host runs too."""

from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from fwcluster.control.client import Endpoint, call
from fwcluster.credentials import read_secret, write_secret
from fwcluster.steering.netns import netns_argv
from fwcluster.steering.spec import dump_spec
from fwcluster.testbed import addressing as a
from fwcluster.testbed import store
from fwcluster.testbed.balancers import balancers, target
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.processes import alive, spawn_detached
from fwcluster.testbed.provision import AGENT_SOCKET
from fwcluster.testbed.rundir import store_url_file
from fwcluster.testbed.state import MasterState, TestbedState

READY_TIMEOUT = 10.0
MASTER_METRICS_PORT = 9200  # master mK serves /metrics on the management bridge, port 9200 + K
MASTER_API_PORT = 9300  # and its admin API (token required) on port 9300 + K
TOKEN_FILE = "api.token"


def api_token(run: Path) -> str:
    """The admin API token of this testbed (made once, readable by root only)."""
    path = run / TOKEN_FILE
    if not path.exists():
        write_secret(path, secrets.token_hex(24))
    return read_secret(path, "api token")


STATUS_STALE = 2.0  # seconds: a master writes its status file every 0.25 s while its loops run


def api_sockets(state: TestbedState) -> list[str]:
    """The masters' admin API sockets: the one that says it leads first, and last any whose
    status file has not been written for STATUS_STALE (a hung master, whose socket still accepts
    but never answers)."""

    def order(m: MasterState) -> tuple[bool, bool]:
        doc = read_status(m) or {}
        updated = doc.get("updated")
        fresh = isinstance(updated, int | float) and time.time() - updated < STATUS_STALE
        return not fresh, not doc.get("leader")

    return [str(Path(state.run_dir) / f"{m.id}.api.sock") for m in sorted(state.masters, key=order)]


def admin_call(
    state: TestbedState, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Ask the testbed's leading master (admin API over the Unix sockets, leader first)."""

    return call([Endpoint(p) for p in api_sockets(state)], method, path, body)


def api_url(master_id: str) -> str:
    """Where master ``master_id`` serves its admin API on the management network."""
    return f"http://{a.mgmt_bridge_addr().ip4}:{MASTER_API_PORT + int(master_id.lstrip('m'))}"


def write_steering_spec(state: TestbedState) -> Path:
    """Describe the steering (and which instances stand by) for the masters, which do not know
    the testbed."""
    spec = dump_spec(
        state.steering_kind, balancers(), state.buckets, [target(i.index) for i in state.instances]
    )
    spec["standby"] = [i.id for i in state.instances if i.role == "standby"]
    if state.agent_pid is not None:  # masters ask the testbed's agent for instances (testbed/provision.py)
        spec["provisioner"] = str(Path(state.run_dir) / AGENT_SOCKET)
    path = Path(state.run_dir) / "steering.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def spawn(master_id: str, state: TestbedState) -> MasterState:
    run = Path(state.run_dir)
    log = run / f"{master_id}.log"
    status = run / f"{master_id}.master.json"
    status.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "fwcluster",
        "master",
        "run",
        "--config",
        state.config_path,
        "--id",
        master_id,
    ]
    url = store.master_url(run) if state.store_conf else state.store_url  # the master user, if ours
    url_file = write_secret(store_url_file(run, master_id), url)
    command += ["--run-dir", str(run), "--store-url-file", str(url_file)]
    k = int(master_id.lstrip("m"))
    command += ["--metrics", f"{a.mgmt_bridge_addr().ip4}:{MASTER_METRICS_PORT + k}"]
    api_token(run)
    command += ["--listen-api", f"{a.mgmt_bridge_addr().ip4}:{MASTER_API_PORT + k}"]
    command += ["--api-token-file", str(run / TOKEN_FILE)]
    proc = spawn_detached(netns_argv(a.MGMT_NETNS, command), log)
    return MasterState(id=master_id, pid=proc.pid, log=str(log), status=str(status))


def wait_ready(masters: list[MasterState], timeout: float = READY_TIMEOUT) -> None:
    """A master is ready once it wrote its status file; one of them must lead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in masters:
            if not alive(m.pid):
                tail = (
                    Path(m.log).read_text(errors="replace").strip().splitlines()[-1:]
                    if Path(m.log).exists()
                    else []
                )
                raise TestbedError(f"master {m.id} exited during start-up: {' '.join(tail) or 'no output'}")
        docs = [read_status(m) for m in masters]
        if all(d is not None for d in docs) and any(d and d.get("leader") for d in docs):
            return
        time.sleep(0.05)
    raise TestbedError(f"no master leads after {timeout:.0f} s (see {masters[0].log})")


def read_status(m: MasterState) -> dict[str, object] | None:
    try:
        doc = json.loads(Path(m.status).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def master_events(state: TestbedState, kind: str, after: float = 0.0) -> list[dict[str, Any]]:
    """The masters' event lines (JSON, one per line in their logs) of ``kind`` since ``after``
    (unix time), oldest first per master."""
    out: list[dict[str, Any]] = []
    for m in state.masters:
        try:
            lines = Path(m.log).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("{"):
                doc = json.loads(line)
                if doc.get("event") == kind and doc.get("time", 0) >= after:
                    out.append(doc)
    return out
