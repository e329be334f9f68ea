"""Bring the testbed up: namespaces, links, fail-closed filters, steering, nginx, the store, the
instances, the provisioning agent and the masters (in that order)."""

from __future__ import annotations

import time
from pathlib import Path

from fwcluster.config import Config, StoreBackend, StoreHa
from fwcluster.steering import SteeringDriver, SteeringError, make_driver
from fwcluster.storeurl import is_sentinel_url, with_sentinels
from fwcluster.testbed import addressing as a
from fwcluster.testbed import instances as inst_proc
from fwcluster.testbed import masters as master_proc
from fwcluster.testbed import provision, rundir, sentinel, store, topology
from fwcluster.testbed.balancers import balancers, target
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.filtering import (
    FilterMode,
    each_instance,
    install_guard,
    parse_mode,
    set_filter_mode,
    switch_modes,
)
from fwcluster.testbed.lock import locked
from fwcluster.testbed.server import start_nginx
from fwcluster.testbed.state import DEFAULT_RUN_DIR, InstanceState, TestbedState, save_state, state_path
from fwcluster.testbed.teardown import teardown


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
    config = rundir.load_testbed_config(config_path)
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
    with locked(run):
        if state_path(run).exists() or topology.existing_netns():
            raise TestbedError("the testbed is already up (run `fwcluster testbed down` first)")
        try:
            return _build(
                instances + config.cluster.standby, config_path, config, start_instances, run, final_mode
            )
        except BaseException as e:
            teardown(run, keep_logs=True)
            if isinstance(e, TestbedError) or not isinstance(e, Exception):
                raise
            message = " ".join(str(e).split()) or type(e).__name__
            raise TestbedError(f"testbed up failed: {message}") from e


def _build(
    n: int,
    config_path: str | Path | None,
    config: Config,
    start_instances: bool,
    run: Path,
    final_mode: FilterMode,
) -> TestbedState:
    config_file = rundir.prepare(run, config_path)
    topology.build(n)
    records = [inst_proc.instance_record(k, run) for k in range(1, n + 1)]
    for rec in records[n - config.cluster.standby :]:
        rec.role = "standby"

    # Fail closed before anything can be steered: the queue has no reader yet.
    def fail_closed(rec: InstanceState) -> None:
        install_guard(rec.netns, a.IF_MGMT)
        set_filter_mode(rec.netns, FilterMode.FWCLUSTER, config, rec.queue)

    each_instance(records, fail_closed)
    driver = driver_for_config(config)
    driver.install([target(k) for k in range(1, n + 1)])
    driver.spread([r.id for r in records if r.role == "active"])
    nginx_pid, docroot, sums = start_nginx(run, rundir.www_dir(run))
    store_url, store_conf = config.store.url, ""
    ha = config.store.ha is StoreHa.SENTINEL
    if config.store.backend is StoreBackend.REDIS and not store_url:
        store_conf = str(store.write_conf(run, store.new_password(), config.store.maxmemory_mb, ha))
        store_url = store.store_url(store.password_of(Path(store_conf)), ha=ha)
    else:
        ha = is_sentinel_url(with_sentinels(store_url, config.store.sentinels, config.store.service))
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
        store_ha="sentinel" if ha and config.store.backend is StoreBackend.REDIS else "none",
        store_nodes=sentinel.node_states() if ha and store_conf else [],
    )
    save_state(state)  # from here on, down() finds every process by its record too
    if store_conf and state.store_nodes:
        try:
            sentinel.start_stopped(run, state.store_nodes)
        finally:
            save_state(state)  # every node started is recorded, also when one failed
        state.store_pid = state.store_nodes[0].pid
        save_state(state)
    elif store_conf:
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
        switch_modes(records, final_mode, config)
        save_state(state)
    return state


def driver_for_config(config: Config) -> SteeringDriver:
    """A steering driver for the configured kind and bucket count, knowing no instance yet."""
    return make_driver(str(config.steering.kind), balancers(), config.steering.buckets)
