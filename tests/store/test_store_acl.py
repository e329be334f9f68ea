"""The store's users per role (issue 10, finding 2) on a real redis-server: an instance's user
does all an instance does (writes dirty and clean, look-ups, snapshot, feed, its heartbeat and
registration) and nothing else: it cannot take the lease, forge another instance's heartbeat or
registration, touch the membership, or get round that with a script; the master's user leads,
reads heartbeats and registrations and cannot write a flow or the feed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from fwcluster.control.lease import LeaderLease
from fwcluster.core.states import FlowState
from fwcluster.statetable.record import FlowRecord
from fwcluster.statetable.redis_store import RedisStore

from .helpers import Run, store_with_users

KEY = b"\x06" + bytes(range(1, 13))  # a 13-byte IPv4 TCP flow key


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, str]]:
    """A private redis-server with the users the testbed makes; their URLs by name."""
    with store_with_users("fw1", "fw2") as urls:
        yield urls


def _as(url: str) -> Any:
    return redis.Redis.from_url(url, socket_timeout=5.0)


def _refused(call: Any) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        call()


def test_an_instance_does_what_an_instance_does(users: dict[str, str], run: Run) -> None:
    store = RedisStore(users["inst-fw1"], timeout=2.0)
    rec = FlowRecord(KEY, FlowState.ESTABLISHED, True, 3, 6, "fw1")
    try:
        run(store.ping())  # loads the clean-write script
        (dirty,) = run(store.write([(rec, 60_000)], clean=False))
        assert dirty.applied
        newer = FlowRecord(KEY, FlowState.FIN_WAIT, True, 4, 6, "fw1")
        (clean,) = run(store.write([(newer, 60_000)], clean=True))
        assert clean.applied
        assert run(store.get([KEY])) == [newer]
        flows, position = run(store.snapshot())
        assert newer in flows
        assert run(store.feed("0", 10, 100))[0]  # the feed, from its start
        assert position
    finally:
        run(store.close())
    r = _as(users["inst-fw1"])
    assert r.set("fwc:hb:fw1", "123:456", px=1000) and r.set("fwc:reg:fw1", "123:456")
    assert r.mget(["fwc:hb:fw1", "fwc:reg:fw1"]) == [b"123:456", b"123:456"]
    assert r.delete("fwc:reg:fw1", "fwc:hb:fw1") == 2
    r.close()


def test_an_instance_cannot_lead_forge_another_or_touch_membership(users: dict[str, str]) -> None:
    r = _as(users["inst-fw1"])
    _refused(lambda: r.set("fwc:leader", "fw1:999", px=1000))
    _refused(lambda: r.set("fwc:epoch", "999"))
    _refused(lambda: r.delete("fwc:leader"))
    _refused(lambda: r.set("fwc:hb:fw2", "1:1", px=1000))  # another instance's heartbeat
    _refused(lambda: r.set("fwc:reg:fw2", "1:1"))
    _refused(lambda: r.delete("fwc:hb:fw2"))
    _refused(lambda: r.hset("fwc:members", "fw2", "failed"))
    _refused(lambda: r.get("fwc:leader"))
    for command in (("FLUSHALL",), ("CONFIG", "SET", "maxmemory", "0"), ("ACL", "LIST"), ("KEYS", "*")):
        _refused(lambda c=command: r.execute_command(*c))  # type: ignore[misc]
    _refused(lambda: r.eval("return 1", 0))
    # A script it loads runs with its rights: no way round them.
    sha = r.script_load("return redis.call('SET', KEYS[1], 'fw1:999')")
    _refused(lambda: r.evalsha(sha, 1, "fwc:leader"))
    _refused(lambda: r.evalsha(sha, 1, "fwc:hb:fw2"))
    r.close()
    admin = _as(users["admin"])
    assert admin.get("fwc:leader") is None and admin.get("fwc:hb:fw2") is None
    admin.close()


def test_a_master_leads_and_watches_but_writes_no_flow(users: dict[str, str], run: Run) -> None:
    inst = _as(users["inst-fw2"])
    inst.set("fwc:hb:fw2", "7:8", px=5000)
    inst.set("fwc:reg:fw2", "7:8")
    inst.close()

    async def lead() -> int | None:
        r = aioredis.Redis.from_url(users["master"], socket_timeout=2.0)
        try:
            lease = LeaderLease(r, "m1", 1000)
            epoch = await lease.acquire_or_renew()
            assert await lease.acquire_or_renew() == epoch  # renewed
            assert [k async for k in r.scan_iter(match=b"fwc:reg:*")] == [b"fwc:reg:fw2"]
            assert await r.mget([b"fwc:hb:fw2", b"fwc:reg:fw2"]) == [b"7:8", b"7:8"]
            await r.hset(b"fwc:members", b"fw2", b"active")
            assert await r.hgetall(b"fwc:members") == {b"fw2": b"active"}
            await r.hdel(b"fwc:members", b"fw2")
            return epoch
        finally:
            await r.aclose()

    assert run(lead()) == 1
    r = _as(users["master"])
    _refused(lambda: r.set(b"fwc:f:" + KEY, b"x"))
    _refused(lambda: r.xadd("fwc:feed", {"k": KEY, "v": b"x"}))
    _refused(lambda: r.set("fwc:hb:fw2", "1:1", px=1000))  # heartbeats: read only
    _refused(lambda: r.delete("fwc:reg:fw2"))
    _refused(lambda: r.execute_command("FLUSHALL"))
    r.close()


def test_the_takeover_key_is_the_master_s_to_write_and_the_instances_to_read(users: dict[str, str]) -> None:
    """After a failover the leader sets ``fwc:takeover``; every instance's heartbeat reads it
    (Engine.pickup). An instance cannot set it (to open the pickup at will) nor remove it."""
    master = _as(users["master"])
    assert master.set("fwc:takeover", "1:fw1", px=5000)
    master.close()
    r = _as(users["inst-fw2"])
    assert r.get("fwc:takeover") == b"1:fw1"
    _refused(lambda: r.set("fwc:takeover", "9:fw9", px=60_000))
    _refused(lambda: r.delete("fwc:takeover"))
    r.close()


def test_an_instance_writes_its_own_stream_and_index_and_reads_the_others(
    users: dict[str, str], run: Run
) -> None:
    """follow = "backup": fw1 writes fwc:feed:fw1 and fwc:o:fw1 (dirty and clean), reads fw2's
    stream and index and the membership, and can write none of those."""
    store = RedisStore(users["inst-fw1"], timeout=2.0)
    store.per_writer = True
    key2 = KEY[:-1] + b"\x77"
    try:
        run(store.ping())
        (dirty,) = run(
            store.write([(FlowRecord(KEY, FlowState.ESTABLISHED, True, 3, 6, "fw1"), 60_000)], False)
        )
        (clean,) = run(
            store.write([(FlowRecord(key2, FlowState.ESTABLISHED, True, 1, 6, "fw1"), 60_000)], True)
        )
        assert dirty.refused is None and clean.refused is None and dirty.applied and clean.applied
        assert {r.key for r in run(store.owned("fw1"))} == {KEY, key2}
        assert run(store.position("fw2")) == "0-0"  # reading another's stream is allowed
        assert run(store.owned("fw2")) == []
        assert run(store.members()) == {}
        records, _ = run(store.follow({"fw2": "0-0"}, 10, 10))
        assert records == []
    finally:
        run(store.close())
    r = _as(users["inst-fw1"])
    _refused(lambda: r.xadd("fwc:feed:fw2", {"k": KEY, "v": b"x"}))
    _refused(lambda: r.zadd("fwc:o:fw2", {KEY: 1}))
    _refused(lambda: r.delete("fwc:o:fw2"))
    _refused(lambda: r.hset("fwc:members", "fw1", "active"))
    r.close()
