"""Take the testbed down: stop every process it started, remove every ``fwc-*`` namespace and
what the run dir holds. Works from the state file and from what it finds (namespaces, processes),
so it also cleans up after a crashed run."""

from __future__ import annotations

from pathlib import Path

from fwcluster.testbed import rundir, topology
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.lock import locked
from fwcluster.testbed.processes import all_pids, cmdline, pids_in_netns, terminate
from fwcluster.testbed.state import DEFAULT_RUN_DIR, load_state


def down(run_dir: str | Path = DEFAULT_RUN_DIR) -> None:
    """Stop every testbed process, remove every ``fwc-*`` namespace and the run dir's contents.

    Idempotent; also cleans up after a crashed run (it goes by namespaces, not only by records).
    """
    run = Path(run_dir).absolute()
    with locked(run):
        teardown(run, keep_logs=False)


def teardown(run: Path, keep_logs: bool) -> None:
    try:
        state = load_state(run)
    except TestbedError:
        state = None
    names = topology.existing_netns()
    pids: set[int] = set()
    for name in names:
        pids.update(pids_in_netns(name))
    recorded: list[int] = []
    if state is not None:
        recorded = [i.pid for i in state.instances if i.pid]
        recorded += [p for p in (state.nginx_pid, state.store_pid, state.agent_pid) if p]
        recorded += [n.pid for n in state.store_nodes if n.pid]
    for pid in recorded:
        # A recorded pid outside our namespaces is ours only if it still names our run dir.
        if pid not in pids and str(run) in cmdline(pid):
            pids.add(pid)
    # The provisioning agent and its workers, also those of a run whose state file is gone.
    pids.update(p for p in all_pids() if f"fwcluster.testbed.agent --run-dir {run}" in cmdline(p))
    terminate(pids)
    for name in names:
        topology.remove_netns(name)
    rundir.clear(run, keep_logs)
