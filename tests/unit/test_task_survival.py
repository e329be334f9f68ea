"""Every long-running task of an instance survives an exception in one round: it is counted per
task, logged as one line (not a traceback per round), and the task goes on; held packets fail
closed meanwhile. A real SharedTable and engine over the memory store; the faults are injected
by a store that raises a plain exception (not a StoreError: what nobody expected) the first time
each operation is called. No root, no Redis."""

from __future__ import annotations

import asyncio
import logging
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import IP, TCP

from fwcluster.config import parse_config
from fwcluster.core.firewall import Firewall
from fwcluster.core.packet import KEY4
from fwcluster.core.rules import PROTO_TCP, Action, RuleSet
from fwcluster.core.states import FlowState
from fwcluster.core.timeouts import Timeouts
from fwcluster.engine.engine import Engine, EnginePolicy
from fwcluster.instance.metrics import InstanceMetrics
from fwcluster.instance.process import Instance
from fwcluster.statetable.memory import MemoryStore
from fwcluster.statetable.record import FlowRecord
from fwcluster.statetable.settings import Access, Confirm, Follow, SyncLevel, SyncSettings
from fwcluster.statetable.shared import PUBLISHED, SharedTable
from fwcluster.statetable.store import WriteResult

S = FlowState
BOUND = 10.0


def key(port: int) -> bytes:
    return KEY4.pack(PROTO_TCP, bytes([198, 18, 0, 1]), port, bytes([198, 19, 0, 2]), 80)


def syn(port: int) -> bytes:
    return bytes(IP(src="198.18.0.1", dst="198.19.0.2") / TCP(sport=port, dport=80, flags="S", seq=1000))


def ack(port: int) -> bytes:
    return bytes(IP(src="198.18.0.1", dst="198.19.0.2") / TCP(sport=port, dport=80, flags="A", seq=1001))


class Oops(Exception):
    pass


class FaultyStore(MemoryStore):
    """A memory store whose operations named in ``faults`` raise once each."""

    def __init__(self, *faults: str) -> None:
        super().__init__()
        self.faults = set(faults)

    def _fault(self, op: str) -> None:
        if op in self.faults:
            self.faults.discard(op)
            raise Oops(f"{op} went wrong")

    async def write(
        self, records: list[tuple[FlowRecord, int]], clean: bool, replicas: int = 0
    ) -> list[WriteResult]:
        self._fault("write")
        return await super().write(records, clean, replicas)

    async def feed(self, position: str, block_ms: int, count: int) -> tuple[list[FlowRecord], str]:
        self._fault("feed")
        return await super().feed(position, block_ms, min(count, 100))

    async def get(self, keys: list[bytes]) -> list[FlowRecord | None]:
        self._fault("get")
        return await super().get(keys)

    async def snapshot(self) -> tuple[list[FlowRecord], str]:
        self._fault("snapshot")
        return await super().snapshot()


def table(store: MemoryStore) -> SharedTable:
    sync = SyncSettings(SyncLevel.FULL, Access.CLEAN, Confirm.SYNC, Follow.ALL)
    fw = Firewall(RuleSet(default=Action.ACCEPT), Timeouts(), 1000, windows=False)
    engine = Engine(fw, EnginePolicy(publish=PUBLISHED[sync.level], confirm=True, hold_timeout=5.0))
    return SharedTable("fw1", engine, sync, store)


