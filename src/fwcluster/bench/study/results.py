"""What one measurement of ``fwcluster bench study`` is: a configuration (a baseline or a sync
setting at a cluster size and a load) and one run of it, with the names every output uses."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from fwcluster.statetable.settings import Access, Confirm, Follow, SyncLevel

SCHEMA = "fwcluster-study/1"
DIRECT = "direct"  # plain forwarding in the instance namespaces: the floor
KERNEL = "kernel"  # the kernel's own stateful firewall (nftables + conntrack) in the same place
BASELINES = (DIRECT, KERNEL)
BASE_INSTANCES = 3  # the study's cluster size; every comparison is made here
STUDY_LOADS = (25, 100)  # the study's load levels: goals are stated at these
FULL_CLEAN_SYNC = "full/clean/sync"  # the consistency end
PERFORMANCE = "established/dirty/async"  # the performance end that still shares state
STATS = ("p50", "p90", "p99", "mean", "sd")
# ``[sync] follow``: the default (``backup``, the instance's backup alone follows its changes) is
# unnamed; the seed's design (``all``: every instance follows every change) is named ``+all``.
FOLLOW_DEFAULT = Follow.BACKUP.value
FOLLOWS = tuple(f.value for f in Follow)


def setting_name(level: str, access: str, confirm: str, follow: str | None = None) -> str:
    """``full/clean/sync`` (follow = backup, or level none: it follows nothing), or
    ``full/clean/sync+all`` (the seed's design)."""
    name = f"{level}/{access}/{confirm}"
    return name if follow in (None, FOLLOW_DEFAULT) or level == SyncLevel.NONE else f"{name}+{follow}"


SETTINGS = tuple(setting_name(lv, ac, co) for lv, ac, co in itertools.product(SyncLevel, Access, Confirm))
_SEED = tuple(
    setting_name(lv, ac, co, Follow.ALL.value)
    for lv, ac, co in itertools.product(SyncLevel, Access, Confirm)
    if lv != SyncLevel.NONE
)
ORDER = {name: i for i, name in enumerate(BASELINES + SETTINGS + _SEED)}


@dataclass(frozen=True)
class Configuration:
    """One measured point: a baseline or a sync setting, at a cluster size and a load."""

    name: str  # "direct", "kernel", or "<level>/<access>/<confirm>" e.g. "full/clean/sync"
    instances: int  # firewall instances (3, 6 or 9); baselines carry their topology's count (3)
    load: int  # concurrent connections (25 or 100)
    level: str | None  # None for baselines
    access: str | None
    confirm: str | None
    follow: str | None = None  # [sync] follow (None for baselines and level none)

    @property
    def key(self) -> str:
        """Unique across a study, e.g. "full/clean/sync@3x100"; names CSV rows and plot entries."""
        return f"{self.name}@{self.instances}x{self.load}"

    @classmethod
    def setting(
        cls, level: str, access: str, confirm: str, *, instances: int, load: int, follow: str = FOLLOW_DEFAULT
    ) -> Configuration:
        """A sync setting, named consistently with its knobs."""
        kept = None if level == SyncLevel.NONE else follow
        return cls(setting_name(level, access, confirm, kept), instances, load, level, access, confirm, kept)

    @classmethod
    def baseline(cls, name: str, *, instances: int = BASE_INSTANCES, load: int) -> Configuration:
        """``direct`` or ``kernel``: no knobs, hence level/access/confirm None."""
        if name not in BASELINES:
            raise ValueError(f"{name!r} is not a baseline ({', '.join(BASELINES)})")
        return cls(name, instances, load, None, None, None)


@dataclass
class Run:
    """One run (round) of one configuration, as the runner measured it."""

    configuration: Configuration
    run: int  # 0-based run index (round)
    started: float  # unix time
    connect_us: list[int]  # per successful connection: connect() to established, µs
    total_us: list[int]  # per successful connection: full download time, µs (same order/length)
    failed: int
    completed: int
    connections_per_second: float
    feed_applied: int | None = None  # feed records the instances applied during the run (summed)


def group_runs(runs: Iterable[Run]) -> dict[Configuration, list[Run]]:
    """Runs per configuration, configurations in report order, runs by index."""
    for r in runs:
        if len(r.connect_us) != len(r.total_us):
            raise ValueError(f"{r.configuration.key} run {r.run}: connect_us and total_us differ in length")
    groups: dict[Configuration, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.configuration, []).append(r)
    return {c: sorted(groups[c], key=lambda r: r.run) for c in sorted(groups, key=report_order)}


def report_order(c: Configuration) -> tuple[int, int, int, str]:
    return (c.load, c.instances, ORDER.get(c.name, len(ORDER)), c.name)


def connects(runs: Iterable[Run]) -> list[int]:
    return [us for r in runs for us in r.connect_us]
