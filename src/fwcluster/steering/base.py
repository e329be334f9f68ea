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
from typing import ClassVar, Literal, get_args

# Which balancers a change applies to: ``forward`` steers what the client sends (fwc-lb),
# ``reverse`` what the server sends (fwc-rt), ``both`` every balancer.
Direction = Literal["forward", "reverse", "both"]
OneWay = Literal["forward", "reverse"]
DIRECTIONS: tuple[str, ...] = get_args(Direction)
ONE_WAY: tuple[OneWay, ...] = ("forward", "reverse")


class SteeringError(RuntimeError):
    """Steering cannot be programmed or read; the message is one line."""


@dataclass(frozen=True, slots=True)
class Balancer:
    """A load-balancer namespace, the interface whose incoming traffic it steers, and its direction."""

    netns: str
    ingress: str
    direction: str = "forward"  # "forward" (client -> server) or "reverse" (server -> client)


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
        for b in balancers:
            if b.direction not in ONE_WAY:
                raise SteeringError(
                    f"balancer {b.netns}: direction {b.direction!r} is not forward or reverse"
                )
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

    def _selected(self, direction: str) -> tuple[Balancer, ...]:
        """The balancers a change in ``direction`` applies to (SteeringError if there are none)."""
        if direction not in DIRECTIONS:
            raise SteeringError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
        chosen = tuple(b for b in self.balancers if direction in ("both", b.direction))
        if not chosen:
            raise SteeringError(f"no balancer steers the {direction} direction")
        return chosen

    def directions(self) -> tuple[OneWay, ...]:
        """The directions this driver's balancers steer, forward first."""
        return tuple(d for d in ONE_WAY if any(b.direction == d for b in self.balancers))

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
    def assign(self, mapping: Mapping[int, str], direction: Direction = "both") -> None:
        """Map the given buckets to the given instances in ``direction``; no other bucket moves."""

    @abstractmethod
    def unassign(self, buckets: Iterable[int], direction: Direction = "both") -> None:
        """Map the given buckets to nothing in ``direction`` (their flows are dropped)."""

    @abstractmethod
    def table(self, direction: Direction = "forward") -> dict[int, str]:
        """The bucket -> instance id table of the first balancer of ``direction``, read from its kernel.

        Unassigned buckets are absent.
        """

    @abstractmethod
    def tables(self) -> dict[str, dict[int, str]]:
        """The table of every balancer namespace (they agree unless a change is half applied)."""

    # --- built on the above -------------------------------------------------------------------

    def direction_tables(self) -> dict[str, dict[int, str]]:
        """``{"forward": table, "reverse": table}`` (only the directions this driver steers)."""
        return {d: self.table(d) for d in self.directions()}

    def spread(self, instance_ids: Sequence[str], direction: Direction = "both") -> dict[int, str]:
        """Assign every bucket round-robin over ``instance_ids`` and return the mapping."""
        if not instance_ids:
            raise SteeringError("spread needs at least one instance")
        for i in instance_ids:
            self._target(i)
        mapping = {b: instance_ids[b % len(instance_ids)] for b in range(self.buckets)}
        self.assign(mapping, direction)
        return mapping

    def buckets_of(self, instance_id: str, direction: Direction = "forward") -> list[int]:
        """The buckets mapped to ``instance_id`` in ``direction`` (``both``: in either), from the kernel."""
        if direction == "both":
            tables = list(self.direction_tables().values())
        else:
            self._selected(direction)
            tables = [self.table(direction)]
        return sorted({b for t in tables for b, i in t.items() if i == instance_id})

    def move(
        self, from_id: str, to_ids: Sequence[str], direction: Direction = "both"
    ) -> dict[str, dict[int, str]]:
        """Spread every bucket of ``from_id`` round-robin over ``to_ids``, per direction.

        Returns the buckets moved per direction (``{"forward": {bucket: id}, ...}``).
        """
        self._target(from_id)
        if not to_ids:
            raise SteeringError("the target list is empty")
        for i in to_ids:
            self._target(i)
        if from_id in to_ids:
            raise SteeringError(f"cannot move the buckets of {from_id} to {from_id} itself")
        moved: dict[str, dict[int, str]] = {}
        self._selected(direction)
        chosen = self.directions() if direction == "both" else (direction,)
        for d in chosen:
            mine = self.buckets_of(from_id, d)
            mapping = {b: to_ids[n % len(to_ids)] for n, b in enumerate(mine)}
            if mapping:
                self.assign(mapping, d)
            moved[d] = mapping
        return moved
