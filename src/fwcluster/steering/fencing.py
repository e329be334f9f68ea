"""Fencing: a steering write carries the writer's leader epoch, and a write with an older epoch
than one already seen is refused.

The gate is a small file beside the testbed's state, locked with flock around each check: the
highest epoch that ever wrote. A master deposed while it was busy (paused, cut off) still holds
its old epoch; once the new leader has written with a higher one, every write of the old leader
is refused, so two masters can never take turns programming the balancers.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from fwcluster.steering.base import Direction, SteeringDriver, SteeringError


class StaleEpochError(SteeringError):
    """A steering write with an epoch older than the newest one seen."""


class EpochGate:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def admit(self, epoch: int) -> None:
        """Raise StaleEpochError unless ``epoch`` is at least the newest seen; remember it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 64).strip()
            newest = int(raw) if raw.isdigit() else 0
            if epoch < newest:
                raise StaleEpochError(
                    f"steering write with epoch {epoch} refused: epoch {newest} has written"
                )
            if epoch > newest:
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                os.write(fd, str(epoch).encode())
                os.fsync(fd)
        finally:
            os.close(fd)

    def newest(self) -> int:
        try:
            raw = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        return int(raw) if raw.isdigit() else 0


class FencedDriver:
    """A steering driver whose writes pass the epoch gate first."""

    def __init__(self, driver: SteeringDriver, gate: EpochGate) -> None:
        self.driver = driver
        self.gate = gate

    def assign(self, mapping: Mapping[int, str], epoch: int, direction: Direction = "both") -> None:
        self.gate.admit(epoch)
        self.driver.assign(mapping, direction)

    def move(
        self, from_id: str, to_ids: Sequence[str], epoch: int, direction: Direction = "both"
    ) -> dict[str, dict[int, str]]:
        self.gate.admit(epoch)
        return self.driver.move(from_id, to_ids, direction)
