"""Instances on another host than the master: their pids say nothing here (another boot or pid
namespace: the registration's host key), so only their heartbeats count. A beat whose pid does
not run on the master's host is no dead process; a beat that stops is a failure all the same."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import redis

from fwcluster.instance.heartbeat import HB_PREFIX, REG_PREFIX, parse_registration
from fwcluster.procutil import host_key

from .helpers import Run
from .test_master_records import clean, dead_pid, make_master, until

ELSEWHERE = "0123456789abcdef"  # a host key that is not this host's


def register(r: redis.Redis, instance_id: str, pid: int, host: str, ttl_ms: int = 60_000) -> None:
    now = int(time.time() * 1000)
    r.set(REG_PREFIX + instance_id.encode(), f"{pid}:{now}:{host}")
    r.set(HB_PREFIX + instance_id.encode(), f"{pid}:{now}", px=ttl_ms)


def test_the_host_key_is_stable_and_registrations_carry_it() -> None:
    assert len(host_key()) == 16 and host_key() == host_key()
    assert parse_registration(f"42:1000:{ELSEWHERE}".encode()) == (42, 1.0, ELSEWHERE)
    assert parse_registration(b"42:1000") == (42, 1.0, "")  # no host key: the master's own host
    assert parse_registration(b"42:1000:XYZ") is None


def test_a_remote_instance_is_judged_by_its_heartbeats_only(redis_url: str, run: Run, tmp_path: Path) -> None:
    r = redis.Redis.from_url(redis_url)
    clean(r)
    gone_here = dead_pid()  # no such process on this host: on fw1's host it may well run
    assert host_key() != ELSEWHERE
    register(r, "fw1", gone_here, ELSEWHERE)
    register(r, "fw2", os.getpid(), host_key())
    m, driver = make_master(tmp_path, redis_url, ["fw1", "fw2"])
    driver.assign({b: "fw1" if b < 4 else "fw2" for b in range(8)})

    async def scenario() -> None:
        task = asyncio.create_task(m.run())
        try:
            await until(lambda: m.epoch is not None and "fw1" in m.remote and "fw1" in m.last_pid)
            await asyncio.sleep(0.5)  # many ticks: a local instance with that pid would be failed over
            assert not m.failed and "fw2" not in m.remote
            r.delete(HB_PREFIX + b"fw1")  # its beats stop (hung, cut off, dead over there)
            await until(lambda: "fw1" in m.failed)
            assert m._fail_reason.get("fw1") == "heartbeat"
        finally:
            m._stop.set()
            await task

    run(scenario())
    assert driver.table("forward") == dict.fromkeys(range(8), "fw2")
