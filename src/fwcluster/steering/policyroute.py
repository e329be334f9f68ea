"""Policy routing in a balancer namespace: ``fwmark M -> table T -> default via the instance``.

One rule per instance and family at a fixed preference, one routing table per instance. Done
with pyroute2 (netlink) so a change is one round trip, not a process per command.
"""

from __future__ import annotations

import socket
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from fwcluster.steering.base import SteeringError, Target

RULE_PRIORITY = 1000  # after "from all lookup local" (0), before "main" (32766)
_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_DEFAULT = {socket.AF_INET: "0.0.0.0/0", socket.AF_INET6: "::/0"}
_ENOENT = 2
_ESRCH = 3


def _open(netns: str) -> Any:
    try:
        return IPRoute(netns=netns)
    except OSError as e:
        raise SteeringError(f"cannot open netlink in {netns}: {e}") from None


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def _our_rules(ipr: Any, family: int, table: int | None) -> list[Any]:
    found = []
    for msg in ipr.get_rules(family=family):
        if _attr(msg, "FRA_PRIORITY") != RULE_PRIORITY:
            continue
        if table is not None and _attr(msg, "FRA_TABLE") != table:
            continue
        found.append(msg)
    return found


def _delete_rules(ipr: Any, family: int, table: int | None) -> None:
    for msg in _our_rules(ipr, family, table):
        try:
            ipr.rule(
                "del",
                family=family,
                priority=RULE_PRIORITY,
                table=_attr(msg, "FRA_TABLE"),
                fwmark=_attr(msg, "FRA_FWMARK"),
            )
        except NetlinkError as e:
            if e.code != _ENOENT:
                raise


def program(netns: str, targets: list[Target]) -> None:
    """Replace all steering rules in ``netns`` with one rule and one table per target."""
    try:
        with _open(netns) as ipr:
            for family in _FAMILIES:
                _delete_rules(ipr, family, None)
            for t in targets:
                _add(ipr, netns, t)
    except NetlinkError as e:
        raise SteeringError(f"{netns}: programming policy routing failed: {e}") from None


def add(netns: str, target: Target) -> None:
    try:
        with _open(netns) as ipr:
            for family in _FAMILIES:
                _delete_rules(ipr, family, target.table)
            _add(ipr, netns, target)
    except NetlinkError as e:
        raise SteeringError(f"{netns}: adding routes to {target.id} failed: {e}") from None


def remove(netns: str, target: Target) -> None:
    try:
        with _open(netns) as ipr:
            for family in _FAMILIES:
                _delete_rules(ipr, family, target.table)
                try:
                    ipr.route("del", family=family, dst=_DEFAULT[family], table=target.table)
                except NetlinkError as e:
                    if e.code not in (_ENOENT, _ESRCH):
                        raise
    except NetlinkError as e:
        raise SteeringError(f"{netns}: removing routes to {target.id} failed: {e}") from None


def _add(ipr: Any, netns: str, t: Target) -> None:
    hop = t.hop(netns)
    links = ipr.link_lookup(ifname=hop.dev)
    if not links:
        raise SteeringError(f"{netns}: no interface {hop.dev!r} toward {t.id}")
    oif = links[0]
    for family, via in ((socket.AF_INET, hop.via4), (socket.AF_INET6, hop.via6)):
        ipr.route("replace", family=family, dst=_DEFAULT[family], gateway=via, oif=oif, table=t.table)
        ipr.rule("add", family=family, priority=RULE_PRIORITY, fwmark=t.mark, table=t.table)


def uninstall(netns: str, tables: list[int]) -> None:
    """Delete every steering rule and the given tables' default routes (idempotent)."""
    try:
        with _open(netns) as ipr:
            for family in _FAMILIES:
                _delete_rules(ipr, family, None)
                for table in tables:
                    try:
                        ipr.route("del", family=family, dst=_DEFAULT[family], table=table)
                    except NetlinkError as e:
                        if e.code not in (_ENOENT, _ESRCH):
                            raise
    except NetlinkError as e:
        raise SteeringError(f"{netns}: removing policy routing failed: {e}") from None
