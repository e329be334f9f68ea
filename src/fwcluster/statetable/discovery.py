"""redis-py clients for a store URL: one server (``redis://``, ``unix://``) or the primary of a
Sentinel service (``redis+sentinel://``, fwcluster/storeurl.py).

A Sentinel client (redis-py's ``Sentinel.master_for``) asks the sentinels for the primary on
every new connection and drops a connection that answers ``READONLY`` (a demoted primary), so
the client follows a failover without a restart; while no primary is known its commands fail
with a ``ConnectionError`` (a :class:`redis.RedisError`), like a server that is down. The same
user and password open the sentinels and the data nodes.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

from fwcluster.storeurl import is_sentinel_url, parse_sentinel_url


def _sentinel_kwargs(url: str, timeout: float) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    t = parse_sentinel_url(url)
    auth = {"username": t.username, "password": t.password}
    node = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "db": t.db, **auth}
    sentinel = {"socket_timeout": timeout, "socket_connect_timeout": timeout, **auth}
    return t, node, sentinel


def async_client(url: str, timeout: float, **options: Any) -> Any:
    """An asyncio client of the store's primary (typed Any: replies are bytes, redis-py's hints
    allow str too)."""
    if not is_sentinel_url(url):
        return aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, **options)
    t, node, sentinel = _sentinel_kwargs(url, timeout)
    manager = aiosentinel.Sentinel(list(t.sentinels), sentinel_kwargs=sentinel, **node, **options)  # type: ignore[no-untyped-call]
    return manager.master_for(t.service)


def sync_client(url: str, timeout: float) -> Any:
    """A blocking client of the store's primary (the heartbeat thread, the testbed)."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    t, node, sentinel = _sentinel_kwargs(url, timeout)
    manager = redis.sentinel.Sentinel(list(t.sentinels), sentinel_kwargs=sentinel, **node)  # type: ignore[no-untyped-call]
    return manager.master_for(t.service)  # type: ignore[no-untyped-call]
