"""Heartbeats: a running instance says so in the store every ``heartbeat_ms``.

``fwc:hb:<id>`` = ``<pid>:<unix time in ms>``, with a TTL of ``heartbeat_ms * misses``: the key vanishes
when the instance stops beating (hung, cut off, dead), which is what masters watch. The set
``fwc:instances`` lists every instance that ever beat. A clean stop removes the heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

HB_PREFIX = b"fwc:hb:"
INSTANCES = b"fwc:instances"

log = logging.getLogger("fwcluster.instance")


class Heartbeat:
    def __init__(self, url: str, instance_id: str, interval_ms: int, ttl_ms: int) -> None:
        self.id = instance_id
        self.interval = interval_ms / 1000
        self.ttl_ms = ttl_ms
        self.sent = 0
        self.failed = 0
        self._r: Any = aioredis.Redis.from_url(url, socket_timeout=max(0.1, self.interval * 2))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._beat(), name="heartbeat")

    async def _beat(self) -> None:
        key = HB_PREFIX + self.id.encode()
        pid = os.getpid()
        while True:
            try:
                pipe = self._r.pipeline(transaction=False)
                pipe.set(key, f"{pid}:{int(time.time() * 1000)}", px=self.ttl_ms)
                pipe.sadd(INSTANCES, self.id)
                await pipe.execute()
                self.sent += 1
            except (RedisError, OSError):
                self.failed += 1
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            # A clean stop deregisters at once (both in one transaction): masters stop watching it.
            pipe = self._r.pipeline(transaction=True)
            pipe.srem(INSTANCES, self.id)
            pipe.delete(HB_PREFIX + self.id.encode())
            await pipe.execute()
        with contextlib.suppress(Exception):
            await self._r.aclose()


def parse_beat(raw: bytes) -> tuple[int, float]:
    """(pid, unix time in seconds) of a heartbeat value."""
    pid, _, ms = raw.partition(b":")
    return int(pid), int(ms or 0) / 1000
