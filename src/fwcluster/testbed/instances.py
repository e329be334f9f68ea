"""Start firewall instance processes, one per fw namespace, and wait until each is ready.

The contract with the instance: it is started as ``fwcluster instance run --config C --id fwK
--queue Q --run-dir R --metrics ADDR:PORT [--store-url-file F]`` (cli/run_cmd.py, the command a
host runs too: flags override the config's ``[instance]`` fields) inside ``fwc-fwK``, and it
creates the Unix socket ``R/fwK.sock`` once it reads its queue and answers.
``--store-url-file R/fwK.store-url`` (0600) is given when the testbed has a store URL (its own
redis-server, or the config's): the URL may carry a password, so it is never on the command
line. With the testbed's own redis, every start makes the instance's store user ``inst-fwK`` anew
with a new password (testbed/store_acl.py: the flows, the feed and its own heartbeat and
registration, nothing else).
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

from fwcluster.credentials import write_secret
from fwcluster.steering.netns import netns_argv
from fwcluster.testbed import addressing as a
from fwcluster.testbed import store
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.filtering import FilterMode
from fwcluster.testbed.processes import alive, spawn_detached
from fwcluster.testbed.rundir import store_url_file
from fwcluster.testbed.state import InstanceState

READY_TIMEOUT = 10.0
METRICS_PORT = 9100  # each instance serves /metrics on its management address


def instance_record(k: int, run: Path) -> InstanceState:
    """The record of instance ``k`` before it runs: its namespace, socket, log and addresses."""
    fw = a.fw_id(k)
    return InstanceState(
        id=fw,
        index=k,
        netns=a.fw_netns(k),
        pid=None,
        queue=0,
        control_socket=str(run / f"{fw}.sock"),
        log=str(run / f"{fw}.log"),
        mgmt_addr=a.mgmt_addr(k).ip4,
        mgmt_addr6=a.mgmt_addr(k).ip6,
        mode=FilterMode.FWCLUSTER.value,
    )


def instance_command(inst: InstanceState, config_path: Path, run_dir: Path) -> list[str]:
    """The command line of one instance (run inside its namespace)."""
    return [
        sys.executable,
        "-m",
        "fwcluster",
        "instance",
        "run",
        "--config",
        str(config_path),
        "--id",
        inst.id,
        "--queue",
        str(inst.queue),
        "--run-dir",
        str(run_dir),
        "--metrics",
        f"{inst.mgmt_addr}:{METRICS_PORT}",
    ]


def spawn(inst: InstanceState, config_path: Path, run_dir: Path, store_url: str = "") -> int:
    """Start one instance in its namespace (output to its log); return its pid, do not wait."""
    sock = Path(inst.control_socket)
    sock.unlink(missing_ok=True)
    command = instance_command(inst, config_path, run_dir)
    if store_url:
        if store.owns(run_dir):  # the testbed's own redis: a user of the instance's own
            store_url = store.instance_url(run_dir, inst.id)
        secret = write_secret(store_url_file(run_dir, inst.id), store_url)
        command = [*command, "--store-url-file", str(secret)]
    argv = netns_argv(inst.netns, command)
    # `ip netns exec` execs the command, so the pid is the instance's own.
    return spawn_detached(argv, inst.log).pid


def _ready(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def wait_ready(insts: list[InstanceState], timeout: float = READY_TIMEOUT) -> None:
    """Wait until every instance's control socket accepts connections; fail if one dies or is late."""
    deadline = time.monotonic() + timeout
    pending = list(insts)
    while pending:
        for inst in list(pending):
            if _ready(Path(inst.control_socket)):
                pending.remove(inst)
            elif inst.pid is not None and not alive(inst.pid):
                raise TestbedError(f"instance {inst.id} exited during start-up: {_last_line(inst.log)}")
        if not pending:
            return
        if time.monotonic() >= deadline:
            ids = ", ".join(i.id for i in pending)
            raise TestbedError(f"instance(s) {ids} not ready within {timeout:g} s (see {pending[0].log})")
        time.sleep(0.02)


def _last_line(log: str) -> str:
    try:
        lines = [ln for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return f"no log at {log}"
    return f"{lines[-1].strip()} (see {log})" if lines else f"no output (see {log})"
