"""The three run-time synchronization knobs of the shared state table."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SyncLevel(StrEnum):
    """Which state transitions reach the store."""

    NONE = "none"  # nothing is published
    ESTABLISHED = "established"  # only into ESTABLISHED and into closing/removal
    FULL = "full"  # every transition


class Access(StrEnum):
    """How a write reaches the store."""

    DIRTY = "dirty"  # blind write, last writer wins
    CLEAN = "clean"  # atomic conditional update: no lost update, never backwards


class Confirm(StrEnum):
    """When the verdict is given relative to the store write."""

    ASYNC = "async"  # verdict now, write in the background
    SYNC = "sync"  # hold the packet until the store confirms


class Follow(StrEnum):
    """Whose changes an instance applies from the store's feeds (docs/architecture.md)."""

    BACKUP = "backup"  # only those of the instance it backs up (a ring; a standby: all active)
    ALL = "all"  # every other instance's (the seed's design: one feed, everybody follows it)


@dataclass(frozen=True, slots=True)
class SyncSettings:
    level: SyncLevel = SyncLevel.ESTABLISHED
    access: Access = Access.DIRTY
    confirm: Confirm = Confirm.ASYNC
    follow: Follow = Follow.BACKUP

    def as_dict(self) -> dict[str, str]:
        return {
            "level": self.level.value,
            "access": self.access.value,
            "confirm": self.confirm.value,
            "follow": self.follow.value,
        }
