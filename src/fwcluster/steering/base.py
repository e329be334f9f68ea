"""What every steering driver offers: a table of buckets, each bucket mapped to one instance.

A flow hashes to a bucket; the load balancer sends the bucket's flows to the instance the bucket
is mapped to. A bucket mapped to nothing drops its flows (fail closed). Drivers read the table
back from the kernel, so what they report is what the data plane does.

The layering rule: steering knows namespaces, interfaces, next hops and marks, never the testbed
that made them; the testbed describes its topology with :class:`Balancer` and :class:`Target`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar


class SteeringError(RuntimeError):
    """Steering cannot be programmed or read; the message is one line."""


@dataclass(frozen=True, slots=True)
class Balancer:
    """A load-balancer namespace and the interface whose incoming traffic it steers."""

    netns: str
    ingress: str


@dataclass(frozen=True, slots=True)
class NextHop:
    """How a balancer reaches one instance: the link and the instance's address on it."""

    dev: str
    via4: str
    via6: str


@dataclass(frozen=True, slots=True)
class Target:
    """One instance as steering sees it.

    ``mark`` is the packet mark a balancer gives the instance's flows and ``table`` the policy
    routing table that sends marked packets on; ``hops`` names the next hop per balancer netns.
    """

    id: str
    mark: int
    table: int
    hops: tuple[tuple[str, NextHop], ...]

    def hop(self, netns: str) -> NextHop:
        for name, hop in self.hops:
            if name == netns:
                return hop
        raise SteeringError(f"instance {self.id} has no next hop in {netns}")


class SteeringDriver(ABC):
    """Programs the load balancers' bucket -> instance table."""

    kind: ClassVar[str]

    def __init__(self, balancers: Sequence[Balancer], buckets: int, targets: Iterable[Target] = ()) -> None:
        if not balancers:
            raise SteeringError("a steering driver needs at least one balancer")
        if buckets < 1:
            raise SteeringError(f"buckets must be >= 1, not {buckets}")
        self.balancers: tuple[Balancer, ...] = tuple(balancers)
        self.buckets = buckets
        self._targets: dict[str, Target] = {}
        for t in targets:
            self._remember(t)

    # --- the instances it knows ---------------------------------------------------------------

    @property
    def targets(self) -> dict[str, Target]:
        """The instances this driver can steer to, by id."""
        return dict(self._targets)

    def _remember(self, target: Target) -> None:
        for other in self._targets.values():
            if other.id != target.id and (other.mark == target.mark or other.table == target.table):
                raise SteeringError(f"instances {other.id} and {target.id} share a mark or a routing table")
        self._targets[target.id] = target

    def _target(self, instance_id: str) -> Target:
        try:
            return self._targets[instance_id]
        except KeyError:
            known = ", ".join(sorted(self._targets)) or "none"
            raise SteeringError(f"unknown instance {instance_id!r} (known: {known})") from None

    def _check_bucket(self, bucket: int) -> None:
        if isinstance(bucket, bool) or not isinstance(bucket, int) or not 0 <= bucket < self.buckets:
            raise SteeringError(f"bucket {bucket!r} is out of range 0..{self.buckets - 1}")

    # --- what drivers implement ---------------------------------------------------------------

    @abstractmethod
    def install(self, targets: Iterable[Target]) -> None:
        """Program the balancers from scratch for ``targets``; every bucket starts unassigned."""

    @abstractmethod
    def uninstall(self) -> None:
        """Remove everything the driver programmed (idempotent)."""

    @abstractmethod
    def add_target(self, target: Target) -> None:
        """Make one more instance reachable (no bucket moves to it yet)."""

    @abstractmethod
    def remove_target(self, instance_id: str) -> None:
        """Forget an instance; fails while a bucket is still mapped to it."""

    @abstractmethod
    def assign(self, mapping: Mapping[int, str]) -> None:
        """Map the given buckets to the given instances; no other bucket moves."""

    @abstractmethod
    def unassign(self, buckets: Iterable[int]) -> None:
        """Map the given buckets to nothing (their flows are dropped)."""

    @abstractmethod
    def table(self) -> dict[int, str]:
        """The bucket -> instance id table as the kernel holds it (unassigned buckets are absent)."""

    @abstractmethod
    def tables(self) -> dict[str, dict[int, str]]:
        """The table of every balancer namespace (they agree unless a change is half applied)."""

    # --- built on the above -------------------------------------------------------------------

    def spread(self, instance_ids: Sequence[str]) -> dict[int, str]:
        """Assign every bucket round-robin over ``instance_ids`` and return the mapping."""
        if not instance_ids:
            raise SteeringError("spread needs at least one instance")
        for i in instance_ids:
            self._target(i)
        mapping = {b: instance_ids[b % len(instance_ids)] for b in range(self.buckets)}
        self.assign(mapping)
        return mapping

    def buckets_of(self, instance_id: str) -> list[int]:
        """The buckets currently mapped to ``instance_id`` (read from the kernel)."""
        return sorted(b for b, i in self.table().items() if i == instance_id)
