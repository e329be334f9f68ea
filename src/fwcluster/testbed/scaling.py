"""Scale the testbed at run time: add instances (they join from the store, then take a fair share
of buckets, and only that share moves) or remove them (their buckets move away first, then they
stop)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from fwcluster.steering import SteeringDriver
from fwcluster.testbed import addressing as a
from fwcluster.testbed import instances as inst_proc
from fwcluster.testbed import masters as master_proc
from fwcluster.testbed import store, topology
from fwcluster.testbed.balancers import driver_for, target
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.filtering import FilterMode, install_guard, set_filter_mode
from fwcluster.testbed.processes import alive, terminate
from fwcluster.testbed.state import InstanceState, TestbedState


def fair_share_moves(table: dict[int, str], members: Sequence[str]) -> dict[int, str]:
    """The fewest bucket moves that leave every member with B // n or B // n + 1 buckets.

    Buckets are taken only from members above their quota (or from owners that are not members)
    and given only to members below it; every other bucket stays where it is."""
    n = len(members)
    if n == 0:
        raise TestbedError("no instance left to carry traffic")
    buckets = sorted(table)
    base, extra = divmod(len(buckets), n)
    count = {m: 0 for m in members}
    for owner in table.values():
        if owner in count:
            count[owner] += 1
    # Members that already hold more keep the "+1" quotas, so fewer buckets move.
    by_load = sorted(members, key=lambda m: -count[m])
    quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_load)}
    give = [b for b in buckets if table[b] not in quota]  # owners that are leaving
    held = {m: [b for b in buckets if table[b] == m] for m in members}
    for m in by_load:
        surplus = count[m] - quota[m]
        if surplus > 0:
            give.extend(held[m][-surplus:])
    moves: dict[int, str] = {}
    for m in members:
        for _ in range(max(0, quota[m] - count[m])):
            moves[give.pop(0)] = m
    return moves


def rebalance(driver: SteeringDriver, members: Sequence[str]) -> dict[str, dict[int, str]]:
    """Apply fair_share_moves in every direction; returns the moves made."""
    moved: dict[str, dict[int, str]] = {}
    for direction in driver.directions():
        moves = fair_share_moves(driver.table(direction), members)
        if moves:
            driver.assign(moves, direction)
        moved[direction] = moves
    return moved


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


def scale_out(
    state: TestbedState, count: int, config_path: Path, record: type[InstanceState] | None = None
) -> dict[str, dict[int, str]]:
    """Add ``count`` instances: namespace, links, fail-closed filter, steering target, process;
    once each is ready (joined), move a fair share of buckets to the new ones."""
    from fwcluster.config import load_config
    from fwcluster.testbed.api import instance_record

    config = load_config(config_path)
    run = Path(state.run_dir)
    first = max((i.index for i in state.instances), default=0) + 1
    if first + count - 1 > a.MAX_INSTANCES:
        raise TestbedError(f"at most {a.MAX_INSTANCES} instances in the testbed")
    new = [instance_record(k, run) for k in range(first, first + count)]
    members = active(state)
    driver = driver_for(state)
    for rec in new:
        topology.add_instance(rec.index)
        install_guard(rec.netns, a.IF_MGMT)
        set_filter_mode(rec.netns, FilterMode.FWCLUSTER, config, rec.queue)
        driver.add_target(target(rec.index))
        state.instances.append(rec)
        rec.pid = inst_proc.spawn(rec, config_path, run, state.store_url)
    inst_proc.wait_ready(new)  # each has loaded the table (snapshot + feed) before it is ready
    if state.masters:
        master_proc.write_steering_spec(state)
    return rebalance(driver_for(state), [i.id for i in members + new])


def scale_in(state: TestbedState, count: int) -> dict[str, dict[int, str]]:
    """Remove the ``count`` newest active instances: their buckets move to the others first."""
    members = active(state)
    leaving = sorted(members, key=lambda i: i.index)[-count:]
    staying = [i.id for i in members if i not in leaving]
    if not staying:
        raise TestbedError("scaling below one active instance is not possible")
    driver = driver_for(state)
    # Masters stop watching them first, so leaving is not mistaken for failing.
    if state.store_conf:
        argv = store.cli_argv(store.password_of(Path(state.store_conf)))
        subprocess.run(
            [*argv, "SREM", "fwc:instances", *[i.id for i in leaving]],
            capture_output=True,
            check=False,
            timeout=10,
        )
    moved: dict[str, dict[int, str]] = {}
    for direction in driver.directions():
        moves = fair_share_moves(driver.table(direction), staying)
        if moves:
            driver.assign(moves, direction)
        moved[direction] = moves
    for rec in leaving:
        if rec.pid is not None and alive(rec.pid):
            terminate([rec.pid])
        driver.remove_target(rec.id)
        topology.remove_netns(rec.netns)
        state.instances.remove(rec)
    if state.masters:
        master_proc.write_steering_spec(state)
    return moved
