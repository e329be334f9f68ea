"""A Sentinel-managed store (real redis-server and redis-sentinel, sentinel_cluster.py): the lean
RESP connection and RedisStore find the primary through the sentinels and follow it across a
SIGKILL of the primary without being made anew; a write confirmed with ``replicas=1`` is on
the new primary; a master keeps one leader with a higher epoch and fails no healthy instance
over while the store fails over."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fwcluster.config import load_config
from fwcluster.control.master import STORE_BACK_GRACE, Master
from fwcluster.core.states import FlowState
from fwcluster.instance.heartbeat import Heartbeat
from fwcluster.statetable.record import FlowRecord
from fwcluster.statetable.redis_store import PREFIX, RedisStore
from fwcluster.statetable.resp import RespConnection, RespError
from fwcluster.statetable.store import StoreError
from fwcluster.steering import Balancer
from fwcluster.steering.spec import dump_spec

from .helpers import Run
from .sentinel_cluster import Cluster, sentinel_cluster
from .steering_memory import MemoryDriver, targets

BOUND = 40.0  # seconds: a failover on a busy host, generously


@pytest.fixture
def cluster() -> Any:
    with sentinel_cluster() as c:
        yield c


async def until_ok(step: Callable[[], Awaitable[Any]], timeout: float = BOUND) -> Any:
    """``step()``'s result once it stops failing (connection trouble while the store fails over)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await step()
        except (RespError, StoreError):
            assert time.monotonic() < deadline, "the store never came back"
            await asyncio.sleep(0.05)


def rec(name: bytes, version: int = 1) -> FlowRecord:
    return FlowRecord(b"\x06" + name.ljust(12, b"\x00"), FlowState.ESTABLISHED, True, version, 6, "fw1")


def test_resp_connection_finds_the_primary_and_follows_it_across_a_failover(
    cluster: Cluster, runner: asyncio.Runner
) -> None:
    async def scenario() -> None:
        conn = RespConnection(cluster.url, 1.0)
        try:
            (ok,) = await conn.call([("SET", "before", "1")])
            assert ok == b"OK"
            first = conn.address
            assert first[1] == cluster.primary_port()
            old = cluster.kill_primary()
            new = cluster.wait_new_primary(old)
            await until_ok(lambda: conn.call([("SET", "after", "1")]))
            assert conn.address[1] == new != old
            (role,) = await conn.call([("ROLE",)])
            assert role[0] == b"master"
        finally:
            conn.close()

    runner.run(asyncio.wait_for(scenario(), BOUND + 20))


def test_a_sentinel_url_with_a_wrong_password_is_a_resp_error(cluster: Cluster, run: Run) -> None:
    url = cluster.url.replace(cluster.password, "wrong")

    async def go() -> None:
        conn = RespConnection(url, 1.0)
        with pytest.raises(RespError, match="no sentinel named a primary"):
            await conn.call([("PING",)])

    run(go())


def test_redis_store_writes_reads_and_feed_follow_a_failover_and_a_confirmed_write_survives(
    cluster: Cluster, runner: asyncio.Runner
) -> None:
    async def go() -> None:
        store = RedisStore(cluster.url, timeout=1.0)
        try:
            await until_ok(store.ping)
            _, position = await store.feed("0-0", 0, 10)
            (res,) = await store.write([(rec(b"confirmed"), 600_000)], clean=True, replicas=1)
            assert res.applied  # on a replica too (WAIT)
            old = cluster.kill_primary()
            new = cluster.wait_new_primary(old)
            # The write confirmed with replicas=1 is on the new primary.
            (got,) = await until_ok(lambda: store.get([rec(b"confirmed").key]))
            assert got is not None and got.version == 1
            (res,) = await until_ok(lambda: store.write([(rec(b"after"), 600_000)], clean=False))
            assert res.applied
            records, _ = await until_ok(lambda: store.feed(position, 0, 100))
            assert {r.key for r in records} >= {rec(b"confirmed").key, rec(b"after").key}
            r = cluster.node(new)
            try:
                assert r.get(PREFIX + rec(b"after").key) is not None
            finally:
                r.close()
        finally:
            await store.close()

    runner.run(asyncio.wait_for(go(), BOUND + 20))


def test_a_master_keeps_one_leader_with_a_higher_epoch_and_fails_no_instance_over(
    cluster: Cluster, runner: asyncio.Runner, tmp_path: Path
) -> None:
    ids = ["fw1", "fw2"]
    spec = dump_spec("symmetric", [Balancer("fwc-lb", "client")], 8, targets(*ids))
    (tmp_path / "steering.json").write_text(json.dumps(spec))
    config = load_config(None)  # heartbeats every 100 ms, TTL 500 ms; lease 1 s
    m = Master("m1", config, tmp_path, cluster.url)
    m.driver.driver = MemoryDriver(ids)
    m._spec_mtime = (tmp_path / "steering.json").stat().st_mtime

    async def go() -> None:
        beats = [Heartbeat(cluster.url, i, 100, config.cluster.heartbeat_ttl_ms) for i in ids]
        for b in beats:
            b.register()
            b.start()
        task = asyncio.create_task(m.run())
        try:
            deadline = time.monotonic() + BOUND
            while m.epoch is None or not set(ids) <= set(m.last_pid):
                assert time.monotonic() < deadline, "no leader"
                await asyncio.sleep(0.05)
            first = m.epoch
            assert all(m.last_pid[i] == os.getpid() for i in ids)
            old = await asyncio.to_thread(cluster.kill_primary)
            await asyncio.to_thread(cluster.wait_new_primary, old)
            deadline = time.monotonic() + BOUND
            while m.epoch is None or m.epoch == first:
                assert time.monotonic() < deadline, f"no new leadership after the store's failover: {m.epoch}"
                await asyncio.sleep(0.05)
            assert m.epoch > first  # never backwards
            # every instance proves it beats on the new primary (or the grace ends)
            deadline = time.monotonic() + STORE_BACK_GRACE + 1.0
            while not set(ids) <= m._proven and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(config.cluster.heartbeat_ttl_ms / 1000 + 0.5)
            assert m.failovers == 0 and not m.failed, (m.failovers, m.failed)
            assert all(b.sent > 0 for b in beats)
        finally:
            m._stop.set()
            await asyncio.wait_for(task, 10)
            for b in beats:
                await b.stop()

    runner.run(asyncio.wait_for(go(), 3 * BOUND))
