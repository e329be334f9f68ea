"""Change a running testbed: filter modes, an instance restarted, a new config, the number of
active instances; and run a command in one of its namespaces."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from fwcluster.config import load_config
from fwcluster.steering.netns import run_in
from fwcluster.testbed import addressing as a
from fwcluster.testbed import instances as inst_proc
from fwcluster.testbed import rundir, scaling, topology
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.filtering import FilterMode, switch_modes
from fwcluster.testbed.lock import locked
from fwcluster.testbed.processes import alive, terminate
from fwcluster.testbed.state import (
    DEFAULT_RUN_DIR,
    InstanceState,
    TestbedState,
    require_state,
    save_state,
    state_path,
)


def is_up(run_dir: str | Path = DEFAULT_RUN_DIR) -> bool:
    return state_path(run_dir).exists() and bool(topology.existing_netns())


def netns_exec(
    netns: str, argv: Sequence[str], *, input: str | None = None, timeout: float = 15.0, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a command inside a testbed namespace and capture its output (text)."""
    if not netns.startswith(a.NETNS_PREFIX):
        raise TestbedError(f"{netns!r} is not a testbed namespace")
    return run_in(netns, argv, input=input, timeout=timeout, check=check)


def set_mode(
    mode: FilterMode | str,
    instance_ids: Sequence[str] | None = None,
    run_dir: str | Path = DEFAULT_RUN_DIR,
) -> TestbedState:
    """Switch the filter mode of the given fw namespaces (all by default) and record it."""
    run = Path(run_dir).absolute()
    with locked(run):
        state = require_state(run)
        config = load_config(state.config_path)
        chosen = state.instances if instance_ids is None else [state.instance(i) for i in instance_ids]
        switch_modes(chosen, mode, config)
        save_state(state)
        return state


def restart_instance(instance_id: str, run_dir: str | Path = DEFAULT_RUN_DIR) -> TestbedState:
    """Stop instance ``instance_id`` (if it runs) and start a new process for it; wait until ready.

    The new process gets the same config, queue and store URL; steering is not touched (while it
    starts, its namespace fails closed). Returns the updated state.
    """
    run = Path(run_dir).absolute()
    with locked(run):
        state = require_state(run)
        rec = state.instance(instance_id)
        _respawn(state, rec, run)
        save_state(state)
        inst_proc.wait_ready([rec])
        return state


def _respawn(state: TestbedState, rec: InstanceState, run: Path) -> None:
    """Stop the instance's process (if it runs) and start a new one; do not wait for it."""
    if rec.pid is not None and alive(rec.pid):
        terminate([rec.pid])
    rec.pid = inst_proc.spawn(rec, Path(state.config_path), run, state.store_url)


def reconfigure(config_path: str | Path, run_dir: str | Path = DEFAULT_RUN_DIR) -> TestbedState:
    """Give every instance a new config (e.g. other sync settings): validate it, install it as
    the testbed's config and restart the instances one by one (each joins from the store).
    Steering, store and filter modes stay as they are; the config's steering section must not
    change the steering kind or the bucket count."""
    run = Path(run_dir).absolute()
    new = rundir.load_testbed_config(config_path)  # ConfigError before anything changes
    with locked(run):
        state = require_state(run)
        if (new.steering.kind.value, new.steering.buckets) != (state.steering_kind, state.buckets):
            raise TestbedError(
                "reconfigure cannot change [steering] (kind, buckets): bring the testbed up anew"
            )
        rundir.install_config(run, config_path)
        for rec in state.instances:
            _respawn(state, rec, run)
        save_state(state)
        inst_proc.wait_ready(list(state.instances))
        return state


def scale(
    active_instances: int, run_dir: str | Path = DEFAULT_RUN_DIR
) -> tuple[TestbedState, dict[str, dict[int, str]]]:
    """Change the number of active instances at run time (standby instances are not counted).

    Out: new instances join from the store, then take a fair share of buckets (only those move).
    In: the newest instances hand their buckets to the others, then stop. Returns the state and
    the bucket moves per direction."""
    run = Path(run_dir).absolute()
    if isinstance(active_instances, bool) or active_instances < 1:
        raise TestbedError(f"cannot scale to {active_instances!r}: at least one active instance is needed")
    with locked(run):
        state = require_state(run)
        current = len(scaling.active(state))  # also marks dead instances failed
        if active_instances > current:
            moved = scaling.scale_out(state, active_instances - current, Path(state.config_path))
        elif active_instances < current:
            moved = scaling.scale_in(state, current - active_instances)
        else:
            moved = {}
        save_state(state)
        return state, moved
