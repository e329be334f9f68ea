"""Symmetric steering: nftables ``symhash`` picks the bucket, a named map turns it into a mark.

In every balancer namespace::

    table inet fwc_steer {
        map buckets { typeof symhash mod B : meta mark }
        chain steer {
            type filter hook prerouting priority mangle; policy accept;
            iifname "client" meta mark set symhash mod B map @buckets
        }
    }

plus ``ip rule fwmark M lookup T`` (v4 and v6) and a table T per instance whose default route
leads to it. ``symhash`` hashes a flow the same way in both directions and in every namespace,
so the client->server packets (steered in fwc-lb) and the server->client packets (steered in
fwc-rt) of one flow pick the same bucket and cross the same instance. A bucket that is missing
from the map sets no mark; the packet meets the main table, which has no route across: dropped.

A bucket moves with ``delete element`` + ``add element`` in one nft transaction per balancer,
nothing else is reloaded. ``assign(..., direction="forward"|"reverse")`` changes one balancer's
map only, which splits the two directions of those flows over different instances on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from fwcluster.steering import policyroute
from fwcluster.steering.base import Balancer, Direction, SteeringDriver, SteeringError, Target
from fwcluster.steering.netns import CommandError, nft, nft_json

NFT_TABLE = "fwc_steer"
NFT_MAP = "buckets"
NFT_CHAIN = "steer"


def ruleset(balancer: Balancer, buckets: int) -> str:
    """The nft script that (re)creates the steering table of one balancer, every bucket unassigned."""
    return (
        f"add table inet {NFT_TABLE}\n"
        f"delete table inet {NFT_TABLE}\n"
        f"table inet {NFT_TABLE} {{\n"
        f"    map {NFT_MAP} {{\n"
        f"        typeof symhash mod {buckets} : meta mark\n"
        f"    }}\n"
        f"    chain {NFT_CHAIN} {{\n"
        f"        type filter hook prerouting priority mangle; policy accept;\n"
        f'        iifname "{balancer.ingress}" meta mark set symhash mod {buckets} map @{NFT_MAP}\n'
        f"    }}\n"
        f"}}\n"
    )


def _elements(netns: str) -> dict[int, int]:
    """The bucket -> mark map of one balancer, read from its kernel."""
    try:
        out = nft_json(netns, ["list", "map", "inet", NFT_TABLE, NFT_MAP])
    except CommandError as e:
        raise SteeringError(f"{netns}: steering is not installed ({e})") from None
    doc: dict[str, Any] = json.loads(out)
    for item in doc.get("nftables", []):
        if "map" in item:
            return {int(k): int(v) for k, v in item["map"].get("elem", [])}
    raise SteeringError(f"{netns}: nft returned no map {NFT_MAP}")


def update_script(current: Mapping[int, int], wanted: Mapping[int, int | None]) -> str:
    """The nft transaction that moves buckets from ``current`` to ``wanted`` (None: unassign)."""
    gone = sorted(b for b, m in wanted.items() if b in current and current[b] != m)
    new = sorted((b, m) for b, m in wanted.items() if m is not None and current.get(b) != m)
    lines = []
    if gone:
        keys = ", ".join(str(b) for b in gone)
        lines.append(f"delete element inet {NFT_TABLE} {NFT_MAP} {{ {keys} }}")
    if new:
        elems = ", ".join(f"{b} : {m:#x}" for b, m in new)
        lines.append(f"add element inet {NFT_TABLE} {NFT_MAP} {{ {elems} }}")
    return "".join(line + "\n" for line in lines)


class SymmetricDriver(SteeringDriver):
    """nft ``symhash`` + named map + fwmark policy routing, in every balancer."""

    kind = "symmetric"

    def install(self, targets: Iterable[Target]) -> None:
        self._targets = {}
        for t in targets:
            self._remember(t)
        for b in self.balancers:
            try:
                nft(b.netns, ruleset(b, self.buckets))
            except CommandError as e:
                raise SteeringError(str(e)) from None
            policyroute.program(b.netns, list(self._targets.values()))

    def uninstall(self) -> None:
        tables = [t.table for t in self._targets.values()]
        for b in self.balancers:
            try:
                nft(b.netns, f"add table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n")
            except CommandError as e:
                raise SteeringError(str(e)) from None
            policyroute.uninstall(b.netns, tables)

    def add_target(self, target: Target) -> None:
        self._remember(target)
        for b in self.balancers:
            policyroute.add(b.netns, target)

    def remove_target(self, instance_id: str) -> None:
        target = self._target(instance_id)
        still = self.buckets_of(instance_id, "both")
        if still:
            raise SteeringError(f"{instance_id} still holds buckets {still}; move them first")
        for b in self.balancers:
            policyroute.remove(b.netns, target)
        del self._targets[instance_id]

    def assign(self, mapping: Mapping[int, str], direction: Direction = "both") -> None:
        wanted: dict[int, int | None] = {}
        for bucket, instance_id in mapping.items():
            self._check_bucket(bucket)
            wanted[bucket] = self._target(instance_id).mark
        self._apply(wanted, direction)

    def unassign(self, buckets: Iterable[int], direction: Direction = "both") -> None:
        wanted: dict[int, int | None] = {}
        for bucket in buckets:
            self._check_bucket(bucket)
            wanted[bucket] = None
        self._apply(wanted, direction)

    def _apply(self, wanted: Mapping[int, int | None], direction: Direction) -> None:
        for b in self._selected(direction):
            script = update_script(_elements(b.netns), wanted)
            if not script:
                continue
            try:
                nft(b.netns, script)
            except CommandError as e:
                raise SteeringError(str(e)) from None

    def table(self, direction: Direction = "forward") -> dict[int, str]:
        netns = self._selected(direction)[0].netns
        return self._resolve(netns, _elements(netns))

    def tables(self) -> dict[str, dict[int, str]]:
        return {b.netns: self._resolve(b.netns, _elements(b.netns)) for b in self.balancers}

    def _resolve(self, netns: str, elements: Mapping[int, int]) -> dict[int, str]:
        by_mark = {t.mark: t.id for t in self._targets.values()}
        out: dict[int, str] = {}
        for bucket, mark in sorted(elements.items()):
            if mark not in by_mark:
                raise SteeringError(f"{netns}: bucket {bucket} carries mark {mark:#x} of no known instance")
            out[bucket] = by_mark[mark]
        return out
