"""Fair shares of buckets: the fewest moves that even out the load over a set of instances.

Scaling out, scaling in and draining all come down to this: every bucket that need not move stays
where it is, so only the flows of the moved buckets change instance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from fwcluster.steering.base import Direction, SteeringDriver, SteeringError

Assign = Callable[[Mapping[int, str], Direction], None]


def fair_share_moves(table: dict[int, str], members: Sequence[str]) -> dict[int, str]:
    """The fewest bucket moves that leave every member with B // n or B // n + 1 buckets.

    Buckets are taken only from members above their quota (or from owners that are not members)
    and given only to members below it; every other bucket stays where it is."""
    n = len(members)
    if n == 0:
        raise SteeringError("no instance left to carry traffic")
    buckets = sorted(table)
    base, extra = divmod(len(buckets), n)
    count = {m: 0 for m in members}
    for owner in table.values():
        if owner in count:
            count[owner] += 1
    # Members that already hold more keep the "+1" quotas, so fewer buckets move.
    by_load = sorted(members, key=lambda m: -count[m])
    quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_load)}
    give = [b for b in buckets if table[b] not in quota]  # owners that are leaving
    held = {m: [b for b in buckets if table[b] == m] for m in members}
    for m in by_load:
        surplus = count[m] - quota[m]
        if surplus > 0:
            give.extend(held[m][-surplus:])
    moves: dict[int, str] = {}
    for m in members:
        for _ in range(max(0, quota[m] - count[m])):
            moves[give.pop(0)] = m
    return moves


def rebalance(
    driver: SteeringDriver, members: Sequence[str], assign: Assign | None = None
) -> dict[str, dict[int, str]]:
    """Apply fair_share_moves in every direction; returns the moves made.

    ``assign`` writes the moves (default: the driver itself); a master passes its fenced write, so
    a deposed leader's rebalance is refused."""
    write = assign or driver.assign
    moved: dict[str, dict[int, str]] = {}
    for direction in driver.directions():
        moves = fair_share_moves(driver.table(direction), members)
        if moves:
            write(moves, direction)
        moved[direction] = moves
    return moved
