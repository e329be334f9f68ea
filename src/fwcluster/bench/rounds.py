"""Setups interleaved round by round, the order rotated each round (drift on a shared machine
spreads over all of them), with a progress bar that names the round and the setup."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from rich.progress import Progress

_S = TypeVar("_S")


def rotated(setups: Sequence[_S], r: int) -> list[_S]:
    """Round ``r``'s order: the list rotated left by ``r``."""
    shift = r % len(setups) if setups else 0
    return [*setups[shift:], *setups[:shift]]


def interleaved(
    title: str, setups: Sequence[_S], rounds: int, name: Callable[[_S], str] = str
) -> Iterator[tuple[int, _S]]:
    """Every (round, setup) in the order to measure them; the bar advances after each one."""
    with Progress(transient=True) as progress:
        task = progress.add_task(title, total=rounds * len(setups))
        for r in range(rounds):
            for setup in rotated(setups, r):
                progress.update(task, description=f"round {r + 1}/{rounds}: {name(setup)}")
                yield r, setup
                progress.advance(task)
