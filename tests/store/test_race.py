"""Real concurrent writers racing on the same flows against the real redis-server.

Each writer is its own OS process with its own event loop and its own RedisStore connection; they
start together behind a barrier. Writer A walks every flow forward (SYN_SENT v1 -> SYN_RECV v2 ->
ESTABLISHED v3); writer B holds a stale view of the same flows and writes SYN_SENT v1, SYN_RECV v2,
SYN_RECV v2 (same pace as A, so the two meet on each flow).

- dirty (blind) writes: last writer wins, so some flow goes backwards (ESTABLISHED overwritten by
  SYN_RECV). The test shows that it happens.
- clean (conditional) writes: no flow ever goes backwards, no version repeats or drops, and no
  update is lost: every applied write is in the feed, every refused one was told the newer record.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
from collections import Counter, defaultdict
from itertools import pairwise
from multiprocessing.synchronize import Barrier
from typing import Any, NamedTuple

import pytest

from fwcluster.bench.store import flow_key
from fwcluster.core.states import RANK, FlowState
from fwcluster.statetable.record import FlowRecord
from fwcluster.statetable.redis_store import RedisStore

from .helpers import LONG_TTL, S

pytestmark = pytest.mark.timeout(120)

FLOWS = 300
MAX_DIRTY_ROUNDS = 20
CLEAN_ROUNDS = 3
PLANS: dict[str, tuple[tuple[FlowState, int], ...]] = {
    "A": ((S.SYN_SENT, 1), (S.SYN_RECV, 2), (S.ESTABLISHED, 3)),  # sees every packet
    "B": ((S.SYN_SENT, 1), (S.SYN_RECV, 2), (S.SYN_RECV, 2)),  # stale: never saw the final ACK
}
Value = tuple[FlowState, int, str]  # state, version, writer


class Outcome(NamedTuple):
    flow: int
    wrote: Value
    applied: bool
    current: Value


def _value(r: FlowRecord) -> Value:
    return (r.state, r.version, r.writer)


def _writer(url: str, name: str, clean: bool, barrier: Barrier, out: multiprocessing.Queue[Any]) -> None:
    """One writer process: its own loop and connection; reports every write's outcome."""

    async def main() -> list[Outcome]:
        store = RedisStore(url, timeout=5.0)
        try:
            await store.ping()  # connected (and script loaded) before the start
            barrier.wait(20)
            outcomes = []
            for i in range(FLOWS):
                key = flow_key(i)
                for state, version in PLANS[name]:
                    r = FlowRecord(key, state, True, version, 6, name)
                    [result] = await store.write([(r, LONG_TTL)], clean=clean)
                    assert result.current is not None
                    outcomes.append(Outcome(i, _value(r), result.applied, _value(result.current)))
            return outcomes
        finally:
            await store.close()

    try:
        out.put((name, asyncio.run(main())))
    except BaseException as e:
        out.put((name, f"{type(e).__name__}: {e}"))


def _race(
    url: str, clean: bool
) -> tuple[dict[str, list[Outcome]], list[FlowRecord], list[FlowRecord | None]]:
    """One round: a cleared store, A and B at once. Returns outcomes, the whole feed, the final flows."""

    async def reset() -> None:
        s = RedisStore(url)
        try:
            await s.clear()
        finally:
            await s.close()

    asyncio.run(reset())
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(PLANS))
    results: multiprocessing.Queue[Any] = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, name, clean, barrier, results)) for name in PLANS]
    outcomes: dict[str, list[Outcome]] = {}
    try:
        for p in procs:
            p.start()
        for _ in procs:
            try:
                name, got = results.get(timeout=60)
            except queue.Empty:
                pytest.fail("a writer process did not report within 60 s")
            if isinstance(got, str):
                pytest.fail(f"writer {name} failed: {got}")
            outcomes[name] = got
        for p in procs:
            p.join(10)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)

    async def collect() -> tuple[list[FlowRecord], list[FlowRecord | None]]:
        s = RedisStore(url)
        try:
            feed: list[FlowRecord] = []
            position = "0-0"
            for _ in range(100):
                got, position = await s.feed(position, 0, 1000)
                if not got:
                    break
                feed += got
            return feed, await s.get([flow_key(i) for i in range(FLOWS)])
        finally:
            await s.close()

    feed, final = asyncio.run(collect())
    return outcomes, feed, final


def _per_flow(feed: list[FlowRecord]) -> dict[bytes, list[Value]]:
    by_flow: dict[bytes, list[Value]] = defaultdict(list)
    for r in feed:
        by_flow[r.key].append(_value(r))
    return by_flow


def _regressions(feed: list[FlowRecord], final: list[FlowRecord | None]) -> int:
    """Flows that went backwards: ended below ESTABLISHED, or fell back after reaching it."""
    by_flow = _per_flow(feed)
    bad = 0
    for i, current in enumerate(final):
        seq = by_flow[flow_key(i)]
        ranks = [RANK[state] for state, _, _ in seq]
        fell = any(a == RANK[S.ESTABLISHED] and b < a for a, b in pairwise(ranks))
        if current is None or RANK[current.state] < RANK[S.ESTABLISHED] or fell:
            bad += 1
    return bad


def test_dirty_writes_race_into_regressions(redis_url: str) -> None:
    t0 = time.monotonic()
    seen = []
    for _ in range(MAX_DIRTY_ROUNDS):
        outcomes, feed, final = _race(redis_url, clean=False)
        assert all(o.applied for o in outcomes["A"] + outcomes["B"])  # blind writes always "apply"
        assert len(feed) == 2 * 3 * FLOWS
        bad = _regressions(feed, final)
        seen.append(bad)
        if bad:
            break
        if time.monotonic() - t0 > 15:
            break
    assert any(seen), (
        f"no dirty-write regression in {len(seen)} rounds of {FLOWS} flows (regressions per round: {seen}); "
        "the writers never overlapped?"
    )


def _check_clean(
    outcomes: dict[str, list[Outcome]], feed: list[FlowRecord], final: list[FlowRecord | None]
) -> None:
    assert _regressions(feed, final) == 0
    by_flow = _per_flow(feed)
    applied: dict[int, Counter[Value]] = defaultdict(Counter)
    for o in outcomes["A"] + outcomes["B"]:
        if o.applied:
            assert o.current == o.wrote  # what was applied is what the store then held
            applied[o.flow][o.wrote] += 1
        else:
            # refused: told of a record at least as new, and one that really was applied
            state, version, _ = o.current
            assert version >= o.wrote[1], o
            assert RANK[state] >= RANK[o.wrote[0]] or version > o.wrote[1], o
            assert o.current in by_flow[flow_key(o.flow)], o
    for i in range(FLOWS):
        seq = by_flow[flow_key(i)]
        # per flow: versions strictly up, ranks never down
        assert all(b[1] > a[1] for a, b in pairwise(seq)), seq
        assert all(RANK[b[0]] >= RANK[a[0]] for a, b in pairwise(seq)), seq
        # no lost update: the feed holds exactly the applied writes
        assert Counter(seq) == applied[i], (seq, applied[i])
        # A's ESTABLISHED v3 always gets in, and nothing stale ever replaces it
        assert seq[-1] == (S.ESTABLISHED, 3, "A")
        current = final[i]
        assert current is not None and _value(current) == (S.ESTABLISHED, 3, "A")


def test_clean_writes_never_regress_nor_lose_updates(redis_url: str) -> None:
    for _ in range(CLEAN_ROUNDS):
        _check_clean(*_race(redis_url, clean=True))
