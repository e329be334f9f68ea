"""ECMP steering: a resilient nexthop group per balancer and family, hashed on the L4 5-tuple.

Each balancer hashes on its own (``fib_multipath_hash_policy=1``: addresses, protocol, ports), so
the client->server packets of a flow (fwc-lb) and its server->client packets (fwc-rt) may cross
different instances: the shared state table must carry them. In every balancer, per family::

    ip link add void type ifb                        # where unassigned buckets lead: ifb drops
    ip nexthop add id S dev void                     # one "slot" nexthop per bucket (S = base + b)
    ip nexthop add id G group S0/S1/.../S(B-1) type resilient buckets B
    ip route add default nhid G table 200
    ip rule add iif <ingress> lookup 200 pref 1000

Why one slot nexthop per bucket and not one nexthop per instance with ``ip nexthop bucket set``:
the kernel (6.18 included) implements no RTM_NEWNEXTHOPBUCKET handler and iproute2 has no
``bucket set``: userspace can list buckets but not set them. So the group gets B members of
weight 1 and B buckets; every member then owns exactly one bucket (the kernel reports which one
in ``ip nexthop bucket list``), and the group is always balanced, so the kernel's upkeep never
migrates a bucket whatever ``idle_timer``/``unbalanced_timer`` say. Moving bucket b is then
``ip nexthop replace id S(b) via ADDR dev fwK``: one nexthop changes, no other bucket moves.
Unassigned buckets lead to ``dev void`` (an ifb device, which drops what it is sent, because the
kernel refuses a blackhole nexthop in a group with more than one member).

iproute2 packs a group into a 1 KiB netlink request, so a group holds at most about 124 members:
this driver allows at most :data:`MAX_BUCKETS` buckets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fwcluster.steering.base import Balancer, Direction, SteeringDriver, SteeringError, Target
from fwcluster.steering.netns import CommandError, inside, run_in

MAX_BUCKETS = 120
_MAX_RULES = 16
VOID_DEV = "void"
ROUTE_TABLE = 200
RULE_PRIORITY = 1000
FAMILIES = (4, 6)
GROUP_ID = {4: 4000, 6: 6000}
SLOT_BASE = {4: 10000, 6: 20000}  # slot of bucket b: SLOT_BASE[family] + b
_DEFAULT = {4: "0.0.0.0/0", 6: "::/0"}
HASH_SYSCTLS = (
    ("net/ipv4/fib_multipath_hash_policy", "1"),
    ("net/ipv6/fib_multipath_hash_policy", "1"),
)


def slot_id(family: int, bucket: int) -> int:
    return SLOT_BASE[family] + bucket


def _ip(netns: str, family: int, args: list[str], check: bool = True) -> str:
    try:
        return run_in(netns, ["ip", f"-{family}", *args], check=check).stdout
    except CommandError as e:
        raise SteeringError(str(e)) from None


def _batch(netns: str, family: int | None, lines: list[str]) -> None:
    """Run ``ip [-4|-6] -batch -`` with ``lines`` (one process; stops at the first error)."""
    if not lines:
        return
    opts = [f"-{family}"] if family else []
    try:
        run_in(netns, ["ip", *opts, "-batch", "-"], input="".join(f"{ln}\n" for ln in lines))
    except CommandError as e:
        raise SteeringError(str(e)) from None


def install_script(buckets: int) -> dict[int | None, list[str]]:
    """The ``ip -batch`` lines, by family option, that build the slots, groups and routes.

    Slots carry a family (``ip -4``/``ip -6``); a group must be made without one (the kernel
    says "Invalid family for group" otherwise); routes name their family by their prefix.
    """
    script: dict[int | None, list[str]] = {4: [], 6: [], None: []}
    for family in FAMILIES:
        slots = [slot_id(family, b) for b in range(buckets)]
        script[family] = [f"nexthop add id {s} dev {VOID_DEV}" for s in slots]
        members = "/".join(map(str, slots))
        script[None] += [
            f"nexthop add id {GROUP_ID[family]} group {members} type resilient buckets {buckets}",
            f"route add {_DEFAULT[family]} nhid {GROUP_ID[family]} table {ROUTE_TABLE}",
        ]
    return script


def slot_line(family: int, slot: int, target: Target | None, netns: str) -> str:
    """The ``ip -batch`` line that points one slot at ``target`` (None: the void device)."""
    if target is None:
        return f"nexthop replace id {slot} dev {VOID_DEV}"
    hop = target.hop(netns)
    via = hop.via4 if family == 4 else hop.via6
    return f"nexthop replace id {slot} via {via} dev {hop.dev}"


class EcmpDriver(SteeringDriver):
    """Resilient nexthop groups with one slot nexthop per bucket, in every balancer."""

    kind = "ecmp"

    def __init__(self, balancers: Iterable[Balancer], buckets: int, targets: Iterable[Target] = ()) -> None:
        super().__init__(list(balancers), buckets, targets)
        # bucket -> slot per (namespace, family), read once: the kernel assigns a resilient
        # group's buckets to its slots when install() builds it, and only moving a slot's dev
        # happens after that, which keeps the assignment. This halves the `ip` runs of a
        # failover, the reroute's cost. install() and uninstall() forget it, as does a failed write.
        self._slot_cache: dict[tuple[str, int], dict[int, int]] = {}
        if buckets > MAX_BUCKETS:
            raise SteeringError(f"ecmp steering supports at most {MAX_BUCKETS} buckets, not {buckets}")

    # --- life cycle ---------------------------------------------------------------------------

    def install(self, targets: Iterable[Target]) -> None:
        self._slot_cache.clear()
        self._targets = {}
        for t in targets:
            self._remember(t)
        self.uninstall()
        for b in self.balancers:
            with inside(b.netns):
                for key, value in HASH_SYSCTLS:
                    Path("/proc/sys", key).write_text(value)
            _ip(b.netns, 4, ["link", "add", VOID_DEV, "type", "ifb"])
            _ip(b.netns, 4, ["link", "set", VOID_DEV, "up"])
            for family, lines in install_script(self.buckets).items():
                _batch(b.netns, family, lines)
            for family in FAMILIES:
                rule = [
                    "rule",
                    "add",
                    "iif",
                    b.ingress,
                    "lookup",
                    str(ROUTE_TABLE),
                    "pref",
                    str(RULE_PRIORITY),
                ]
                _ip(b.netns, family, rule)

    def uninstall(self) -> None:
        self._slot_cache.clear()
        for b in self.balancers:
            for family in FAMILIES:
                for _ in range(_MAX_RULES):  # bounded: one rule per family is all we add
                    if not _ip(b.netns, family, ["rule", "show", "pref", str(RULE_PRIORITY)]).strip():
                        break
                    _ip(b.netns, family, ["rule", "del", "pref", str(RULE_PRIORITY)])
                _ip(b.netns, family, ["route", "flush", "table", str(ROUTE_TABLE)], check=False)
                _ip(b.netns, family, ["nexthop", "del", "id", str(GROUP_ID[family])], check=False)
            # The slots go with their device.
            _ip(b.netns, 4, ["link", "del", VOID_DEV], check=False)
            for family in FAMILIES:
                stale = [n["id"] for n in self._nexthops(b.netns, family) if _is_slot(family, n["id"])]
                _batch(b.netns, family, [f"nexthop del id {i}" for i in stale])

    def add_target(self, target: Target) -> None:
        # Slots are pointed at an instance when a bucket is assigned; nothing to program now.
        for b in self.balancers:
            target.hop(b.netns)
        self._remember(target)

    def remove_target(self, instance_id: str) -> None:
        self._target(instance_id)
        still = self.buckets_of(instance_id, "both")
        if still:
            raise SteeringError(f"{instance_id} still holds buckets {still}; move them first")
        del self._targets[instance_id]

    # --- buckets ------------------------------------------------------------------------------

    def assign(self, mapping: Mapping[int, str], direction: Direction = "both") -> None:
        wanted: dict[int, Target | None] = {}
        for bucket, instance_id in mapping.items():
            self._check_bucket(bucket)
            wanted[bucket] = self._target(instance_id)
        self._apply(wanted, direction)

    def unassign(self, buckets: Iterable[int], direction: Direction = "both") -> None:
        wanted: dict[int, Target | None] = {}
        for bucket in buckets:
            self._check_bucket(bucket)
            wanted[bucket] = None
        self._apply(wanted, direction)

    def _apply(self, wanted: Mapping[int, Target | None], direction: Direction) -> None:
        for b in self._selected(direction):
            for family in FAMILIES:
                slots = self._slots(b.netns, family)
                current = self._slot_devs(b.netns, family)
                lines = []
                for bucket, target in sorted(wanted.items()):
                    slot = slots[bucket]
                    dev = target.hop(b.netns).dev if target is not None else VOID_DEV
                    if current.get(slot) != dev:
                        lines.append(slot_line(family, slot, target, b.netns))
                try:
                    _batch(b.netns, family, lines)
                except SteeringError:
                    self._slot_cache.clear()  # read the groups again next time
                    raise

    def table(self, direction: Direction = "forward") -> dict[int, str]:
        return self._table(self._selected(direction)[0].netns)

    def tables(self) -> dict[str, dict[int, str]]:
        return {b.netns: self._table(b.netns) for b in self.balancers}

    # --- reading the kernel -------------------------------------------------------------------

    def _table(self, netns: str) -> dict[int, str]:
        by_dev = {t.hop(netns).dev: t.id for t in self._targets.values()}
        per_family: list[dict[int, str]] = []
        for family in FAMILIES:
            slots = self._slots(netns, family)
            devs = self._slot_devs(netns, family)
            table: dict[int, str] = {}
            for bucket, slot in sorted(slots.items()):
                dev = devs.get(slot)
                if dev is None or dev == VOID_DEV:
                    continue
                if dev not in by_dev:
                    raise SteeringError(f"{netns}: bucket {bucket} leads to {dev}, no known instance")
                table[bucket] = by_dev[dev]
            per_family.append(table)
        if per_family[0] != per_family[1]:
            diff = sorted(b for b in range(self.buckets) if per_family[0].get(b) != per_family[1].get(b))
            raise SteeringError(f"{netns}: IPv4 and IPv6 groups disagree on buckets {diff[:8]}")
        return per_family[0]

    def _slots(self, netns: str, family: int) -> dict[int, int]:
        """bucket -> slot nexthop id of one family's group, as the kernel assigned them (read
        once per driver, see __init__)."""
        cached = self._slot_cache.get((netns, family))
        if cached is not None:
            return cached
        group = GROUP_ID[family]
        try:
            out = run_in(netns, ["ip", "-j", "nexthop", "bucket", "list", "id", str(group)]).stdout
        except CommandError as e:
            raise SteeringError(f"{netns}: ecmp steering is not installed ({e})") from None
        doc: list[dict[str, Any]] = json.loads(out or "[]")
        slots = {int(item["bucket"]["index"]): int(item["bucket"]["nhid"]) for item in doc}
        if sorted(slots) != list(range(self.buckets)):
            raise SteeringError(f"{netns}: group {group} has {len(slots)} buckets, expected {self.buckets}")
        self._slot_cache[(netns, family)] = slots
        return slots

    def _slot_devs(self, netns: str, family: int) -> dict[int, str]:
        """slot nexthop id -> the device it leads to."""
        return {
            int(n["id"]): str(n.get("dev", ""))
            for n in self._nexthops(netns, family)
            if _is_slot(family, int(n["id"]))
        }

    @staticmethod
    def _nexthops(netns: str, family: int) -> list[dict[str, Any]]:
        out = _ip(netns, family, ["-j", "nexthop", "show"], check=False)
        doc: list[dict[str, Any]] = json.loads(out or "[]")
        return doc


def _is_slot(family: int, nh_id: int) -> bool:
    return SLOT_BASE[family] <= nh_id < SLOT_BASE[family] + MAX_BUCKETS
