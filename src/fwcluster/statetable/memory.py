"""The ``memory`` backend: a store inside one process. Nothing is shared; it serves a single
instance and is the reference the conformance suite holds the Redis backend to."""

from __future__ import annotations

import asyncio
import contextlib
import time

from fwcluster.core.states import FlowState
from fwcluster.statetable.record import BadRecords, FlowRecord, clean_allows, reopened_version
from fwcluster.statetable.store import Store, WriteResult

FEED_MAX = 100_000


class MemoryStore(Store):
    def __init__(self) -> None:
        self._flows: dict[bytes, tuple[FlowRecord, float]] = {}  # key -> (record, expires at)
        self._feed: list[tuple[int, FlowRecord]] = []
        self._seq = 0
        self._changed = asyncio.Event()
        self.bad_records = BadRecords()  # stays empty: nothing here is decoded

    def _live(self, key: bytes) -> FlowRecord | None:
        entry = self._flows.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self._flows[key]
            return None
        return entry[0]

    async def write(
        self, records: list[tuple[FlowRecord, int]], clean: bool, replicas: int = 0
    ) -> list[WriteResult]:
        out = []
        for wanted, ttl_ms in records:
            rec = wanted
            cur = self._live(rec.key)
            if clean and not clean_allows(cur, rec):
                out.append(WriteResult(False, cur))
                continue
            if clean and cur is not None and rec.state == FlowState.SYN_SENT:
                version = reopened_version(cur, rec)
                if version != rec.version:
                    rec = FlowRecord(rec.key, rec.state, rec.orig_is_lo, version, rec.proto, rec.writer)
            if rec.state == FlowState.REMOVED:
                self._flows.pop(rec.key, None)
            else:
                self._flows[rec.key] = (rec, time.monotonic() + ttl_ms / 1000)
            self._seq += 1
            self._feed.append((self._seq, rec))
            if len(self._feed) > FEED_MAX:
                del self._feed[: len(self._feed) - FEED_MAX]
            out.append(WriteResult(True, rec))
        if any(r.applied for r in out):  # wake feed() waiters only when the feed grew
            self._changed.set()
        return out

    async def get(self, keys: list[bytes]) -> list[FlowRecord | None]:
        return [self._live(k) for k in keys]

    async def snapshot(self) -> tuple[list[FlowRecord], str]:
        position = str(self._seq)
        return [r for k in list(self._flows) if (r := self._live(k)) is not None], position

    async def feed(self, position: str, block_ms: int, count: int) -> tuple[list[FlowRecord], str]:
        after = int(position)
        if self._seq <= after and block_ms > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), block_ms / 1000)
        items = [(seq, r) for seq, r in self._feed if seq > after][:count]
        return [r for _, r in items], str(items[-1][0]) if items else position

    async def follow(
        self, positions: dict[str, str], block_ms: int, count: int
    ) -> tuple[list[FlowRecord], dict[str, str]]:
        after = min((int(p) for p in positions.values()), default=self._seq)
        await self.feed(str(after), block_ms, 0)  # waits for a change after the oldest position
        out: list[FlowRecord] = []
        moved = dict(positions)
        for seq, rec in self._feed:
            if rec.writer in positions and seq > int(positions[rec.writer]) and len(out) < count:
                out.append(rec)
                moved[rec.writer] = str(seq)
        return out, moved

    async def position(self, writer: str) -> str:
        return str(self._seq)

    async def owned(self, writer: str) -> list[FlowRecord]:
        return [r for k in list(self._flows) if (r := self._live(k)) is not None and r.writer == writer]

    async def members(self) -> dict[str, str]:
        return {}

    async def ping(self) -> None:
        return None

    async def clear(self) -> None:
        self._flows.clear()
        self._feed.clear()

    async def close(self) -> None:
        return None
