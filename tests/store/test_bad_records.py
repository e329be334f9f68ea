"""Hostile records in a real redis-server do not break sharing (issue 10, findings 1 and 8).

Each test puts bad records of every kind into the store with an admin connection (junk values,
``3:1:5:6``, negative and huge versions, a bad protocol, an empty key, keys of the wrong length,
a writer that is no UTF-8, feed entries with the wrong fields, a key of another type) and shows
that an instance's shared table (a real ``SharedTable`` over a real ``RedisStore`` and engine)
skips and counts them (``bad_records`` by source) and keeps sharing: a good record written after
the bad ones arrives, sync writes still confirm, the expiry sweep still runs, every task is alive
and no task counted an error. Also: a redis-server under ``maxmemory`` with ``noeviction``
refuses writes with OOM; the instance counts them and treats the held packet as a failed write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
from scapy.layers.inet import IP, TCP

from fwcluster.core.decision import Reason
from fwcluster.core.firewall import Firewall
from fwcluster.core.packet import KEY4
from fwcluster.core.rules import PROTO_TCP, Action, RuleSet
from fwcluster.core.timeouts import Timeouts
from fwcluster.engine.engine import Engine, EnginePolicy
from fwcluster.statetable.record import FlowRecord
from fwcluster.statetable.redis_store import FEED, PREFIX, RedisStore
from fwcluster.statetable.settings import Access, Confirm, Follow, SyncLevel, SyncSettings
from fwcluster.statetable.shared import PUBLISHED, SharedTable

from .helpers import LONG_TTL, Run, S

pytestmark = pytest.mark.timeout(120)

CLIENT, SERVER = "198.18.0.1", "198.19.0.2"
BOUND = 10.0  # seconds a condition may take on a busy machine


def key(port: int) -> bytes:
    return KEY4.pack(PROTO_TCP, bytes([198, 18, 0, 1]), port, bytes([198, 19, 0, 2]), 80)


def packet(port: int, flags: str, seq: int = 1000) -> bytes:
    return bytes(IP(src=CLIENT, dst=SERVER) / TCP(sport=port, dport=80, flags=flags, seq=seq))


GOOD_KEY = key(40000)
# Bad store values, each under a flow key of its own (the key is fine, the value is not).
BAD_VALUES: dict[str, bytes] = {
    "junk": b"junk",
    "four fields": b"3:1:5:6",
    "negative version": b"3:1:-1:6:fw9",
    "huge version": b"3:1:99999999999999999999:6:fw9",
    "bad proto": b"3:1:3:99:fw9",
    "proto not the key's": b"3:1:3:17:fw9",
    "state unknown": b"12:1:3:6:fw9",
    "bad UTF-8 writer": b"3:1:3:6:\xff\xfe",
    "empty writer": b"3:1:3:6:",
}
# Bad flow keys, each with a value that would be fine.
BAD_KEYS: dict[str, bytes] = {
    "empty key": b"",
    "12-byte key": GOOD_KEY[:12],
    "14-byte key": GOOD_KEY + b"\x00",
    "bad proto byte": b"\x63" + GOOD_KEY[1:],
}
BAD_RECORDS = [(key(41000 + i), v) for i, v in enumerate(BAD_VALUES.values())] + [
    (k, b"3:1:3:%d:fw9" % (k[0] if k else 6)) for k in BAD_KEYS.values()
]
# Feed entries whose fields are not ``k <key> v <value>``.
BAD_FIELDS: list[dict[bytes, bytes]] = [
    {b"foo": b"bar"},
    {b"k": GOOD_KEY},
    {b"v": b"3:1:3:6:fw9", b"k": GOOD_KEY},  # the right fields in the wrong order
    {b"k": GOOD_KEY, b"v": b"3:1:3:6:fw9", b"x": b"y"},
]


def settings(confirm: Confirm = Confirm.SYNC) -> SyncSettings:
    return SyncSettings(SyncLevel.FULL, Access.CLEAN, confirm, Follow.ALL)  # the one feed: fwc:feed


def new_engine(sync: SyncSettings, max_flows: int = 1000) -> Engine:
    fw = Firewall(RuleSet(default=Action.ACCEPT), Timeouts(), max_flows, windows=False)
    policy = EnginePolicy(
        publish=PUBLISHED[sync.level], confirm=sync.confirm == Confirm.SYNC, hold_timeout=2.0
    )
    return Engine(fw, policy, now=time.monotonic())


async def wait_for(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {BOUND} s: {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def shared_table(
    url: str, name: str = "fw1", sync: SyncSettings | None = None, max_flows: int = 1000
) -> AsyncIterator[SharedTable]:
    """A started instance-side shared table (engine + RedisStore); stopped afterwards."""
    sync = sync or settings()
    table = SharedTable(name, new_engine(sync, max_flows), sync, RedisStore(url))
    await table.start()
    try:
        yield table
    finally:
        await table.stop()


def assert_healthy(table: SharedTable) -> None:
    assert table.store_up
    assert table._tasks and all(not t.done() for t in table._tasks), "a task ended"
    assert not any(table.task_errors.counts.values()), table.task_errors.counts
    assert table.counters.outages == 0


async def held_write_confirms(table: SharedTable, port: int) -> None:
    """A SYN through the engine (sync confirmation holds it) is confirmed by the store."""
    engine = table.engine
    pid = 1000 + port
    engine.packet(pid, packet(port, "S"), time.monotonic())
    assert pid in engine.held
    table.submit()
    await wait_for(lambda: pid in engine.accepts, f"the SYN from port {port} confirmed")
    assert engine.firewall.state_of(key(port), time.monotonic()) == S.SYN_SENT


async def admin(url: str) -> aioredis.Redis:
    r: aioredis.Redis = aioredis.Redis.from_url(url)
    await r.delete(FEED)
    keys = [k async for k in r.scan_iter(match=PREFIX + b"*")]
    if keys:
        await r.delete(*keys)
    return r


def good(port: int, writer: str = "fw9", state: S = S.ESTABLISHED, version: int = 3) -> FlowRecord:
    return FlowRecord(key(port), state, True, version, PROTO_TCP, writer)


# ----------------------------------------------------------------------------------------- feed
def test_bad_feed_entries_are_skipped_and_the_feed_goes_on(redis_url: str, run: Run) -> None:
    async def body() -> None:
        r = await admin(redis_url)
        other = RedisStore(redis_url)
        try:
            async with shared_table(redis_url) as table:
                for k, v in BAD_RECORDS:
                    await r.xadd(FEED, {b"k": k, b"v": v})
                for fields in BAD_FIELDS:
                    await r.xadd(FEED, fields)  # type: ignore[arg-type]
                await other.write([(good(40000), LONG_TTL)], clean=True)  # after the bad ones
                engine = table.engine
                await wait_for(
                    lambda: engine.firewall.state_of(GOOD_KEY, time.monotonic()) == S.ESTABLISHED,
                    "the good record arrived through the feed",
                )
                bad = table.stats()["bad_records"]
                assert isinstance(bad, dict)
                assert bad["feed"] == len(BAD_RECORDS) + len(BAD_FIELDS), bad
                assert len(engine) == 1  # nothing of the bad ones got in
                await held_write_confirms(table, 40001)
                engine.expire(time.monotonic() + 10**6, 10_000)  # the sweep runs over what got in
                assert len(engine) == 0
                await other.write([(good(40002), LONG_TTL)], clean=True)  # and the feed still follows
                await wait_for(
                    lambda: engine.firewall.state_of(key(40002), time.monotonic()) is not None, "feed"
                )
                assert_healthy(table)
        finally:
            await other.close()
            await r.aclose()

    run(body())


# -------------------------------------------------------------------------------- values: joins
def test_a_join_over_bad_values_loads_the_good_ones(redis_url: str, run: Run) -> None:
    async def body() -> None:
        r = await admin(redis_url)
        try:
            for k, v in BAD_RECORDS:
                await r.set(PREFIX + k, v)
            await r.hset(PREFIX + key(42000), b"a", b"b")  # a key of another type
            await r.set(PREFIX + GOOD_KEY, good(40000).encode())
            async with shared_table(redis_url) as table:
                engine = table.engine
                assert engine.firewall.state_of(GOOD_KEY, time.monotonic()) == S.ESTABLISHED
                assert len(engine) == 1
                bad = table.stats()["bad_records"]
                assert isinstance(bad, dict)
                assert bad["load"] == len(BAD_RECORDS), bad
                engine.expire(time.monotonic() + 10**6, 10_000)  # the sweep runs
                assert len(engine) == 0
                await held_write_confirms(table, 40001)
                assert_healthy(table)
        finally:
            await r.aclose()

    run(body())


def test_a_join_respects_max_flows(redis_url: str, run: Run) -> None:
    async def body() -> None:
        r = await admin(redis_url)
        try:
            for port in range(40000, 40020):
                await r.set(PREFIX + key(port), good(port).encode())
            async with shared_table(redis_url, max_flows=5) as table:
                engine = table.engine
                assert len(engine) == 5
                assert engine.counters.flows_refused["load"] == 15
                for port in range(41000, 41010):  # the feed cannot grow it either
                    await r.xadd(FEED, {b"k": key(port), b"v": good(port).encode()})
                await wait_for(
                    lambda: engine.counters.flows_refused["feed"] == 10, "10 feed installs refused"
                )
                assert len(engine) == 5
                assert_healthy(table)
        finally:
            await r.aclose()

    run(body())


# ------------------------------------------------------------------------------------- look-ups
def test_a_look_up_of_a_bad_value_finds_nothing(redis_url: str, run: Run) -> None:
    async def body() -> None:
        r = await admin(redis_url)
        try:
            async with shared_table(redis_url) as table:
                for k, v in BAD_RECORDS:
                    await r.set(PREFIX + k, v)
                engine = table.engine
                port = 41000  # its value is junk: an ACK there is held, looked up, then dropped
                engine.packet(7, packet(port, "A", 1001), time.monotonic())
                assert 7 in engine.held
                table.submit()
                await wait_for(lambda: 7 in engine.drops, "the held ACK got its verdict")
                assert engine.counters.by_reason[Reason.NO_FLOW] == 1
                assert table.store is not None
                assert await table.store.get([k for k, _ in BAD_RECORDS]) == [None] * len(BAD_RECORDS)
                bad = table.stats()["bad_records"]
                assert isinstance(bad, dict)
                assert bad["lookup"] == 1 + len(BAD_RECORDS)  # the held ACK's, then each bad one
                assert_healthy(table)
        finally:
            await r.aclose()

    run(body())


# -------------------------------------------------------------------------------- clean writes
def test_a_clean_write_replaces_a_value_that_is_no_record(redis_url: str, run: Run) -> None:
    """The clean-write script treats junk (or a key of another type) as no record: replaced."""

    async def body() -> None:
        r = await admin(redis_url)
        store = RedisStore(redis_url)
        try:
            for i, v in enumerate(BAD_VALUES.values()):
                await r.set(PREFIX + key(43000 + i), v)
            await r.hset(PREFIX + key(43100), b"a", b"b")
            await r.set(PREFIX + key(43101), b"3:1:0003:6:fw9")  # not the canonical encoding
            await r.set(PREFIX + key(43102), b"11:1:9:6:fw9")  # a UDP state on a TCP key
            ports = [43000 + i for i in range(len(BAD_VALUES))] + [43100, 43101, 43102]
            records = [good(p, writer="fw1", state=S.SYN_SENT, version=1) for p in ports]
            results = await store.write([(rec, LONG_TTL) for rec in records], clean=True)
            assert [(res.applied, res.current, res.refused) for res in results] == [
                (True, rec, None) for rec in records
            ]
            assert await store.get([rec.key for rec in records]) == records
            assert store.bad_records.by_source["write-answer"] == 0
        finally:
            await store.close()
            await r.aclose()

    run(body())


def test_a_sync_write_over_junk_confirms_and_the_store_stays_up(redis_url: str, run: Run) -> None:
    async def body() -> None:
        r = await admin(redis_url)
        try:
            async with shared_table(redis_url) as table:
                for port, v in ((44000, b"junk"), (44001, b"3:1:5:6")):
                    await r.set(PREFIX + key(port), v)
                    await held_write_confirms(table, port)
                    assert await r.get(PREFIX + key(port)) == good(port, "fw1", S.SYN_SENT, 1).encode()
                await asyncio.sleep(0.6)  # a health round
                assert_healthy(table)
        finally:
            await r.aclose()

    run(body())


def test_a_write_answer_that_is_no_record_is_counted(redis_url: str) -> None:
    """What a clean write reports the store holds goes through the decoder too."""
    store = RedisStore(redis_url)
    rec = good(45000, writer="fw1")
    answers: list[Any] = [[0, b"junk"], [2, b"3:1:-1:6:fw1"], [0], b"what", [7, b"3:1:3:6:fw9"]]
    for answer in answers:
        result = store._answer(rec, answer)
        assert result.current is None
    assert store.bad_records.by_source["write-answer"] == len(answers)
    assert store._answer(rec, [0, b"3:1:9:6:fw9"]).current == good(45000, "fw9", S.ESTABLISHED, 9)


# ------------------------------------------------------------------------ maxmemory noeviction
@asynccontextmanager
async def out_of_memory(url: str) -> AsyncIterator[None]:
    """The server refuses every write with OOM (maxmemory below its use, noeviction), then not."""
    r: aioredis.Redis = aioredis.Redis.from_url(url)
    old = await r.config_get("maxmemory*")
    try:
        await r.config_set("maxmemory-policy", "noeviction")
        await r.config_set("maxmemory", 1)
        yield
    finally:
        await r.config_set("maxmemory", str(old["maxmemory"]))
        await r.config_set("maxmemory-policy", str(old["maxmemory-policy"]))
        await r.aclose()


def test_writes_refused_for_memory_are_failed_writes(redis_url: str, run: Run) -> None:
    async def body() -> None:
        await (await admin(redis_url)).aclose()
        async with shared_table(redis_url) as table:
            engine = table.engine
            async with out_of_memory(redis_url):
                assert table.store is not None
                [res] = await table.store.write([(good(46000, "fw1"), LONG_TTL)], clean=False)
                assert res.refused is not None and res.refused.startswith("OOM") and not res.applied
                engine.packet(1, packet(46001, "S"), time.monotonic())
                table.submit()
                await wait_for(lambda: 1 in engine.drops, "the held SYN dropped")
                assert engine.counters.by_reason[Reason.STORE_FAILED] == 1
                assert engine.firewall.state_of(key(46001), time.monotonic()) is None  # unchanged
                assert table.counters.refused_writes == 1
                await asyncio.sleep(0.6)  # a health round: the store is up, only full
                assert_healthy(table)
            await held_write_confirms(table, 46001)  # the retransmission, once there is room
            assert table.stats()["refused_writes"] == 1
            assert_healthy(table)

    run(body())
