"""Ordered packet-filter rules: first match wins, the default policy decides the rest.

Rules are consulted only for packets that would open a connection; packets of a tracked
connection pass when the tracker finds them valid. Addresses are compared as integers and
ports as inclusive ranges, so a match is a handful of integer comparisons.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import IntEnum

# IP protocol numbers the core understands.
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

PROTO_BY_NAME: dict[str, int | None] = {
    "any": None,
    "tcp": PROTO_TCP,
    "udp": PROTO_UDP,
    "icmp": PROTO_ICMP,
    "icmpv6": PROTO_ICMPV6,
}


class Action(IntEnum):
    """What a rule (or the default policy) does with a packet that would open a connection."""

    ACCEPT = 0
    DROP = 1
    REJECT = 2


ACTION_BY_NAME = {a.name.lower(): a for a in Action}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule. Empty tuples mean "any"."""

    action: Action
    proto: int | None = None
    src: tuple[Network, ...] = ()
    dst: tuple[Network, ...] = ()
    sport: tuple[tuple[int, int], ...] = ()
    dport: tuple[tuple[int, int], ...] = ()
    # Compiled forms: (version, first, last) integer ranges, filled in by __post_init__.
    _src: tuple[tuple[int, int, int], ...] = field(default=(), init=False, repr=False, compare=False)
    _dst: tuple[tuple[int, int, int], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_src", _compile(self.src))
        object.__setattr__(self, "_dst", _compile(self.dst))

    def matches(self, proto: int, version: int, src: int, dst: int, sport: int, dport: int) -> bool:
        """Does this rule match a packet (addresses as integers, ports 0 for port-less protocols)?"""
        if self.proto is not None and self.proto != proto:
            return False
        if self._src and not _in_ranges(self._src, version, src):
            return False
        if self._dst and not _in_ranges(self._dst, version, dst):
            return False
        # Port conditions only ever match protocols that have ports.
        if self.sport and (proto not in (PROTO_TCP, PROTO_UDP) or not _in_ports(self.sport, sport)):
            return False
        return not (self.dport and (proto not in (PROTO_TCP, PROTO_UDP) or not _in_ports(self.dport, dport)))


def _compile(nets: tuple[Network, ...]) -> tuple[tuple[int, int, int], ...]:
    return tuple((n.version, int(n.network_address), int(n.broadcast_address)) for n in nets)


def _in_ranges(ranges: tuple[tuple[int, int, int], ...], version: int, addr: int) -> bool:
    for v, first, last in ranges:
        if v == version and first <= addr <= last:
            return True
    return False


def _in_ports(ranges: tuple[tuple[int, int], ...], port: int) -> bool:
    for first, last in ranges:
        if first <= port <= last:
            return True
    return False


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The ordered rules plus the default policy."""

    rules: tuple[Rule, ...] = ()
    default: Action = Action.DROP

    def evaluate(
        self, proto: int, version: int, src: int, dst: int, sport: int, dport: int
    ) -> tuple[Action, int]:
        """Return the action and the index of the matching rule (-1 for the default policy)."""
        for i, rule in enumerate(self.rules):
            if rule.matches(proto, version, src, dst, sport, dport):
                return rule.action, i
        return self.default, -1
