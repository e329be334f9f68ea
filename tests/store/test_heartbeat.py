"""Heartbeats against a real redis-server: beats from their own thread, withheld when the event loop
is wedged, removed on a clean stop."""

from __future__ import annotations

import asyncio
import time

import redis

from fwcluster.instance.heartbeat import (
    HB_PREFIX,
    REG_PREFIX,
    TAKEOVER_KEY,
    Heartbeat,
    parse_beat,
    parse_registration,
)
from fwcluster.procutil import host_key

from .conftest import Run


def test_beats_while_the_loop_is_busy_and_deregisters_on_stop(redis_url: str, run: Run) -> None:
    r = redis.Redis.from_url(redis_url)
    r.delete(HB_PREFIX + b"hb1", "fwc:instances", "fwc:members")

    async def scenario() -> tuple[bytes | None, bytes | None, bytes | None, int]:
        hb = Heartbeat(redis_url, "hb1", interval_ms=20, ttl_ms=100, stall_ms=1000)
        await asyncio.to_thread(hb.register)
        joined = r.get(REG_PREFIX + b"hb1")  # registered before the first beat
        hb.start()
        # the loop is blocked for 300 ms (3 TTLs): the thread keeps the beat alive meanwhile
        time.sleep(0.3)  # blocks the loop on purpose
        seen = r.get(HB_PREFIX + b"hb1")
        registered = r.get(REG_PREFIX + b"hb1")
        sent = hb.sent
        await hb.stop()
        return joined, seen, registered, sent

    joined, seen, registered, sent = run(scenario())
    assert seen is not None and sent >= 5
    beat = parse_beat(seen)
    assert beat is not None and beat[0] > 0 and abs(beat[1] - time.time()) < 5
    assert joined is not None and joined == registered
    reg = parse_registration(registered)
    assert reg is not None and reg[0] == beat[0] and reg[2] == host_key()
    assert r.get(HB_PREFIX + b"hb1") is None  # a clean stop removes both keys
    assert r.get(REG_PREFIX + b"hb1") is None
    assert not r.exists("fwc:instances", "fwc:members")  # an instance writes no other control key


def test_a_wedged_loop_stops_the_beats(redis_url: str, run: Run) -> None:
    r = redis.Redis.from_url(redis_url)

    async def scenario() -> tuple[bytes | None, int]:
        hb = Heartbeat(redis_url, "hb2", interval_ms=20, ttl_ms=100, stall_ms=100)
        hb.start()
        await asyncio.sleep(0.1)
        time.sleep(0.5)  # the loop is wedged longer than stall + TTL
        seen = r.get(HB_PREFIX + b"hb2")
        skipped = hb.skipped
        await hb.stop()
        return seen, skipped

    seen, skipped = run(scenario())
    assert seen is None and skipped > 0


def test_the_beats_bring_the_news_of_a_failover(redis_url: str, run: Run) -> None:
    """While the master's takeover key exists, ``takeover`` is true (the engine then picks up
    TCP segments nobody knows); once it expires, false again."""
    r = redis.Redis.from_url(redis_url)
    r.delete(TAKEOVER_KEY)

    async def wait_for(hb: Heartbeat, value: bool) -> bool:
        deadline = time.monotonic() + 10
        while hb.takeover != value and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return hb.takeover == value

    async def scenario() -> tuple[bool, bool, bool]:
        hb = Heartbeat(redis_url, "hb3", interval_ms=20, ttl_ms=100, stall_ms=1000)
        hb.start()
        await asyncio.sleep(0.1)
        before = hb.takeover
        r.set(TAKEOVER_KEY, "1:fw1", px=300)
        during = await wait_for(hb, True)
        after = await wait_for(hb, False)
        await hb.stop()
        return before, during, after

    before, during, after = run(scenario())
    assert not before and during and after
