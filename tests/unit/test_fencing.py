"""Fencing: a steering write with an epoch older than one that already wrote is refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fwcluster.steering import Balancer, NextHop, Target, make_driver
from fwcluster.steering.fencing import EpochGate, FencedDriver, StaleEpochError
from fwcluster.steering.netns import CommandError, bounded, run_in
from fwcluster.steering.spec import driver_from_spec, dump_spec


def test_gate_admits_the_newest_epoch_and_refuses_older_ones(tmp_path: Path) -> None:
    gate = EpochGate(tmp_path / "steering.epoch")
    assert gate.newest() == 0
    gate.admit(1)
    gate.admit(1)  # the same leader writes again
    gate.admit(3)  # a new leader
    with pytest.raises(StaleEpochError, match="epoch 1 refused: epoch 3 has written"):
        gate.admit(1)  # the deposed leader wakes up
    assert gate.newest() == 3
    assert EpochGate(tmp_path / "steering.epoch").newest() == 3  # it lives in the file


def _driver() -> tuple[object, list[Target]]:
    hop = NextHop(dev="fw1", via4="198.18.1.2", via6="2001:2:0:101::2")
    targets = [Target(id=f"fw{k}", mark=0x100 + k, table=100 + k, hops=(("fwc-lb", hop),)) for k in (1, 2)]
    return make_driver("symmetric", [Balancer("fwc-lb", "client")], 8, targets), targets


def test_a_stale_write_is_refused_before_the_driver_is_touched(tmp_path: Path) -> None:
    driver, _ = _driver()
    gate = EpochGate(tmp_path / "steering.epoch")
    gate.admit(5)
    fenced = FencedDriver(driver, gate)  # type: ignore[arg-type]
    # No namespace exists here: had the gate let the write through, the driver would fail
    # differently (it would try to run nft in fwc-lb).
    with pytest.raises(StaleEpochError):
        fenced.move("fw1", ["fw2"], epoch=4)
    with pytest.raises(StaleEpochError):
        fenced.assign({0: "fw2"}, epoch=2)


def test_steering_spec_round_trips() -> None:
    _, targets = _driver()
    spec = dump_spec("symmetric", [Balancer("fwc-lb", "client")], 8, targets)
    again = driver_from_spec(spec)
    assert again.kind == "symmetric"
    assert sorted(again.targets) == ["fw1", "fw2"]


def test_a_command_after_the_writers_deadline_is_not_run() -> None:
    with bounded(time.monotonic() - 0.001), pytest.raises(CommandError, match="deadline passed"):
        run_in("fwc-nowhere", ["true"])  # refused before anything runs (no namespace needed)
