"""The testbed's public API: bring it up, tear it down, look at it, switch its filter mode.

Used by the CLI, the benchmarks and the tests. Only one testbed exists at a time (namespace names
are global); a lock file next to the run dir keeps two commands from building at once.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from fwcluster.config import DEFAULT_TOML, Config, StoreBackend, load_config
from fwcluster.steering import Direction, SteeringDriver, SteeringError, make_driver
from fwcluster.steering.netns import run_in
from fwcluster.testbed import addressing as a
from fwcluster.testbed import instances as inst_proc
from fwcluster.testbed import masters as master_proc
from fwcluster.testbed import provision, store, topology
from fwcluster.testbed.balancers import balancers, driver_for, target
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.filtering import FilterMode, current_mode, install_guard, parse_mode, set_filter_mode
from fwcluster.testbed.processes import alive, all_pids, cmdline, pids_in_netns, terminate
from fwcluster.testbed.server import start_nginx
from fwcluster.testbed.state import (
    DEFAULT_RUN_DIR,
    InstanceState,
    TestbedState,
    load_state,
    save_state,
    state_path,
)

CONFIG_FILE = "config.toml"
_LOCK_TIMEOUT = 60.0
_T = TypeVar("_T")
_PARALLEL = 16  # namespaces programmed at once (each step is a few short tool runs)


def _each(records: Iterable[InstanceState], step: Callable[[InstanceState], None]) -> None:
    """Run ``step`` for every instance namespace, several at a time; the first error propagates."""
    with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
        for future in [pool.submit(step, rec) for rec in records]:
            future.result()


@contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Hold the testbed lock (``<run_dir>.lock``) for the block."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = run_dir.with_name(run_dir.name + ".lock")
    with open(lock, "a") as f:
        deadline = time.monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TestbedError(f"another testbed command holds {lock}") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def up(
    instances: int = 3,
    config_path: str | Path | None = None,
    start_instances: bool = True,
    run_dir: str | Path = DEFAULT_RUN_DIR,
    mode: FilterMode | str | None = None,
) -> TestbedState:
    """Build the testbed, start nginx and (unless told not to) one instance per fw namespace.

    The config is validated first (a ConfigError propagates and nothing is created). ``mode`` is
    the filter mode the fw namespaces end in: by default ``fwcluster`` with instances and
    ``direct`` without. On failure everything built is torn down (logs are kept) and a
    TestbedError with a one-line message is raised.
    """
    config = load_config(config_path)
    if isinstance(instances, bool) or not 1 <= instances <= a.MAX_INSTANCES - config.cluster.standby:
        limit = a.MAX_INSTANCES - config.cluster.standby
        raise TestbedError(
            f"instances must be 1..{limit} (plus {config.cluster.standby} standby), not {instances!r}"
        )
    if mode is None:
        final_mode = FilterMode.FWCLUSTER if start_instances else FilterMode.DIRECT
    else:
        final_mode = parse_mode(mode)
    try:
        driver_for_config(config)  # e.g. too many buckets for ecmp: refused before anything is built
    except SteeringError as e:
        raise TestbedError(str(e)) from None
    run = Path(run_dir).absolute()
    with _locked(run):
        if state_path(run).exists() or topology.existing_netns():
            raise TestbedError("the testbed is already up (run `fwcluster testbed down` first)")
        try:
            return _build(
                instances + config.cluster.standby, config_path, config, start_instances, run, final_mode
            )
        except BaseException as e:
            _teardown(run, keep_logs=True)
            if isinstance(e, TestbedError) or not isinstance(e, Exception):
                raise
            message = " ".join(str(e).split()) or type(e).__name__
            raise TestbedError(f"testbed up failed: {message}") from e


def _prepare_run_dir(run: Path, config_path: str | Path | None) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    run.chmod(0o755)  # nginx workers (nobody) read the document root below it
    _clear(run, keep_logs=False)
    dst = run / CONFIG_FILE
    if config_path is None:
        dst.write_text(DEFAULT_TOML)
    else:
        shutil.copyfile(config_path, dst)
    return dst


def _build(
    n: int,
    config_path: str | Path | None,
    config: Config,
    start_instances: bool,
    run: Path,
    final_mode: FilterMode,
) -> TestbedState:
    config_file = _prepare_run_dir(run, config_path)
    topology.build(n)
    records = [instance_record(k, run) for k in range(1, n + 1)]
    for rec in records[n - config.cluster.standby :]:
        rec.role = "standby"

    # Fail closed before anything can be steered: the queue has no reader yet.
    def fail_closed(rec: InstanceState) -> None:
        install_guard(rec.netns, a.IF_MGMT)
        set_filter_mode(rec.netns, FilterMode.FWCLUSTER, config, rec.queue)

    _each(records, fail_closed)
    driver = driver_for_config(config)
    driver.install([target(k) for k in range(1, n + 1)])
    driver.spread([r.id for r in records if r.role == "active"])
    nginx_pid, docroot, sums = start_nginx(run)
    store_url, store_conf = config.store.url, ""
    if config.store.backend is StoreBackend.REDIS and not store_url:
        store_conf = str(store.write_conf(run, store.new_password()))
        store_url = store.store_url(store.password_of(Path(store_conf)))
    topology.wait_ready(n)  # after the slow steps, which overlap the kernel's link-up work
    state = TestbedState(
        run_dir=str(run),
        config_path=str(config_file),
        instances=records,
        nginx_pid=nginx_pid,
        buckets=config.steering.buckets,
        steering_kind=str(config.steering.kind),
        client_netns=a.CLIENT_NETNS,
        server_netns=a.SERVER_NETNS,
        lb_netns=a.LB_NETNS,
        rt_netns=a.RT_NETNS,
        mgmt_netns=a.MGMT_NETNS,
        server_addr=a.server_addr().ip4,
        server_addr6=a.server_addr().ip6,
        client_addr=a.client_addr().ip4,
        client_addr6=a.client_addr().ip6,
        mgmt_addr=a.mgmt_bridge_addr().ip4,
        mgmt_addr6=a.mgmt_bridge_addr().ip6,
        http_port=a.HTTP_PORT,
        created=time.time(),
        docroot=str(docroot),
        files=sums,
        store_backend=str(config.store.backend),
        store_url=store_url if config.store.backend is StoreBackend.REDIS else "",
        store_conf=store_conf,
    )
    save_state(state)  # from here on, down() finds every process by its record too
    if store_conf:
        state.store_pid = store.start(run, Path(store_conf))
        save_state(state)
    if start_instances:
        for rec in records:
            rec.pid = inst_proc.spawn(rec, config_file, run, state.store_url)
        save_state(state)
        inst_proc.wait_ready(records)
        if state.store_url and config.cluster.masters:
            state.agent_pid = provision.spawn(state)
            save_state(state)
            master_proc.write_steering_spec(state)
            state.masters = [master_proc.spawn(f"m{i}", state) for i in range(1, config.cluster.masters + 1)]
            save_state(state)
            master_proc.wait_ready(state.masters)
    if final_mode is not FilterMode.FWCLUSTER:
        _switch(records, final_mode, config)
        save_state(state)
    return state


def _switch(records: Sequence[InstanceState], mode: FilterMode | str, config: Config) -> None:
    def step(rec: InstanceState) -> None:
        set_filter_mode(rec.netns, mode, config, rec.queue)
        rec.mode = FilterMode(mode).value

    _each(records, step)


def instance_record(k: int, run: Path) -> InstanceState:
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


def driver_for_config(config: Config) -> SteeringDriver:
    """A steering driver for the configured kind and bucket count, knowing no instance yet."""
    return make_driver(str(config.steering.kind), balancers(), config.steering.buckets)


def down(run_dir: str | Path = DEFAULT_RUN_DIR) -> None:
    """Stop every testbed process, remove every ``fwc-*`` namespace and the run dir's contents.

    Idempotent; also cleans up after a crashed run (it goes by namespaces, not only by records).
    """
    run = Path(run_dir).absolute()
    with _locked(run):
        _teardown(run, keep_logs=False)


def _teardown(run: Path, keep_logs: bool) -> None:
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
    for pid in recorded:
        # A recorded pid outside our namespaces is ours only if it still names our run dir.
        if pid not in pids and str(run) in cmdline(pid):
            pids.add(pid)
    # The provisioning agent and its workers, also those of a run whose state file is gone.
    pids.update(p for p in all_pids() if f"fwcluster.testbed.agent --run-dir {run}" in cmdline(p))
    terminate(pids)
    for name in names:
        topology.remove_netns(name)
    _clear(run, keep_logs)


def _clear(run: Path, keep_logs: bool) -> None:
    if not run.is_dir():
        return
    for entry in run.iterdir():
        if keep_logs and entry.suffix == ".log":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with suppress(FileNotFoundError):
                entry.unlink()


def require_state(run_dir: str | Path = DEFAULT_RUN_DIR) -> TestbedState:
    """The recorded state; TestbedError when no testbed is up."""
    state = load_state(run_dir)
    if state is None:
        raise TestbedError("no testbed is up (run `fwcluster testbed up` first)")
    return state


def set_mode(
    mode: FilterMode | str,
    instance_ids: Sequence[str] | None = None,
    run_dir: str | Path = DEFAULT_RUN_DIR,
) -> TestbedState:
    """Switch the filter mode of the given fw namespaces (all by default) and record it."""
    run = Path(run_dir).absolute()
    with _locked(run):
        state = require_state(run)
        config = load_config(state.config_path)
        chosen = state.instances if instance_ids is None else [state.instance(i) for i in instance_ids]
        _switch(chosen, mode, config)
        save_state(state)
        return state


def steering_driver(
    state: TestbedState | None = None, run_dir: str | Path = DEFAULT_RUN_DIR
) -> SteeringDriver:
    """A steering driver for the running testbed (knows every instance, reads the kernel's table)."""
    return driver_for(state if state is not None else require_state(run_dir))


def netns_exec(
    netns: str, argv: Sequence[str], *, input: str | None = None, timeout: float = 15.0, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a command inside a testbed namespace and capture its output (text)."""
    if not netns.startswith(a.NETNS_PREFIX):
        raise TestbedError(f"{netns!r} is not a testbed namespace")
    return run_in(netns, argv, input=input, timeout=timeout, check=check)


def is_up(run_dir: str | Path = DEFAULT_RUN_DIR) -> bool:
    return state_path(run_dir).exists() and bool(topology.existing_netns())


def restart_instance(instance_id: str, run_dir: str | Path = DEFAULT_RUN_DIR) -> TestbedState:
    """Stop instance ``instance_id`` (if it runs) and start a new process for it; wait until ready.

    The new process gets the same config, queue and store URL; steering is not touched (while it
    starts, its namespace fails closed). Returns the updated state.
    """
    run = Path(run_dir).absolute()
    with _locked(run):
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
    new = load_config(config_path)  # ConfigError before anything changes
    with _locked(run):
        state = require_state(run)
        if (new.steering.kind.value, new.steering.buckets) != (state.steering_kind, state.buckets):
            raise TestbedError(
                "reconfigure cannot change [steering] (kind, buckets): bring the testbed up anew"
            )
        shutil.copyfile(config_path, run / CONFIG_FILE)
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
    from fwcluster.testbed import scaling

    run = Path(run_dir).absolute()
    if isinstance(active_instances, bool) or active_instances < 1:
        raise TestbedError(f"cannot scale to {active_instances!r}: at least one active instance is needed")
    with _locked(run):
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


# --- the store (the testbed's own redis-server in fwc-mgmt) --------------------------------------


def _own_store(state: TestbedState) -> Path:
    if not state.store_conf:
        what = "the memory backend" if state.store_backend == "memory" else f"the store at {state.store_url}"
        raise TestbedError(f"the testbed runs no redis of its own (config uses {what})")
    return Path(state.store_conf)


def store_stop(run_dir: str | Path = DEFAULT_RUN_DIR) -> TestbedState:
    """Stop the testbed's redis-server (a store outage); idempotent. Its data is gone (no snapshots)."""
    run = Path(run_dir).absolute()
    with _locked(run):
        state = require_state(run)
        _own_store(state)
        store.stop(state.store_pid)
        state.store_pid = None
        save_state(state)
        return state


def store_start(run_dir: str | Path = DEFAULT_RUN_DIR) -> TestbedState:
    """Start the testbed's redis-server again: same address, port and password; empty. Idempotent."""
    run = Path(run_dir).absolute()
    with _locked(run):
        state = require_state(run)
        conf = _own_store(state)
        if state.store_pid is not None and alive(state.store_pid):
            return state
        state.store_pid = store.start(run, conf)
        save_state(state)
        return state


def store_password(state: TestbedState | None = None, run_dir: str | Path = DEFAULT_RUN_DIR) -> str:
    """The password of the testbed's own redis-server."""
    return store.password_of(_own_store(state if state is not None else require_state(run_dir)))


def store_client_argv(
    netns: str = a.MGMT_NETNS, state: TestbedState | None = None, run_dir: str | Path = DEFAULT_RUN_DIR
) -> list[str]:
    """``ip netns exec NETNS redis-cli -h 198.18.255.1 -p 6379 --no-auth-warning -a PASSWORD``.

    Append a redis command (``[..., "ping"]``) and run it; ``netns`` defaults to fwc-mgmt.
    """
    if not netns.startswith(a.NETNS_PREFIX):
        raise TestbedError(f"{netns!r} is not a testbed namespace")
    return store.cli_argv(store_password(state, run_dir), netns)


def store_ping(netns: str = a.MGMT_NETNS, run_dir: str | Path = DEFAULT_RUN_DIR) -> bool:
    """Does the testbed's redis answer PONG from ``netns`` (within a second)?"""
    return store.ping(store_password(None, run_dir), netns)


# --- steering by hand ----------------------------------------------------------------------------


def _steer_check(state: TestbedState, ids: Sequence[str], buckets: Iterable[int] = ()) -> None:
    known = [i.id for i in state.instances]
    for i in ids:
        if i not in known:
            raise TestbedError(f"unknown instance {i!r} (known: {', '.join(known)})")
    for b in buckets:
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < state.buckets:
            raise TestbedError(f"bucket {b!r} is out of range 0..{state.buckets - 1}")


def _steer(run: Path, action: Callable[[SteeringDriver], _T]) -> _T:
    with _locked(run):
        driver = driver_for(require_state(run))
        try:
            return action(driver)
        except SteeringError as e:
            raise TestbedError(str(e)) from None


def steer_table(run_dir: str | Path = DEFAULT_RUN_DIR) -> dict[str, dict[int, str]]:
    """The bucket -> instance table of each direction (``forward``: fwc-lb, ``reverse``: fwc-rt)."""
    try:
        return driver_for(require_state(run_dir)).direction_tables()
    except SteeringError as e:
        raise TestbedError(str(e)) from None


def steer_buckets(
    mapping: dict[int, str], direction: Direction = "both", run_dir: str | Path = DEFAULT_RUN_DIR
) -> None:
    """Map the given buckets to the given instances in ``direction``; no other bucket moves."""
    run = Path(run_dir).absolute()
    _steer_check(require_state(run), list(mapping.values()), mapping)
    _steer(run, lambda d: d.assign(mapping, direction))


def steer_move(
    from_id: str, to_ids: Sequence[str], direction: Direction = "both", run_dir: str | Path = DEFAULT_RUN_DIR
) -> dict[str, dict[int, str]]:
    """Spread every bucket of ``from_id`` round-robin over ``to_ids`` (per direction); the moves made."""
    run = Path(run_dir).absolute()
    if not to_ids:
        raise TestbedError("the target list is empty")
    _steer_check(require_state(run), [from_id, *to_ids])
    return _steer(run, lambda d: d.move(from_id, to_ids, direction))


def steer_spread(
    instance_ids: Sequence[str] | None = None,
    direction: Direction = "both",
    run_dir: str | Path = DEFAULT_RUN_DIR,
) -> dict[int, str]:
    """Spread every bucket round-robin over ``instance_ids`` (default: every instance) again."""
    run = Path(run_dir).absolute()
    state = require_state(run)
    ids = [i.id for i in state.instances] if instance_ids is None else list(instance_ids)
    if not ids:
        raise TestbedError("the target list is empty")
    _steer_check(state, ids)
    return _steer(run, lambda d: d.spread(ids, direction))


__all__ = [
    "DEFAULT_RUN_DIR",
    "FilterMode",
    "InstanceState",
    "TestbedError",
    "TestbedState",
    "current_mode",
    "down",
    "is_up",
    "load_state",
    "netns_exec",
    "require_state",
    "restart_instance",
    "set_filter_mode",
    "set_mode",
    "steer_buckets",
    "steer_move",
    "steer_spread",
    "steer_table",
    "steering_driver",
    "store_client_argv",
    "store_password",
    "store_ping",
    "store_start",
    "store_stop",
    "up",
]
