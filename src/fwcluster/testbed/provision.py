"""The testbed's provisioning agent: masters ask it for instances, the way a cluster manager asks
its cloud for machines.

Masters run in fwc-mgmt and know nothing about the testbed; adding an instance means building a
namespace, links, filters and a steering target, which only the testbed can do, from the host's
namespaces. So the testbed runs this agent next to the masters (in the namespace the testbed was
built from) and writes its socket's path into the steering description. A master sends one JSON
line and reads one back:

    {"op": "add", "count": 2}          -> {"ok": true, "added": ["fw4", "fw5"]}   (each ready)
    {"op": "add", "count": 1, "role": "standby"}   the same, listed as standby for the masters
    {"op": "remove", "ids": ["fw5"]}   -> {"ok": true, "removed": ["fw5"]}        (no bucket left)
    anything wrong                     -> {"error": "<one line>"}

The agent moves no bucket: the master does that, through its fenced steering driver. The server
itself is ``python -m fwcluster.testbed.agent``; this module is what it and the testbed share.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fwcluster.testbed import scaling
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.lock import locked
from fwcluster.testbed.processes import spawn_detached
from fwcluster.testbed.state import TestbedState, require_state, save_state

AGENT_SOCKET = "provision.sock"
START_TIMEOUT = 10.0


def handle(run: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Carry out one request under the testbed lock; every failure is a one-line error."""

    op = request.get("op")
    try:
        with locked(run):
            state = require_state(run)
            if op == "add":
                count = request.get("count")
                if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                    return {"error": f"add: count must be a positive integer, not {count!r}"}
                role = request.get("role", "active")
                if role not in ("active", "standby"):
                    return {"error": f"add: role must be active or standby, not {role!r}"}
                scaling.active(state)  # roles up to date first (a standby a master promoted is active)
                timings: dict[str, float] = {}
                try:
                    added = scaling.add_instances(state, count, Path(state.config_path), timings, role)
                finally:
                    save_state(state)  # what was built is recorded, so `down` finds it even after a failure
                return {"ok": True, "added": [i.id for i in added], **timings}
            if op == "remove":
                ids = request.get("ids")
                if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not ids:
                    return {"error": f"remove: ids must be a non-empty list of instance ids, not {ids!r}"}
                try:
                    removed = scaling.remove_instances(state, ids)
                finally:
                    save_state(state)
                return {"ok": True, "removed": removed}
            return {"error": f"unknown op {op!r} (allowed: add, remove)"}
    except TestbedError as e:
        return {"error": str(e)}
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": f"{op}: {e}"}


def ask(run: Path, request: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
    """Send one request to the testbed's agent and return its answer (a blocking client; masters
    use their own asyncio one). Raises TestbedError when the agent refuses or cannot be reached."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(run / AGENT_SOCKET))
            s.sendall(json.dumps(request).encode() + b"\n")
            reply: dict[str, Any] = json.loads(s.makefile().readline())
    except (OSError, ValueError) as e:
        raise TestbedError(f"provisioning agent: {e}") from None
    if "error" in reply:
        raise TestbedError(f"provisioning agent: {reply['error']}")
    return reply


def spawn(state: TestbedState) -> int:
    """Start the agent for a testbed; returns its pid once its socket accepts connections."""
    run = Path(state.run_dir)
    argv = [sys.executable, "-m", "fwcluster.testbed.agent", "--run-dir", str(run)]
    proc = spawn_detached(argv, run / "provision.log")
    deadline = time.monotonic() + START_TIMEOUT
    while not (run / AGENT_SOCKET).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise TestbedError(f"the provisioning agent did not start (see {run / 'provision.log'})")
        time.sleep(0.02)
    return proc.pid
