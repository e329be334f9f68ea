"""Heartbeats against a real redis-server: beats from their own thread, withheld when the event loop
is wedged, removed on a clean stop."""

from __future__ import annotations

import asyncio
import time

import redis

from fwcluster.instance.heartbeat import HB_PREFIX, INSTANCES, Heartbeat, parse_beat

from .conftest import Run


def test_beats_while_the_loop_is_busy_and_deregisters_on_stop(redis_url: str, run: Run) -> None:
    r = redis.Redis.from_url(redis_url)
    r.delete(HB_PREFIX + b"hb1")

    async def scenario() -> tuple[bytes | None, int]:
        hb = Heartbeat(redis_url, "hb1", interval_ms=20, ttl_ms=100, stall_ms=1000)
        hb.start()
        # the loop is blocked for 300 ms (3 TTLs): the thread keeps the beat alive meanwhile
        time.sleep(0.3)  # blocks the loop on purpose
        seen = r.get(HB_PREFIX + b"hb1")
        sent = hb.sent
        await hb.stop()
        return seen, sent

    seen, sent = run(scenario())
    assert seen is not None and sent >= 5
    pid, at = parse_beat(seen)
    assert pid > 0 and abs(at - time.time()) < 5
    assert r.get(HB_PREFIX + b"hb1") is None
    assert not r.sismember(INSTANCES, "hb1")


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