async def wait_for(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {BOUND} s: {what}")
        await asyncio.sleep(0.005)


def test_the_writer_survives_and_fails_its_batch_closed(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        t = table(FaultyStore("write"))
        await t.start()
        try:
            e = t.engine
            e.packet(1, syn(40001), time.monotonic())
            t.submit()
            await wait_for(lambda: 1 in e.drops, "the first held SYN dropped")
            assert e.firewall.state_of(key(40001), time.monotonic()) is None  # left as it was
            e.packet(2, syn(40001), time.monotonic())  # the retransmission
            t.submit()
            await wait_for(lambda: 2 in e.accepts, "the retransmission confirmed")
            assert t.task_errors.counts["writer"] == 1
            assert all(not task.done() for task in t._tasks)
        finally:
            await t.stop()

    caplog.set_level(logging.WARNING)
    asyncio.run(go())
    lines = [r.getMessage() for r in caplog.records if "survived" in r.getMessage()]
    assert len(lines) == 1 and "writer" in lines[0] and "Oops" in lines[0]
    assert not any(r.exc_info for r in caplog.records)  # one line, no traceback


def test_the_feed_survives_and_goes_on() -> None:
    async def go() -> None:
        store = FaultyStore("feed")
        t = table(store)
        await t.start()
        try:
            await wait_for(lambda: t.task_errors.counts["feed"] == 1, "the feed's fault counted")
            await store.write(
                [(FlowRecord(key(40002), S.ESTABLISHED, True, 3, PROTO_TCP, "fw9"), 60_000)], True
            )
            await wait_for(
                lambda: t.engine.firewall.state_of(key(40002), time.monotonic()) == S.ESTABLISHED,
                "a record from the feed",
            )
            assert all(not task.done() for task in t._tasks)
        finally:
            await t.stop()

    asyncio.run(go())


def test_a_look_up_that_raises_drops_its_packet() -> None:
    async def go() -> None:
        t = table(FaultyStore("get"))
        await t.start()
        try:
            e = t.engine
            e.packet(3, ack(40003), time.monotonic())
            assert 3 in e.held
            t.submit()
            await wait_for(lambda: 3 in e.drops, "the held ACK dropped")
            assert t.task_errors.counts["lookup"] == 1
        finally:
            await t.stop()

    asyncio.run(go())


def test_the_health_watch_survives_a_resync_that_raises() -> None:
    async def go() -> None:
        store = FaultyStore()
        t = table(store)
        await t.start()
        try:
            store.faults.add("snapshot")
            t._mark_down()  # as after a store error
            await wait_for(lambda: t.task_errors.counts["health"] == 1, "the resync's fault counted")
            assert not t.store_up  # fail closed while it could not resync
            e = t.engine
            e.packet(4, syn(40004), time.monotonic())
            assert 4 in e.drops  # a new flow is refused in the outage
            await wait_for(lambda: t.store_up, "the store back at the next round")
            assert all(not task.done() for task in t._tasks)
        finally:
            await t.stop()

    asyncio.run(go())


def instance(tmp_path: Path) -> Instance:
    text = '[sync]\nlevel = "full"\n[policy]\ndefault = "accept"\n[store]\nbackend = "memory"\n'
    return Instance("fw7", parse_config(tomllib.loads(text), "<test>"), 0, tmp_path)


def test_the_sweeper_survives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inst = instance(tmp_path)
    calls: list[float] = []
    real = inst.engine.expire

    def expire(now: float, budget: int) -> int:
        calls.append(now)
        if len(calls) == 1:
            raise Oops("sweep went wrong")
        return real(now, budget)

    monkeypatch.setattr(inst.engine, "expire", expire)

    async def go() -> None:
        task = asyncio.create_task(inst._sweeper())
        try:
            await wait_for(lambda: len(calls) >= 3, "the sweep ran again")
            assert not task.done()
        finally:
            task.cancel()

    asyncio.run(go())
    assert inst.task_errors.counts["sweeper"] == 1
    assert inst.stats()["task_errors"]["sweeper"] == 1


def test_the_counters_render_as_metrics(tmp_path: Path) -> None:
    """Task errors, flows refused by a full table, bad records and refused writes, by label."""
    inst = instance(tmp_path)
    inst.task_errors.note("feed", Oops("x"))
    inst.counters.flows_refused["lookup"] = 3
    assert inst.table.store is not None
    inst.table.store.bad_records.note("load", b"", "key of 0 bytes")
    inst.table.counters.refused_writes = 2
    text = generate_latest(InstanceMetrics(inst).registry).decode()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert values[("fwcluster_task_errors_total", (("task", "feed"),))] == 1
    assert values[("fwcluster_task_errors_total", (("task", "sweeper"),))] == 0  # every task, from 0
    assert values[("fwcluster_flows_refused_total", (("source", "lookup"),))] == 3
    assert values[("fwcluster_flows_refused_total", (("source", "feed"),))] == 0
    assert values[("fwcluster_store_bad_records_total", (("source", "load"),))] == 1
    assert values[("fwcluster_store_bad_records_total", (("source", "write-answer"),))] == 0
    assert values[("fwcluster_store_refused_writes_total", ())] == 2
    stats = inst.stats()
    assert stats["task_errors"]["feed"] == 1 and stats["flows_refused"]["lookup"] == 3
    assert stats["store"]["bad_records"]["load"] == 1 and stats["store"]["refused_writes"] == 2
