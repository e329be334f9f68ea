"""``[sync] follow = "backup"`` on a real redis-server: each writer's own stream and index, the
bulk load of a writer's flows, and an instance's shared table following only its ring
predecessor, re-targeting when the membership changes without losing a change."""

from __future__ import annotations

import asyncio
import time

import redis

from fwcluster.core.firewall import Firewall
from fwcluster.core.rules import Action, RuleSet
from fwcluster.core.timeouts import Timeouts
from fwcluster.engine.engine import Engine, EnginePolicy
from fwcluster.statetable.redis_store import RedisStore
from fwcluster.statetable.settings import SyncSettings
from fwcluster.statetable.shared import PUBLISHED, SharedTable

from .helpers import LONG_TTL, Run, S, fk, rec


def _flush(url: str) -> None:
    r = redis.Redis.from_url(url)
    r.flushall()
    r.close()


def _store(url: str) -> RedisStore:
    s = RedisStore(url, timeout=2.0)
    s.per_writer = True
    return s


def test_each_writer_has_its_own_stream_and_index(redis_url: str, run: Run) -> None:
    _flush(redis_url)
    a, b = _store(redis_url), _store(redis_url)
    try:
        run(
            a.write(
                [
                    (rec(b"a1", S.ESTABLISHED, 1, "a"), LONG_TTL),
                    (rec(b"a2", S.ESTABLISHED, 1, "a"), LONG_TTL),
                ],
                False,
            )
        )
        run(b.write([(rec(b"b1", S.ESTABLISHED, 1, "b"), LONG_TTL)], True))
        got, pos = run(a.follow({"b": "0-0"}, 10, 100))
        assert [r.key for r in got] == [fk(b"b1")] and pos["b"] != "0-0"
        got, _ = run(b.follow({"a": "0-0"}, 10, 100))
        assert [r.key for r in got] == [fk(b"a1"), fk(b"a2")]
        assert {r.key for r in run(b.owned("a"))} == {fk(b"a1"), fk(b"a2")}
        # removal takes the key out of the index (dirty and clean)
        run(a.write([(rec(b"a1", S.REMOVED, 2, "a"), LONG_TTL)], False))
        run(b.write([(rec(b"b1", S.REMOVED, 2, "b"), LONG_TTL)], True))
        assert {r.key for r in run(b.owned("a"))} == {fk(b"a2")}
        assert run(a.owned("b")) == []
        # the seed's single feed is not written in this mode
        r = redis.Redis.from_url(redis_url)
        assert r.exists("fwc:feed") == 0
        assert r.pttl("fwc:o:a") > 0  # the index expires with its newest entry
        r.close()
    finally:
        run(a.close())
        run(b.close())


def test_expired_flows_leave_the_index(redis_url: str, run: Run) -> None:
    _flush(redis_url)
    a = _store(redis_url)
    try:
        run(
            a.write(
                [(rec(b"short", S.ESTABLISHED, 1, "a"), 50), (rec(b"long", S.ESTABLISHED, 1, "a"), LONG_TTL)],
                False,
            )
        )
        time.sleep(0.1)
        assert {r.key for r in run(a.owned("a"))} == {fk(b"long")}  # skipped on read
        run(a.write([(rec(b"other", S.ESTABLISHED, 1, "a"), LONG_TTL)], False))
        r = redis.Redis.from_url(redis_url)
        assert r.zcard("fwc:o:a") == 2  # pruned on the next write
        r.close()
    finally:
        run(a.close())


def _table(instance: str, url: str) -> tuple[SharedTable, Engine]:
    fw = Firewall(RuleSet((), Action.ACCEPT), Timeouts(), 10_000)
    settings = SyncSettings()
    engine = Engine(fw, EnginePolicy(publish=PUBLISHED[settings.level]))
    return SharedTable(instance, engine, settings, _store(url)), engine


def test_a_backup_follows_its_predecessor_and_retargets(redis_url: str, run: Run) -> None:
    _flush(redis_url)
    admin = redis.Redis.from_url(redis_url)
    admin.hset("fwc:members", mapping={"a": "active", "b": "active", "c": "active"})
    writers = {i: _store(redis_url) for i in "ac"}

    async def scenario() -> None:
        table, engine = _table("b", redis_url)
        await table.start()
        try:
            await writers["a"].write([(rec(b"a1", S.ESTABLISHED, 1, "a"), LONG_TTL)], False)
            await writers["c"].write([(rec(b"c1", S.ESTABLISHED, 1, "c"), LONG_TTL)], False)
            for _ in range(200):  # b backs up a (the ring a -> b -> c -> a)
                if table.following == ["a"] and table.counters.feed_applied >= 1:
                    break
                await asyncio.sleep(0.02)
            assert table.following == ["a"]
            keys = {f[0] for f in engine.flows(time.monotonic())}
            assert fk(b"a1") in keys and fk(b"c1") not in keys
            applied = table.counters.feed_applied
            # a fails: the ring is b -> c -> b; b now backs up c and loads c's flows first
            admin.hset("fwc:members", "a", "failed")
            for _ in range(200):
                if table.following == ["c"]:
                    break
                await asyncio.sleep(0.02)
            assert table.following == ["c"]
            assert table.counters.bulk_loaded >= 1
            assert fk(b"c1") in {f[0] for f in engine.flows(time.monotonic())}
            await writers["c"].write([(rec(b"c2", S.ESTABLISHED, 1, "c"), LONG_TTL)], False)
            await writers["a"].write([(rec(b"a2", S.ESTABLISHED, 1, "a"), LONG_TTL)], False)
            for _ in range(200):
                if fk(b"c2") in {f[0] for f in engine.flows(time.monotonic())}:
                    break
                await asyncio.sleep(0.02)
            keys = {f[0] for f in engine.flows(time.monotonic())}
            assert fk(b"c2") in keys and fk(b"a2") not in keys
            assert table.counters.feed_applied == applied + 1
        finally:
            await table.stop()
            for w in writers.values():
                await w.close()

    run(scenario())
    admin.close()


def test_bad_entries_in_a_writers_stream_are_skipped_and_counted(redis_url: str, run: Run) -> None:
    _flush(redis_url)
    admin = redis.Redis.from_url(redis_url)
    admin.xadd("fwc:feed:a", {"foo": "bar"})
    admin.xadd("fwc:feed:a", {"k": fk(b"x"), "v": b"junk"})
    a, b = _store(redis_url), _store(redis_url)
    try:
        run(a.write([(rec(b"good", S.ESTABLISHED, 1, "a"), LONG_TTL)], False))
        got, pos = run(b.follow({"a": "0-0"}, 10, 100))
        assert [r.key for r in got] == [fk(b"good")] and pos["a"] != "0-0"
        assert b.bad_records.by_source["feed"] == 2
    finally:
        run(a.close())
        run(b.close())
        admin.close()


def test_a_membership_that_cannot_be_read_is_none_and_counted(redis_url: str, run: Run) -> None:
    """A key of another type where the membership should be: no ring (nothing followed), counted;
    not an outage."""
    _flush(redis_url)
    admin = redis.Redis.from_url(redis_url)
    admin.set("fwc:members", "junk")
    a = _store(redis_url)
    try:
        assert run(a.members()) == {}
        assert a.bad_records.by_source["members"] == 1
        run(a.ping())  # the store is up
    finally:
        run(a.close())
        admin.delete("fwc:members")
        admin.close()
