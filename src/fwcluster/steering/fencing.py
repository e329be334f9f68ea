"""Fencing: a steering write carries the writer's leader epoch, and a write with an older epoch
than one already seen is refused.

The gate is a small file beside the testbed's state: the highest epoch that ever wrote. A writer
takes its flock, checks its epoch against the file, and keeps the lock until its write is done
(:meth:`EpochGate.holding`): the check and the write are one step, so a new leader's epoch cannot
be admitted between a deposed leader's check and its write, and a stale write can never land after
a newer one. A master deposed while it was busy (paused, cut off) still holds its old epoch; once
the new leader has been admitted with a higher one, every write of the old leader is refused.

A write also carries a deadline (the end of the writer's lease, ``time.monotonic()``): a writer
whose lease ran out, before the gate or while it waited for the lock, does not write, and the
commands of a write started in time are cut off at the deadline (steering/netns.py ``bounded``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from fwcluster.filelock import flock_until
from fwcluster.steering.base import Direction, SteeringDriver, SteeringError
from fwcluster.steering.netns import bounded

LOCK_POLL = 0.002  # seconds between tries for the gate's lock while a deadline runs


class StaleEpochError(SteeringError):
    """A steering write with an epoch older than the newest one seen."""


class LeaseExpiredError(SteeringError):
    """A steering write whose writer's lease ran out before it could be made."""


class EpochGate:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def holding(self, epoch: int, deadline: float | None = None) -> Iterator[None]:
        """Hold the gate for one write: lock, refuse a stale epoch (StaleEpochError) or a passed
        deadline (LeaseExpiredError), remember the epoch, and keep the lock for the ``with`` block."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock(fd, deadline)
            raw = os.read(fd, 64).strip()
            newest = int(raw) if raw.isdigit() else 0
            if epoch < newest:
                raise StaleEpochError(
                    f"steering write with epoch {epoch} refused: epoch {newest} has written"
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise LeaseExpiredError(f"steering write with epoch {epoch} refused: its lease ran out")
            if epoch > newest:
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                os.write(fd, str(epoch).encode())
                os.fsync(fd)
            yield
        finally:
            os.close(fd)  # releases the lock

    def admit(self, epoch: int, deadline: float | None = None) -> None:
        """Raise StaleEpochError unless ``epoch`` is at least the newest seen; remember it."""
        with self.holding(epoch, deadline):
            pass

    def newest(self) -> int:
        try:
            raw = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        return int(raw) if raw.isdigit() else 0


def _lock(fd: int, deadline: float | None) -> None:
    if not flock_until(fd, deadline, LOCK_POLL):
        raise LeaseExpiredError(
            "steering write refused: the gate stayed locked until the writer's lease ran out"
        )


class FencedDriver:
    """A steering driver whose writes happen inside the epoch gate, bounded by the lease."""

    def __init__(self, driver: SteeringDriver, gate: EpochGate) -> None:
        self.driver = driver
        self.gate = gate

    def assign(
        self,
        mapping: Mapping[int, str],
        epoch: int,
        direction: Direction = "both",
        deadline: float | None = None,
    ) -> None:
        with self.gate.holding(epoch, deadline), bounded(deadline):
            self.driver.assign(mapping, direction)

    def move(
        self,
        from_id: str,
        to_ids: Sequence[str],
        epoch: int,
        direction: Direction = "both",
        deadline: float | None = None,
    ) -> dict[str, dict[int, str]]:
        with self.gate.holding(epoch, deadline), bounded(deadline):
            return self.driver.move(from_id, to_ids, direction)
