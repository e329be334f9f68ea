"""The leader lease on a real redis-server: one holder, renewals, takeover with a higher epoch."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from fwcluster.control.lease import EPOCH_KEY, LEADER_KEY, LeaderLease

from .helpers import Run


async def _fresh(url: str) -> aioredis.Redis:
    r = aioredis.Redis.from_url(url)
    await r.delete(LEADER_KEY, EPOCH_KEY)
    return r


def test_one_holder_renews_others_wait_then_take_over_with_a_higher_epoch(redis_url: str, run: Run) -> None:
    async def scenario() -> None:
        r = await _fresh(redis_url)
        try:
            m1, m2 = LeaderLease(r, "m1", 200), LeaderLease(r, "m2", 200)
            e1 = await m1.acquire_or_renew()
            assert e1 == 1
            assert await m2.acquire_or_renew() is None  # held by m1
            assert await m1.acquire_or_renew() == e1  # a renewal keeps the epoch
            assert await LeaderLease.holder(r) == ("m1", 1)
            time.sleep(0.3)  # m1 stops renewing: the lease runs out
            e2 = await m2.acquire_or_renew()
            assert e2 is not None and e2 > e1
            assert await m1.acquire_or_renew() is None  # the deposed leader knows it
            await m2.release()
            assert await LeaderLease.holder(r) is None
        finally:
            await r.aclose()

    run(scenario())


def test_release_only_drops_our_own_lease(redis_url: str, run: Run) -> None:
    async def scenario() -> None:
        r = await _fresh(redis_url)
        try:
            m1, m2 = LeaderLease(r, "m1", 5000), LeaderLease(r, "m2", 5000)
            assert await m1.acquire_or_renew() == 1
            await m2.release()
            assert await LeaderLease.holder(r) == ("m1", 1)
        finally:
            await r.aclose()

    run(scenario())


def test_a_new_epoch_is_above_the_floor_after_the_store_lost_its_counter(redis_url: str, run: Run) -> None:
    async def scenario() -> None:
        r = await _fresh(redis_url)  # as after a restart: counter gone
        try:
            epoch = await LeaderLease(r, "m1", 5000).acquire_or_renew(floor=7)
            assert epoch == 8
            assert int(await r.get(EPOCH_KEY)) == 8
        finally:
            await r.aclose()

    run(scenario())
