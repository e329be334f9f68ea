"""Scale the testbed at run time: add instances (they join from the store, then take a fair share
of buckets, and only that share moves) or remove them (their buckets move away first, then they
stop: an instance that carries no bucket deregisters itself on its clean stop, so a master
watching it reports it gone, with no failover)."""

from __future__ import annotations

import time
from pathlib import Path

from fwcluster.config import load_config
from fwcluster.steering.balance import rebalance
from fwcluster.testbed import addressing as a
from fwcluster.testbed import instances as inst_proc
from fwcluster.testbed import masters as master_proc
from fwcluster.testbed import store, topology
from fwcluster.testbed.balancers import driver_for, target
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.filtering import FilterMode, install_guard, set_filter_mode
from fwcluster.testbed.processes import alive, terminate
from fwcluster.testbed.rundir import store_url_file
from fwcluster.testbed.state import InstanceState, TestbedState


def active(state: TestbedState) -> list[InstanceState]:
    """The instances that carry traffic now, as the kernel and the processes say: alive, and
    active or holding buckets (a standby a master failed over to). The record's role is brought
    up to date: a dead instance is "failed", a standby that took buckets is "active"."""
    owners = set(driver_for(state).table("forward").values())
    out = []
    for inst in state.instances:
        running = inst.pid is not None and alive(inst.pid)
        if not running and inst.role != "failed" and (inst.role == "active" or inst.id in owners):
            inst.role = "failed"
        elif running and inst.role == "standby" and inst.id in owners:
            inst.role = "active"
        if running and inst.role == "active":
            out.append(inst)
    return out


def add_instances(
    state: TestbedState,
    count: int,
    config_path: Path,
    timings: dict[str, float] | None = None,
    role: str = "active",
) -> list[InstanceState]:
    """Add ``count`` instances: namespace, links, fail-closed filter, steering target (no bucket),
    process; returns once each is ready, that is, has loaded the table (snapshot + feed)."""

    config = load_config(config_path)
    run = Path(state.run_dir)
    first = max((i.index for i in state.instances), default=0) + 1
    if first + count - 1 > a.MAX_INSTANCES:
        raise TestbedError(f"at most {a.MAX_INSTANCES} instances in the testbed")
    new = [inst_proc.instance_record(k, run) for k in range(first, first + count)]
    for rec in new:
        rec.role = role  # "standby": ready, no bucket, first in line (the spec says so to masters)
    driver = driver_for(state)
    t0 = time.monotonic()
    for rec in new:
        topology.add_instance(rec.index)
        install_guard(rec.netns, a.IF_MGMT)
        set_filter_mode(rec.netns, FilterMode.FWCLUSTER, config, rec.queue)
        driver.add_target(target(rec.index))
        state.instances.append(rec)
        rec.pid = inst_proc.spawn(rec, config_path, run, state.store_url)
    t1 = time.monotonic()
    inst_proc.wait_ready(new)
    if timings is not None:  # building (namespaces, links, filters, targets) vs starting + joining
        timings.update(build_ms=round((t1 - t0) * 1000, 1), join_ms=round((time.monotonic() - t1) * 1000, 1))
    if state.masters:
        master_proc.write_steering_spec(state)
    return new


def remove_instances(state: TestbedState, ids: list[str]) -> list[str]:
    """Stop and remove instances that carry no bucket any more (the caller moved them away first:
    a bucket still mapped to a removed instance would drop its flows). Returns the ids removed."""
    unknown = [i for i in ids if i not in {r.id for r in state.instances}]
    if unknown:
        raise TestbedError(f"unknown instance {', '.join(unknown)}")
    driver = driver_for(state)
    holding = [i for i in ids for d in driver.directions() if driver.buckets_of(i, d)]
    if holding:
        raise TestbedError(f"instance {holding[0]} still carries buckets: move them away first")
    run = Path(state.run_dir)
    for rec in [r for r in state.instances if r.id in ids]:
        if rec.pid is not None and alive(rec.pid):
            terminate([rec.pid])
        driver.remove_target(rec.id)
        topology.remove_netns(rec.netns)
        state.instances.remove(rec)
        if store.owns(run):  # its store user goes with it: those credentials open nothing now
            store.remove_instance_user(run, rec.id)
        store_url_file(run, rec.id).unlink(missing_ok=True)
    if state.masters:
        master_proc.write_steering_spec(state)
    return ids


def scale_out(state: TestbedState, count: int, config_path: Path) -> dict[str, dict[int, str]]:
    """Add ``count`` instances; once each is ready, move a fair share of buckets to the new ones."""
    members = active(state)
    new = add_instances(state, count, config_path)
    return rebalance(driver_for(state), [i.id for i in members + new])


def scale_in(state: TestbedState, count: int) -> dict[str, dict[int, str]]:
    """Remove the ``count`` newest active instances: their buckets move to the others first."""
    members = active(state)
    leaving = sorted(members, key=lambda i: i.index)[-count:]
    staying = [i.id for i in members if i not in leaving]
    if not staying:
        raise TestbedError("scaling below one active instance is not possible")
    moved = rebalance(driver_for(state), staying)
    remove_instances(state, [i.id for i in leaving])
    return moved
