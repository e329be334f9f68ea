"""The testbed's own store from outside: an outage (stop, start again), the loss of the primary
(Sentinel), its admin password and an authenticated ``redis-cli`` (the password in its
environment, never on its command line)."""

from __future__ import annotations

from pathlib import Path

from fwcluster.testbed import addressing as a
from fwcluster.testbed import sentinel, store
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.lock import locked
from fwcluster.testbed.processes import alive
from fwcluster.testbed.state import DEFAULT_RUN_DIR, StoreNodeState, TestbedState, require_state, save_state


def _own_store(state: TestbedState) -> Path:
    if not state.store_conf:
        what = "the memory backend" if state.store_backend == "memory" else "a store it does not run"
        raise TestbedError(f"the testbed runs no redis of its own (config uses {what})")
    return Path(state.store_conf)


def store_stop(run_dir: str | Path = DEFAULT_RUN_DIR) -> TestbedState:
    """Stop the testbed's store, every node of it (a store outage); idempotent. Its data is gone
    (no snapshots)."""
    run = Path(run_dir).absolute()
    with locked(run):
        state = require_state(run)
        _own_store(state)
        if state.store_nodes:
            sentinel.stop_all(state.store_nodes)
        else:
            store.stop(state.store_pid)
        state.store_pid = None
        save_state(state)
        return state


def store_start(run_dir: str | Path = DEFAULT_RUN_DIR) -> TestbedState:
    """Start the testbed's store again: same addresses, ports, users and passwords; empty.
    Idempotent. With Sentinel: after a full stop, as it was first built (the first data node the
    primary); nodes that are gone while others run (a killed primary) come back as replicas."""
    run = Path(run_dir).absolute()
    with locked(run):
        state = require_state(run)
        conf = _own_store(state)
        if state.store_nodes:
            if all(n.pid is None or not alive(n.pid) for n in state.store_nodes):
                for n in state.store_nodes:
                    n.pid = None
                store.write_ha_confs(run, store.maxmemory_of(conf))  # forget the old failovers
            try:
                sentinel.start_stopped(run, state.store_nodes)
            finally:
                save_state(state)
            state.store_pid = state.store_nodes[0].pid
            save_state(state)
            return state
        if state.store_pid is not None and alive(state.store_pid):
            return state
        state.store_pid = store.start(run, conf)
        save_state(state)
        return state


def store_kill_primary(run_dir: str | Path = DEFAULT_RUN_DIR) -> StoreNodeState:
    """SIGKILL the primary of the testbed's Sentinel-managed store (once the sentinels are ready
    to replace it); return its record (its pid as it was)."""
    run = Path(run_dir).absolute()
    with locked(run):
        state = require_state(run)
        _own_store(state)
        if not state.store_nodes:
            raise TestbedError(
                'the testbed\'s store has no replicas ([store] ha = "none"): nothing would take over'
            )
        killed = sentinel.kill_primary(run, state.store_nodes)
        for n in state.store_nodes:
            if n.port == killed.port and n.kind == "data":
                n.pid = None
        if state.store_pid == killed.pid:
            state.store_pid = None
        save_state(state)
        return killed


def store_primary(state: TestbedState | None = None, run_dir: str | Path = DEFAULT_RUN_DIR) -> str | None:
    """``IP:PORT`` of the primary the sentinels name now (None: none, or no Sentinel)."""
    st = state if state is not None else require_state(run_dir)
    if not st.store_nodes:
        return None
    port = sentinel.primary_port(Path(st.run_dir))
    return None if port is None else f"{a.mgmt_bridge_addr().ip4}:{port}"


def store_password(state: TestbedState | None = None, run_dir: str | Path = DEFAULT_RUN_DIR) -> str:
    """The password of the testbed's redis-server's ``admin`` user."""
    return store.password_of(_own_store(state if state is not None else require_state(run_dir)))


def store_client_argv(
    netns: str = a.MGMT_NETNS, state: TestbedState | None = None, run_dir: str | Path = DEFAULT_RUN_DIR
) -> list[str]:
    """``redis-cli`` inside NETNS as the store's admin user, talking to the testbed's redis (its
    first data node); the password goes from its 0600 file into ``REDISCLI_AUTH``, not onto a
    command line.

    Append a redis command (``[..., "ping"]``) and run it; ``netns`` defaults to fwc-mgmt.
    """
    if not netns.startswith(a.NETNS_PREFIX):
        raise TestbedError(f"{netns!r} is not a testbed namespace")
    conf = _own_store(state if state is not None else require_state(run_dir))
    return store.cli_argv(store.password_file(conf.parent), netns)


def store_ping(netns: str = a.MGMT_NETNS, run_dir: str | Path = DEFAULT_RUN_DIR) -> bool:
    """Does the testbed's redis (its first data node) answer PONG from ``netns`` (within a second)?"""
    conf = _own_store(require_state(run_dir))
    return store.ping(store.password_file(conf.parent), netns)
