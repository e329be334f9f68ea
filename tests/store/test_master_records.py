"""A master against a real redis-server, with bad control records of every kind in the store: each
is skipped (or replaced) and counted, and the master leads, watches and fails over all the same;
an unexpected error in one iteration of a loop is counted and logged once, and the loop goes on.

Steering is an in-memory driver (steering_memory.py): these tests are about the store records."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from fwcluster.config import load_config
from fwcluster.control.lease import EPOCH_KEY, LEADER_KEY
from fwcluster.control.master import MEMBERS, Master
from fwcluster.instance.heartbeat import HB_PREFIX, REG_PREFIX
from fwcluster.statetable.ring import followed
from fwcluster.steering import Balancer
from fwcluster.steering.spec import dump_spec

from .helpers import Run
from .steering_memory import MemoryDriver, targets


def clean(r: redis.Redis) -> None:
    keys = [LEADER_KEY, EPOCH_KEY, MEMBERS, b"fwc:instances"]
    keys += list(r.scan_iter(match=b"fwc:reg:*")) + list(r.scan_iter(match=b"fwc:hb:*"))
    r.delete(*keys)


def make_master(
    run_dir: Path, url: str, ids: list[str], master_id: str = "m1"
) -> tuple[Master, MemoryDriver]:
    spec = dump_spec("symmetric", [Balancer("fwc-lb", "client")], 8, targets(*ids))
    (run_dir / "steering.json").write_text(json.dumps(spec))
    m = Master(master_id, load_config(None), run_dir, url)
    driver = MemoryDriver(ids)
    m.driver.driver = driver
    m._spec_mtime = (run_dir / "steering.json").stat().st_mtime  # read: keep the memory driver
    return m, driver


def beat(r: redis.Redis, instance_id: str, pid: int) -> None:
    value = f"{pid}:{int(time.time() * 1000)}"
    r.set(REG_PREFIX + instance_id.encode(), value)
    r.set(HB_PREFIX + instance_id.encode(), value, px=60_000)


def bad(m: Master, source: str) -> float:
    return (
        m.metrics.registry.get_sample_value("fwcluster_master_bad_records_total", {"source": source}) or 0.0
    )


def task_errors(m: Master, task: str) -> float:
    return m.metrics.registry.get_sample_value("fwcluster_master_task_errors_total", {"task": task}) or 0.0


async def until(what: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_bad_lease_epoch_members_registrations_and_heartbeats_are_skipped_and_counted(
    redis_url: str, run: Run, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(redis_url)
    clean(r)
    r.set(LEADER_KEY, b"\xff\x00 not a lease")  # no TTL: it would keep every master from leading
    r.set(EPOCH_KEY, b"lots")
    r.rpush(MEMBERS, b"not a hash")
    r.set(b"fwc:reg:bad id!", b"1:1")  # not an instance id
    r.set(REG_PREFIX + b"fw1", b"junk")
    r.set(HB_PREFIX + b"fw1", b"-5:abc")
    beat(r, "fw2", os.getpid())
    m, driver = make_master(tmp_path, redis_url, ["fw1", "fw2"])
    driver.assign({b: "fw1" if b < 4 else "fw2" for b in range(8)})

    async def scenario() -> None:
        task = asyncio.create_task(m.run())
        try:
            await until(lambda: m.epoch is not None)
            assert m.epoch == 1  # the junk counter was replaced: floor 0, so epoch 1
            # fw1's records are junk: it does not beat, so its buckets move to fw2 (the only healthy one).
            await until(lambda: "fw1" in m.failed and bad(m, "heartbeat") > 0 and bad(m, "registration") > 1)
            assert driver.table("forward") == dict.fromkeys(range(8), "fw2")
            renewed = time.monotonic()
            await asyncio.sleep(0.6)  # the lease keeps being renewed, the watch keeps going
            assert m.epoch == 1 and time.monotonic() - renewed >= 0.5
        finally:
            m._stop.set()
            await task

    run(scenario())
    for source in ("leader", "epoch", "member", "registration", "heartbeat"):
        assert bad(m, source) >= 1, source
    assert r.get(EPOCH_KEY) == b"1"
    assert r.type(MEMBERS) == b"hash"
    assert r.hgetall(MEMBERS) == {b"fw1": b"failed", b"fw2": b"active"}
    assert task_errors(m, "watch") == task_errors(m, "lease") == 0


def test_member_entries_that_are_not_an_id_and_a_role_are_skipped(
    redis_url: str, run: Run, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(redis_url)
    clean(r)
    r.hset(MEMBERS, mapping={"fw1": "failed", "bad id": "failed", "fw2": "zombie", "fw3": b"\xff"})
    m, _ = make_master(tmp_path, redis_url, ["fw1", "fw2", "fw3"])

    async def scenario() -> set[str]:
        task = asyncio.create_task(m.run())
        try:
            await until(lambda: m.epoch is not None)
            return set(m.failed)
        finally:
            m._stop.set()
            await task

    assert run(scenario()) == {"fw1"}
    assert bad(m, "member") == 3


def test_a_leader_with_a_bad_record_for_its_own_lease_still_renews(
    redis_url: str, run: Run, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(redis_url)
    clean(r)
    r.set(LEADER_KEY, b"m1:99999999999999999999")  # an epoch out of range, under our own name
    m, _ = make_master(tmp_path, redis_url, ["fw1"])

    async def scenario() -> int | None:
        task = asyncio.create_task(m.run())
        try:
            await until(lambda: m.epoch is not None)
            return m.epoch
        finally:
            m._stop.set()
            await task

    assert run(scenario()) == 1
    assert bad(m, "leader") == 1


def test_a_loop_survives_an_unexpected_error_and_the_failover_happens_after(
    redis_url: str, run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = redis.Redis.from_url(redis_url)
    clean(r)
    beat(r, "fw1", dead_pid())  # its process is gone
    beat(r, "fw2", os.getpid())
    m, driver = make_master(tmp_path, redis_url, ["fw1", "fw2"])
    driver.assign({b: "fw1" if b < 4 else "fw2" for b in range(8)})
    driver.fault = RuntimeError("the kernel said no")

    async def scenario() -> None:
        task = asyncio.create_task(m.run())
        try:
            await until(lambda: task_errors(m, "watch") >= 3)  # failed iterations, again and again
            assert not task.done() and "fw1" not in m.failed  # not marked failed: tried again
            driver.fault = None
            await until(lambda: "fw1" in m.failed)
        finally:
            m._stop.set()
            await task

    run(scenario())
    assert driver.table("forward") == dict.fromkeys(range(8), "fw2")
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    errors = [ln for ln in lines if ln["event"] == "task-error" and ln["task"] == "watch"]
    assert len(errors) == 1 and "the kernel said no" in errors[0]["error"]  # one line, not one per tick
    assert [ln["instance"] for ln in lines if ln["event"] == "failover"] == ["fw1"]


def test_buckets_a_failed_instance_still_holds_move_once_someone_is_healthy(
    redis_url: str, run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fw1 dies while no other instance is healthy: its failover is impossible and its buckets
    stay where they are. Once fw2 beats, the leader tries again and moves them (before, they
    stayed black-holed until someone steered by hand)."""
    r = redis.Redis.from_url(redis_url)
    clean(r)
    beat(r, "fw1", dead_pid())  # its process is gone; fw2 has neither beaten nor registered
    m, driver = make_master(tmp_path, redis_url, ["fw1", "fw2"])
    driver.assign(dict.fromkeys(range(8), "fw1"))

    async def scenario() -> None:
        task = asyncio.create_task(m.run())
        try:
            await until(lambda: "fw1" in m.failed)
            await asyncio.sleep(0.3)
            assert driver.table("forward") == dict.fromkeys(range(8), "fw1")  # nowhere to go
            beat(r, "fw2", os.getpid())
            await until(lambda: driver.table("forward") == dict.fromkeys(range(8), "fw2"))
        finally:
            m._stop.set()
            await task

    run(scenario())
    events = [json.loads(ln)["event"] for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert "failover-impossible" in events and events.count("failover") == 1


def test_with_follow_backup_a_failed_instance_goes_to_its_backup_and_the_ring_closes(
    redis_url: str, run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """follow = "backup" (the default): the leader publishes the membership, the ring follows from
    it (fw1 -> fw2 -> fw3 -> fw4), and a failed fw2's buckets all go to fw3, the one that followed
    its changes; the membership then closes the ring over it (fw3 follows fw1), and a little later
    the fair shares come back (only fw3's excess moves). A move by hand is published too."""
    r = redis.Redis.from_url(redis_url)
    clean(r)
    ids = ["fw1", "fw2", "fw3", "fw4"]
    for i in ids:
        beat(r, i, os.getpid())
    m, driver = make_master(tmp_path, redis_url, ids)
    driver.assign({b: ids[b // 2] for b in range(8)})

    def members() -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in r.hgetall(MEMBERS).items()}

    async def scenario() -> None:
        task = asyncio.create_task(m.run())
        try:
            await until(lambda: members() == dict.fromkeys(ids, "active"))
            assert followed("fw3", members()) == {"fw2"}
            beat(r, "fw2", dead_pid())
            await until(lambda: "fw2" in m.failed and members().get("fw2") == "failed")
            assert followed("fw3", members()) == {"fw1"}
            fwd = driver.table("forward")
            assert [fwd[b] for b in range(8)] == ["fw1", "fw1", "fw3", "fw3", "fw3", "fw3", "fw4", "fw4"]
            # REBALANCE_DELAY later the fair shares come back: only fw3's excess moves
            await until(lambda: sorted(Counter(driver.table("forward").values()).values()) == [2, 3, 3])
            after = driver.table("forward")
            assert all(after[b] == fwd[b] for b in range(8) if fwd[b] != "fw3")
            # by hand, fw4's buckets to fw1: fw4 is ready now, still in the ring
            driver.assign({b: "fw1" for b, i in after.items() if i == "fw4"})
            m.steered()
            await until(lambda: members().get("fw4") == "ready")
        finally:
            m._stop.set()
            await task

    run(scenario())
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    (fo,) = [ln for ln in lines if ln["event"] == "failover"]
    assert fo["instance"] == "fw2" and fo["to"] == ["fw3"]
    (rb,) = [ln for ln in lines if ln["event"] == "rebalanced"]
    assert rb["to"] == ["fw1", "fw3", "fw4"]
