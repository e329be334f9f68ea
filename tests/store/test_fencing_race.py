"""The epoch gate under a race: a deposed leader's write that passed the gate must not land after
the new leader's write. The check and the write happen under one lock, so the new leader is
admitted only once the old write is done, and every later write of the old epoch is refused; a
write whose lease ran out (before the gate, or while it waited for it) is not made.

Two writers in one process share the gate file, as two masters share it on one host (flock locks
belong to an open file, not to a process). Steering is the in-memory driver."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fwcluster.steering.fencing import EpochGate, FencedDriver, LeaseExpiredError, StaleEpochError

from .steering_memory import MemoryDriver


def test_a_stale_write_that_passed_the_gate_cannot_land_after_the_new_leaders_write(tmp_path: Path) -> None:
    driver = MemoryDriver(["fw1", "fw2"])
    gate_file = tmp_path / "steering.epoch"
    old = FencedDriver(driver, EpochGate(gate_file))  # leader with epoch 1
    new = FencedDriver(driver, EpochGate(gate_file))  # the leader that took over with epoch 2
    old.gate.admit(1)
    driver.delay = 0.5  # the old leader's write is slow (a paused process, a slow kernel)
    failures: list[BaseException] = []

    def old_write() -> None:
        try:
            old.assign({0: "fw1"}, 1)
        except BaseException as e:
            failures.append(e)

    t = threading.Thread(target=old_write)
    t.start()
    assert driver.entered.wait(5)  # the old write passed the gate and is under way
    driver.delay = 0.0
    new.gate.admit(2)  # the new leader registers its epoch ...
    new.assign({0: "fw2"}, 2)  # ... and writes
    t.join(5)
    assert not failures
    # The order the writes landed in: the old one first, the new one last (without the lock held
    # across the write, the old one landed last and undid the new leader's move).
    assert [m for d, m in driver.writes if d == "forward"] == [{0: "fw1"}, {0: "fw2"}]
    assert driver.table("forward") == {0: "fw2"}
    with pytest.raises(StaleEpochError):
        old.assign({0: "fw1"}, 1)  # from now on the old epoch is refused
    assert driver.table("forward") == {0: "fw2"}


def test_a_write_whose_lease_ran_out_is_not_made(tmp_path: Path) -> None:
    driver = MemoryDriver(["fw1", "fw2"])
    fenced = FencedDriver(driver, EpochGate(tmp_path / "steering.epoch"))
    with pytest.raises(LeaseExpiredError):
        fenced.assign({0: "fw1"}, 1, deadline=time.monotonic() - 0.001)
    with pytest.raises(LeaseExpiredError):
        fenced.move("fw1", ["fw2"], 1, deadline=time.monotonic() - 0.001)
    assert driver.writes == []


def test_a_write_that_waits_for_the_gate_past_its_lease_is_not_made(tmp_path: Path) -> None:
    driver = MemoryDriver(["fw1", "fw2"])
    gate_file = tmp_path / "steering.epoch"
    slow = FencedDriver(driver, EpochGate(gate_file))
    other = FencedDriver(driver, EpochGate(gate_file))
    driver.delay = 0.5
    t = threading.Thread(target=slow.assign, args=({0: "fw1"}, 3))
    t.start()
    assert driver.entered.wait(5)
    with pytest.raises(LeaseExpiredError):
        other.assign({0: "fw2"}, 3, deadline=time.monotonic() + 0.1)  # the gate is held longer
    t.join(5)
    assert [m for d, m in driver.writes if d == "forward"] == [{0: "fw1"}]
