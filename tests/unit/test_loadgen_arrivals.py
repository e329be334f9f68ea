"""The open-loop load's arrival schedule (bench/arrivals.py), without root or network."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwcluster.bench.arrivals import Schedule, offsets


def test_uniform_arrivals_are_evenly_spaced_from_zero() -> None:
    assert list(offsets(4.0, "uniform", 100, 1.0)) == [0.0, 0.25, 0.5, 0.75]


def test_uniform_arrivals_stop_at_the_count() -> None:
    assert list(offsets(1000.0, "uniform", 3, 10.0)) == [0.0, 0.001, 0.002]


def test_poisson_gaps_average_one_over_the_rate() -> None:
    times = list(offsets(1000.0, "poisson", 20_000, 100.0, random.Random(7)))
    assert len(times) == 20_000
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert statistics.fmean(gaps) == pytest.approx(1e-3, rel=0.03)
    # exponential: the standard deviation equals the mean (uniform gaps would have none)
    assert statistics.stdev(gaps) == pytest.approx(1e-3, rel=0.05)


def test_poisson_arrivals_are_reproducible_with_a_seed() -> None:
    a = list(offsets(50.0, "poisson", 100, 10.0, random.Random(3)))
    b = list(offsets(50.0, "poisson", 100, 10.0, random.Random(3)))
    assert a == b and a != list(offsets(50.0, "poisson", 100, 10.0, random.Random(4)))


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=1e5),
    kind=st.sampled_from(["poisson", "uniform"]),
    count=st.integers(min_value=0, max_value=500),
    duration=st.floats(min_value=0.0, max_value=5.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_schedule_is_increasing_and_bounded_by_count_and_duration(
    rate: float, kind: str, count: int, duration: float, seed: int
) -> None:
    times = list(offsets(rate, kind, count, duration, random.Random(seed)))
    assert len(times) <= count
    assert all(0 <= t < duration for t in times)
    assert all(a <= b for a, b in itertools.pairwise(times))
    if kind == "uniform":
        assert times == [i / rate for i in range(len(times))]
        # it stops at the count or at the first arrival that would fall at or after the duration
        assert len(times) == count or len(times) / rate >= duration


@given(
    steps=st.lists(st.integers(min_value=0, max_value=50_000_000), min_size=1, max_size=40),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_due_hands_out_every_arrival_once_in_order_and_never_early(steps: list[int], seed: int) -> None:
    start = 1_000_000_000
    expected = [start + round(t * 1e9) for t in offsets(200.0, "poisson", 300, 1.0, random.Random(seed))]
    sched = Schedule(start, 200.0, "poisson", 300, 1.0, random.Random(seed))
    now, got = start, []
    for step in steps:
        now += step
        due = sched.due(now)
        assert all(t <= now for t in due)
        nxt = sched.next_ns()
        assert nxt is None or nxt > now
        got += due
    got += sched.due(start + 2_000_000_000)
    assert got == expected and sched.done and sched.next_ns() is None


@pytest.mark.parametrize(("rate", "kind"), [(0.0, "poisson"), (-1.0, "uniform"), (10.0, "bursty")])
def test_bad_rate_or_kind_is_refused(rate: float, kind: str) -> None:
    with pytest.raises(ValueError, match=r"rate|arrivals"):
        list(offsets(rate, kind, 10, 1.0))
