"""The store contract, held against both backends: ``memory`` (the reference) and ``redis`` (a real
redis-server, no mocks). Every test that takes the ``store`` fixture runs once per backend."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from fwcluster.bench.store import free_port
from fwcluster.core.states import FlowState
from fwcluster.statetable.record import FlowRecord
from fwcluster.statetable.redis_store import RedisStore
from fwcluster.statetable.store import Store, StoreError, WriteResult

from .helpers import LONG_TTL, Run, S, fk, pos, rec

pytestmark = pytest.mark.timeout(120)

KEY = b"\x06\xc6\x12\x00\x02\x04\x00\xc6\x13\x00\x02\x00\x50"  # a real 13-byte IPv4 TCP flow key


async def _tail(store: Store) -> str:
    """The feed position after everything written so far."""
    _, position = await store.snapshot()
    return position


async def _feed_all(store: Store, position: str) -> tuple[list[FlowRecord], str]:
    """Everything in the feed after ``position`` (no waiting; bounded)."""
    out: list[FlowRecord] = []
    for _ in range(1000):
        got, position = await store.feed(position, 0, 500)
        if not got:
            return out, position
        out += got
    raise AssertionError("the feed does not end")


# ------------------------------------------------------------------------------------ write / get
def test_write_then_get(store: Store, run: Run) -> None:
    async def body() -> None:
        a = rec(b"flow-a", S.SYN_SENT, 1)
        b = rec(b"flow-b", S.ESTABLISHED, 3, writer="fw2", orig_is_lo=False)
        assert await store.write([(a, LONG_TTL)], clean=False) == [WriteResult(True, a)]
        assert await store.write([(b, LONG_TTL)], clean=True) == [WriteResult(True, b)]
        assert await store.get([a.key, b.key, b"unknown"]) == [a, b, None]
        assert await store.get([]) == []
        assert await store.write([], clean=True) == []
        assert await store.write([], clean=False) == []

    run(body())


def test_ping_and_clear(store: Store, run: Run) -> None:
    async def body() -> None:
        await store.ping()
        await store.write([(rec(b"x%d" % i, S.ESTABLISHED, 3), LONG_TTL) for i in range(50)], clean=False)
        await store.clear()
        records, position = await store.snapshot()
        assert records == []
        assert await store.get([fk(b"x1")]) == [None]
        assert (await store.feed(position, 0, 100))[0] == []

    run(body())


def test_dirty_write_last_writer_wins_even_backwards(store: Store, run: Run) -> None:
    async def body() -> None:
        start = await _tail(store)
        writes = [
            rec(KEY, S.ESTABLISHED, 3, writer="fw1"),
            rec(KEY, S.SYN_SENT, 1, writer="fw2"),  # lower rank and version: still wins
            rec(KEY, S.SYN_RECV, 1, writer="fw3"),  # same version
        ]
        for w in writes:
            assert await store.write([(w, LONG_TTL)], clean=False) == [WriteResult(True, w)]
            assert await store.get([KEY]) == [w]
        assert (await _feed_all(store, start))[0] == writes

    run(body())


# ------------------------------------------------------------------------------------ clean writes
def test_clean_first_write_applies(store: Store, run: Run) -> None:
    async def body() -> None:
        r = rec(KEY, S.SYN_RECV, 4)  # nothing stored: any state and version goes in
        assert await store.write([(r, LONG_TTL)], clean=True) == [WriteResult(True, r)]
        assert await store.get([KEY]) == [r]

    run(body())


def test_clean_newer_version_same_or_higher_rank_applies(store: Store, run: Run) -> None:
    walk = [
        (S.SYN_SENT, 1),
        (S.SYN_RECV, 2),  # higher rank
        (S.SYN_RECV, 3),  # same rank, newer version
        (S.ESTABLISHED, 5),  # versions may skip
        (S.FIN_WAIT, 6),
        (S.CLOSE_WAIT, 7),  # same rank as FIN_WAIT
        (S.LAST_ACK, 8),
        (S.TIME_WAIT, 9),
    ]

    async def body() -> None:
        start = await _tail(store)
        applied = []
        for state, version in walk:
            r = rec(KEY, state, version)
            assert await store.write([(r, LONG_TTL)], clean=True) == [WriteResult(True, r)]
            assert await store.get([KEY]) == [r]
            applied.append(r)
        assert (await _feed_all(store, start))[0] == applied

    run(body())


@pytest.mark.parametrize(
    ("stored", "attempt"),
    [
        ((S.ESTABLISHED, 3), (S.SYN_RECV, 4)),  # lower rank, even with a newer version
        ((S.FIN_WAIT, 5), (S.ESTABLISHED, 9)),
        ((S.SYN_RECV, 5), (S.ESTABLISHED, 5)),  # same version
        ((S.SYN_RECV, 5), (S.SYN_RECV, 5)),
        ((S.SYN_RECV, 5), (S.ESTABLISHED, 4)),  # lower version
        ((S.ESTABLISHED, 3), (S.SYN_SENT, 9)),  # a SYN does not reopen a live connection
        ((S.TIME_WAIT, 7), (S.ESTABLISHED, 6)),  # an older write over a close: the same life, late
        ((S.CLOSE, 7), (S.ESTABLISHED, 7)),
        ((S.CLOSE_WAIT, 7), (S.SYN_SENT, 7)),  # a next life over a close must be newer
        ((S.LAST_ACK, 7), (S.ESTABLISHED, 8)),  # ... and a SYN
    ],
)
def test_clean_write_refused(
    store: Store, run: Run, stored: tuple[FlowState, int], attempt: tuple[FlowState, int]
) -> None:
    async def body() -> None:
        held = rec(KEY, *stored, writer="fw1")
        await store.write([(held, LONG_TTL)], clean=True)
        position = await _tail(store)
        result = await store.write([(rec(KEY, *attempt, writer="fw2"), LONG_TTL)], clean=True)
        assert result == [WriteResult(False, held)]  # refused, and told what the store holds
        assert await store.get([KEY]) == [held]
        assert (await store.feed(position, 0, 100))[0] == []  # nothing reached the feed

    run(body())


@pytest.mark.parametrize("closed", [S.TIME_WAIT, S.CLOSE])
def test_clean_reopen_continues_the_version(store: Store, run: Run, closed: FlowState) -> None:
    async def body() -> None:
        await store.write([(rec(KEY, closed, 7, writer="fw1"), LONG_TTL)], clean=True)
        position = await _tail(store)
        result = await store.write([(rec(KEY, S.SYN_SENT, 1, writer="fw2"), LONG_TTL)], clean=True)
        reopened = rec(KEY, S.SYN_SENT, 8, writer="fw2")  # version continues above the stored 7
        assert result == [WriteResult(True, reopened)]
        assert await store.get([KEY]) == [reopened]
        assert (await store.feed(position, 0, 100))[0] == [reopened]
        # the new life walks on from there
        est = rec(KEY, S.ESTABLISHED, 10, writer="fw2")
        assert await store.write([(est, LONG_TTL)], clean=True) == [WriteResult(True, est)]

    run(body())


@pytest.mark.parametrize(
    ("stored", "next_life"),
    [
        # At ``established`` the next life's SYN is not shared: its first write is ESTABLISHED,
        # lower in rank than TIME_WAIT, at a newer version (the engine renumbers past the store's).
        (S.TIME_WAIT, S.ESTABLISHED),
        (S.CLOSE, S.ESTABLISHED),
        # record.clean_allows, core/states.py CLOSING: with ECMP steering the engine writes the
        # next life of a close the store did not see end, at the version after the stored one.
        (S.FIN_WAIT, S.SYN_SENT),
        (S.CLOSE_WAIT, S.SYN_SENT),
        (S.LAST_ACK, S.SYN_SENT),
    ],
)
def test_a_newer_state_over_an_earlier_life_is_its_next_life(
    store: Store, run: Run, stored: FlowState, next_life: FlowState
) -> None:
    async def body() -> None:
        await store.write([(rec(KEY, stored, 7, writer="fw1"), LONG_TTL)], clean=True)
        new = rec(KEY, next_life, 8, writer="fw2")
        assert await store.write([(new, LONG_TTL)], clean=True) == [WriteResult(True, new)]
        assert await store.get([KEY]) == [new]

    run(body())


def test_clean_reopen_keeps_a_higher_version(store: Store, run: Run) -> None:
    async def body() -> None:
        await store.write([(rec(KEY, S.CLOSE, 7), LONG_TTL)], clean=True)
        syn = rec(KEY, S.SYN_SENT, 12)
        assert await store.write([(syn, LONG_TTL)], clean=True) == [WriteResult(True, syn)]
        assert await store.get([KEY]) == [syn]

    run(body())


def test_clean_writes_compare_versions_across_the_wrap(store: Store, run: Run) -> None:
    """Versions live in 12 bits and wrap: 0 follows 4095, and a flow keeps replicating past
    4,096 changes (serial-number arithmetic, core/flowtable.version_newer)."""

    async def body() -> None:
        await store.write([(rec(KEY, S.ESTABLISHED, 4094), LONG_TTL)], clean=True)
        for v in (4095, 0, 1, 2):
            new = rec(KEY, S.ESTABLISHED, v)
            assert await store.write([(new, LONG_TTL)], clean=True) == [WriteResult(True, new)]
        stale = rec(KEY, S.ESTABLISHED, 4000)  # behind by 98: refused, the store keeps version 2
        result = await store.write([(stale, LONG_TTL)], clean=True)
        assert [r.applied for r in result] == [False]
        assert await store.get([KEY]) == [rec(KEY, S.ESTABLISHED, 2)]

    run(body())


def test_clean_reopen_wraps_the_version(store: Store, run: Run) -> None:
    async def body() -> None:
        await store.write([(rec(KEY, S.TIME_WAIT, 4095), LONG_TTL)], clean=True)
        result = await store.write([(rec(KEY, S.SYN_SENT, 3000), LONG_TTL)], clean=True)  # behind: renumbered
        assert result == [WriteResult(True, rec(KEY, S.SYN_SENT, 0))]

    run(body())


# ---------------------------------------------------------------------------------- removal, TTL
@pytest.mark.parametrize("clean", [False, True], ids=["dirty", "clean"])
def test_removed_deletes_the_flow(store: Store, run: Run, clean: bool) -> None:
    async def body() -> None:
        other = rec(b"other", S.ESTABLISHED, 3)
        await store.write([(rec(KEY, S.ESTABLISHED, 3), LONG_TTL), (other, LONG_TTL)], clean=clean)
        position = await _tail(store)
        gone = rec(KEY, S.REMOVED, 4)
        [result] = await store.write([(gone, LONG_TTL)], clean=clean)
        assert result.applied
        assert await store.get([KEY, other.key]) == [None, other]
        assert (await store.snapshot())[0] == [other]
        assert (await store.feed(position, 0, 100))[0] == [gone]  # followers learn of the removal
        # the key is free again: a new connection's first write goes in
        syn = rec(KEY, S.SYN_SENT, 1)
        assert await store.write([(syn, LONG_TTL)], clean=True) == [WriteResult(True, syn)]

    run(body())


@pytest.mark.parametrize("clean", [False, True], ids=["dirty", "clean"])
def test_ttl_expires(store: Store, run: Run, clean: bool) -> None:
    async def body() -> None:
        short = rec(b"short", S.SYN_SENT, 1)
        long = rec(b"long", S.ESTABLISHED, 3)
        await store.write([(short, 100), (long, LONG_TTL)], clean=clean)
        assert await store.get([short.key, long.key]) == [short, long]
        await asyncio.sleep(0.35)
        assert await store.get([short.key, long.key]) == [None, long]
        assert (await store.snapshot())[0] == [long]
        # an expired flow is a new flow for a clean write
        again = rec(b"short", S.SYN_SENT, 1, writer="fw9")
        assert await store.write([(again, LONG_TTL)], clean=True) == [WriteResult(True, again)]

    run(body())


# ------------------------------------------------------------------------------- snapshot, feed
def test_snapshot_then_feed_returns_exactly_the_later_writes(store: Store, run: Run) -> None:
    async def body() -> None:
        empty, position = await store.snapshot()
        assert empty == []
        before = [rec(b"f%d" % i, S.SYN_SENT, 1) for i in range(5)]
        await store.write([(r, LONG_TTL) for r in before], clean=True)
        bumped = rec(b"f0", S.SYN_RECV, 2)
        await store.write([(bumped, LONG_TTL)], clean=True)
        records, position = await store.snapshot()
        live = {r.key: r for r in [*before, bumped]}
        assert sorted(records, key=lambda r: r.key) == sorted(live.values(), key=lambda r: r.key)
        after = [
            rec(b"f1", S.SYN_RECV, 2),
            rec(b"f9", S.SYN_SENT, 1),
            rec(b"f2", S.REMOVED, 2),
        ]
        for r in after:
            await store.write([(r, LONG_TTL)], clean=True)
        got, position2 = await store.feed(position, 0, 100)
        assert got == after
        assert pos(position2) > pos(position)
        assert await store.feed(position2, 0, 100) == ([], position2)

    run(body())


def test_feed_in_order_with_growing_position_and_count(store: Store, run: Run) -> None:
    async def body() -> None:
        position = await _tail(store)
        written = [rec(b"k%d" % (i % 4), S.ESTABLISHED, i + 1) for i in range(10)]
        for r in written:
            await store.write([(r, LONG_TTL)], clean=False)
        chunks: list[list[FlowRecord]] = []
        for _ in range(10):
            got, nxt = await store.feed(position, 0, 3)
            if not got:
                assert nxt == position
                break
            assert len(got) <= 3
            assert pos(nxt) > pos(position)
            chunks.append(got)
            position = nxt
        assert [len(c) for c in chunks] == [3, 3, 3, 1]
        assert [r for c in chunks for r in c] == written

    run(body())


def test_feed_block_waits_when_nothing_comes(store: Store, run: Run) -> None:
    async def body() -> None:
        position = await _tail(store)
        t0 = time.monotonic()
        assert await store.feed(position, 300, 10) == ([], position)
        assert 0.25 <= time.monotonic() - t0 < 3.0

    run(body())


def test_feed_block_returns_early_on_a_concurrent_write(store: Store, run: Run) -> None:
    r = rec(KEY, S.ESTABLISHED, 3)

    async def writer() -> None:
        await asyncio.sleep(0.2)
        await store.write([(r, LONG_TTL)], clean=True)

    async def body() -> None:
        position = await _tail(store)
        task = asyncio.create_task(writer())
        t0 = time.monotonic()
        # longer than the Redis client's socket timeout (1 s): the wait must not fail as a timeout
        got, _ = await asyncio.wait_for(store.feed(position, 5000, 10), 10)
        elapsed = time.monotonic() - t0
        await task
        assert got == [r]
        assert elapsed < 3.0

    run(body())


def test_feed_block_is_not_ended_by_a_refused_write(store: Store, run: Run) -> None:
    held = rec(KEY, S.ESTABLISHED, 3)
    later = rec(KEY, S.FIN_WAIT, 4)

    async def writer() -> None:
        await asyncio.sleep(0.1)
        [refused] = await store.write([(rec(KEY, S.SYN_RECV, 2), LONG_TTL)], clean=True)
        assert not refused.applied
        await asyncio.sleep(0.2)
        await store.write([(later, LONG_TTL)], clean=True)

    async def body() -> None:
        await store.write([(held, LONG_TTL)], clean=True)
        position = await _tail(store)
        task = asyncio.create_task(writer())
        got, _ = await asyncio.wait_for(store.feed(position, 3000, 10), 10)
        await task
        assert got == [later]  # the refused write added nothing to wake up for

    run(body())


def test_feed_waits_longer_than_the_socket_timeout(store: Store, run: Run) -> None:
    async def body() -> None:
        position = await _tail(store)
        t0 = time.monotonic()
        assert await store.feed(position, 1500, 10) == ([], position)
        assert 1.4 <= time.monotonic() - t0 < 4.0

    run(body())


# ---------------------------------------------------------------------------------------- batches
def test_clean_batch_one_result_per_record_in_order(store: Store, run: Run) -> None:
    async def body() -> None:
        keys = [b"b%03d" % i for i in range(100)]
        held = {k: rec(k, S.ESTABLISHED, 3, writer="fw1") for k in keys[::2]}
        await store.write([(r, LONG_TTL) for r in held.values()], clean=True)
        position = await _tail(store)
        batch = [rec(k, S.SYN_RECV, 2, writer="fw2") for k in keys]
        # the same flow several times in one call: each write sees the one before
        batch += [rec(b"dup", S.SYN_SENT, 1), rec(b"dup", S.SYN_RECV, 2), rec(b"dup", S.SYN_SENT, 1)]
        results = await store.write([(r, LONG_TTL) for r in batch], clean=True)
        assert len(results) == len(batch)
        for r, result in zip(batch, results, strict=True):
            assert result.current is not None
            assert result.current.key == r.key
        expected_applied = [k not in held for k in keys] + [True, True, False]
        assert [res.applied for res in results] == expected_applied
        for k, res in zip(keys, results, strict=False):
            assert res.current == (held[k] if k in held else rec(k, S.SYN_RECV, 2, writer="fw2"))
        assert results[-1].current == rec(b"dup", S.SYN_RECV, 2)
        applied = [r for r, ok in zip(batch, expected_applied, strict=True) if ok]
        assert (await _feed_all(store, position))[0] == applied

    run(body())


def test_dirty_batch_one_result_per_record_in_order(store: Store, run: Run) -> None:
    async def body() -> None:
        position = await _tail(store)
        batch = [rec(b"d%03d" % (i % 40), S.ESTABLISHED, i) for i in range(200)]
        results = await store.write([(r, LONG_TTL) for r in batch], clean=False)
        assert results == [WriteResult(True, r) for r in batch]
        assert (await _feed_all(store, position))[0] == batch
        assert await store.get([fk(b"d000"), fk(b"d039")]) == [batch[160], batch[199]]

    run(body())


# ------------------------------------------------------------------------------------ binary keys
BINARY_KEYS = [  # flow keys (13 or 37 bytes, the protocol first) with awkward bytes inside
    fk(b":"),
    fk(b""),
    fk(b"\x00:\x00"),
    fk(b"::::"),
    fk(b"*?[]"),  # glob characters: SCAN patterns must not trip on them
    fk(b"fwc:f:nested"),
    b"\x06" + bytes(range(220, 256)),  # IPv6-sized, high bytes
    KEY,
    b"\x06" + bytes(range(36)),  # IPv6-sized
    fk("é".encode() * 6),
]


@pytest.mark.parametrize("clean", [False, True], ids=["dirty", "clean"])
def test_binary_flow_keys_round_trip(store: Store, run: Run, clean: bool) -> None:
    async def body() -> None:
        position = await _tail(store)
        records = [rec(k, S.ESTABLISHED, 3, writer="fw:1") for k in BINARY_KEYS]
        results = await store.write([(r, LONG_TTL) for r in records], clean=clean)
        assert [res.current for res in results] == records
        assert await store.get(BINARY_KEYS) == records
        snap, _ = await store.snapshot()
        assert sorted(snap, key=lambda r: r.key) == sorted(records, key=lambda r: r.key)
        assert (await _feed_all(store, position))[0] == records
        gone = rec(b"\x00:\x00", S.REMOVED, 4)
        await store.write([(gone, LONG_TTL)], clean=clean)
        assert await store.get([fk(b"\x00:\x00"), fk(b":"), fk(b"")]) == [None, records[0], records[1]]

    run(body())


# ------------------------------------------------------------------------------- redis: failures
def _calls(s: RedisStore) -> Iterator[tuple[str, Callable[[], Awaitable[object]]]]:
    r = rec(KEY, S.ESTABLISHED, 3)
    yield "write dirty", lambda: s.write([(r, LONG_TTL)], clean=False)
    yield "write clean", lambda: s.write([(r, LONG_TTL)], clean=True)
    yield "get", lambda: s.get([KEY])
    yield "snapshot", s.snapshot
    yield "feed", lambda: s.feed("0-0", 0, 10)
    yield "feed blocking", lambda: s.feed("0-0", 200, 10)
    yield "ping", s.ping
    yield "clear", s.clear


def _assert_store_errors(s: RedisStore) -> None:
    async def body() -> None:
        try:
            for name, call in _calls(s):
                t0 = time.monotonic()
                with pytest.raises(StoreError) as info:
                    await asyncio.wait_for(call(), 10)
                assert not isinstance(info.value, RedisError | OSError), name
                assert time.monotonic() - t0 < 5, f"{name} took too long to fail"
        finally:
            await s.close()  # closing a store that never connected is quiet

    asyncio.run(body())


def test_store_error_from_every_method_when_nothing_listens() -> None:
    _assert_store_errors(RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2))


def test_store_error_from_every_method_when_the_server_is_silent() -> None:
    # a socket that accepts connections (the kernel's backlog does) but never answers
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(512)
        port = silent.getsockname()[1]
        _assert_store_errors(RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.2))


def test_store_error_on_a_wrong_password(redis_url: str, run: Run) -> None:
    async def body() -> None:
        s = RedisStore(redis_url.replace("redis://:", "redis://:wrong", 1), timeout=0.5)
        try:
            with pytest.raises(StoreError):
                await s.ping()
        finally:
            await s.close()

    run(body())


def test_clean_writes_survive_a_script_flush(redis_url: str, run: Run) -> None:
    async def body() -> None:
        s = RedisStore(redis_url)
        admin = aioredis.Redis.from_url(redis_url)
        try:
            await s.clear()
            first = rec(KEY, S.SYN_SENT, 1)
            assert await s.write([(first, LONG_TTL)], clean=True) == [WriteResult(True, first)]
            await admin.script_flush()  # as after a restart or a failover to a fresh replica
            batch = [rec(KEY, S.SYN_RECV, 2), rec(b"other", S.SYN_SENT, 1), rec(KEY, S.SYN_SENT, 1)]
            results = await s.write([(r, LONG_TTL) for r in batch], clean=True)
            assert [res.applied for res in results] == [True, True, False]
            assert await s.get([KEY]) == [batch[0]]
        finally:
            await s.close()
            await admin.aclose()

    run(body())


def test_a_clean_write_is_one_round_trip(redis_url: str, run: Run) -> None:
    """No SCRIPT EXISTS before every pipeline (what redis-py's Script objects do): EVALSHA only."""

    async def body() -> None:
        s = RedisStore(redis_url)
        admin = aioredis.Redis.from_url(redis_url)
        try:
            await s.clear()
            await s.ping()  # loads the script
            await admin.config_resetstat()
            for version in range(1, 21):
                await s.write([(rec(KEY, S.ESTABLISHED, version), LONG_TTL)], clean=True)
            stats = await admin.info("commandstats")
            assert "cmdstat_script|exists" not in stats
            assert "cmdstat_script" not in stats
            assert stats["cmdstat_evalsha"]["calls"] == 20
        finally:
            await s.close()
            await admin.aclose()

    run(body())
