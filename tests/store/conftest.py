"""A real redis-server for the store tests, and the ``store`` fixture over both backends.

The server is private to the session: 127.0.0.1, a free port (picked by binding to port 0), no
persistence, a random password. It is killed at the end of the session, pass or fail. No test
mocks Redis.

Tests are plain functions; the ``run`` fixture runs a coroutine on the test's own event loop (one
loop per test, the same one the ``store`` fixture built the store in).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from fwcluster.bench.store import redis_server
from fwcluster.statetable.memory import MemoryStore
from fwcluster.statetable.redis_store import RedisStore
from fwcluster.statetable.store import Store

from .helpers import Run


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL (with password) of a redis-server started for this session; always killed."""
    with redis_server(start_timeout=15.0) as url:
        yield url


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


@pytest.fixture
def run(runner: asyncio.Runner) -> Run:
    """``run(coro)``: the coroutine's result, on this test's event loop (bounded to 30 s)."""

    def run_(coro: Coroutine[Any, Any, Any]) -> Any:
        return runner.run(asyncio.wait_for(coro, 30))

    return run_


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, runner: asyncio.Runner) -> Iterator[Store]:
    """A fresh, empty store of each backend; closed after the test."""
    s: Store
    if request.param == "memory":

        async def make_memory() -> Store:
            return MemoryStore()

        s = runner.run(make_memory())
    else:
        url: str = request.getfixturevalue("redis_url")

        async def make_redis() -> Store:
            r = RedisStore(url)
            await r.clear()
            return r

        s = runner.run(make_redis())
    try:
        yield s
    finally:
        runner.run(s.close())
