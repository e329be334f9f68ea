"""Who backs up whom with ``[sync] follow = "backup"`` (sans-I/O; docs/architecture.md).

The healthy instances that are no standby (those the leading master lists as ``active`` or
``ready`` in the membership: a ready one carries no buckets now, but may get some) form a ring in
the order of their ids: each one's designated backup is the next one, which follows the changes
it writes (its own stream in the store). A standby backs up every active instance, since a
failure hands it all the failed one's buckets. Joining, draining and failed instances are not in
the ring. The masters use :func:`backup_of` to pick where
a failed instance's buckets go; the instances use :func:`followed` to pick which streams they
read. Both compute from the same membership, so they agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

ACTIVE = "active"
READY = "ready"
STANDBY = "standby"
FAILED = "failed"
RING_ROLES = frozenset({ACTIVE, READY})


def ring(members: Iterable[str]) -> list[str]:
    """The ring's instances in ring order (their ids, sorted)."""
    return sorted(set(members))


def backup_of(instance: str, members: Iterable[str]) -> str | None:
    """The designated backup of ``instance`` in the ring of ``members`` (``instance`` counted in,
    so a failed instance still has the backup it had): the next one; None when it is alone."""
    r = ring([*members, instance])
    if len(r) < 2:
        return None
    return r[(r.index(instance) + 1) % len(r)]


def to_preload(me: str, members: Mapping[str, str], had: Iterable[str]) -> frozenset[str]:
    """The failed instances whose flows ``me`` loads once by their index, so the rebalance after
    a failover to the backup finds them here: every failed one, when ``me`` is in the ring, except
    those it followed (``had``: it holds their flows already)."""
    if members.get(me) not in RING_ROLES:
        return frozenset()
    return frozenset(i for i, r in members.items() if r == FAILED and i != me) - set(had)


def followed(me: str, members: Mapping[str, str]) -> frozenset[str]:
    """The instances whose changes ``me`` applies, from the membership (id -> role): its ring
    predecessor when in the ring, every active instance when a standby, nobody otherwise."""
    role = members.get(me)
    if role == STANDBY:
        return frozenset(i for i, r in members.items() if r == ACTIVE)
    r = ring(i for i, role in members.items() if role in RING_ROLES)
    if role not in RING_ROLES or len(r) < 2:
        return frozenset()
    return frozenset({r[r.index(me) - 1]})
