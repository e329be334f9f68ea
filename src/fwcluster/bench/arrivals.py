"""When the connections of an open-loop load arrive: a fixed rate, Poisson or evenly spaced.

An open-loop load starts each new connection at its scheduled time, whatever happened to the
earlier ones, so a stall shows as late connections instead of hiding the arrivals behind it
(the closed loop's coordinated omission). The schedule is bounded by a count and a duration.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

KINDS = ("poisson", "uniform")


def offsets(
    rate: float, kind: str, count: int, duration: float, rng: random.Random | None = None
) -> Iterator[float]:
    """Scheduled arrival times in seconds from the start, increasing, fewer than ``count`` + 1 and
    all below ``duration``. ``poisson``: exponential gaps of mean 1/rate (the first arrival after
    one gap); ``uniform``: one every 1/rate seconds from 0."""
    if not rate > 0:
        raise ValueError(f"rate must be > 0, not {rate!r}")
    if kind not in KINDS:
        raise ValueError(f"arrivals must be one of {' | '.join(KINDS)}, not {kind!r}")
    rng = rng or random.Random()
    t = 0.0
    for i in range(count):
        t = t + rng.expovariate(rate) if kind == "poisson" else i / rate
        if t >= duration:
            return
        yield t


class Schedule:
    """The arrivals of one run as absolute times in nanoseconds (``perf_counter_ns`` clock)."""

    def __init__(
        self,
        start_ns: int,
        rate: float,
        kind: str,
        count: int,
        duration: float,
        rng: random.Random | None = None,
    ) -> None:
        self._times = (start_ns + round(t * 1e9) for t in offsets(rate, kind, count, duration, rng))
        self._next: int | None = next(self._times, None)

    @property
    def done(self) -> bool:
        """No arrival is left."""
        return self._next is None

    def next_ns(self) -> int | None:
        """The time of the next arrival, or None when none is left."""
        return self._next

    def due(self, now_ns: int) -> list[int]:
        """Every arrival scheduled at or before ``now_ns`` not yet taken, oldest first."""
        out: list[int] = []
        while self._next is not None and self._next <= now_ns:
            out.append(self._next)
            self._next = next(self._times, None)
        return out
