"""Small helpers shared by the store tests."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis

from fwcluster.bench.store import redis_server
from fwcluster.core.states import FlowState
from fwcluster.statetable.record import FlowRecord
from fwcluster.testbed import store_acl

Run = Callable[[Coroutine[Any, Any, Any]], Any]

S = FlowState
LONG_TTL = 60_000


def fk(name: bytes) -> bytes:
    """A TCP flow key named ``name``: a valid key is itself, a shorter name is padded to 13 bytes
    behind the protocol byte (the store hands back flow keys only: record.py's strict decoder)."""
    if len(name) in (13, 37) and name[0] == 6:
        return name
    assert len(name) <= 12, name
    return b"\x06" + name.ljust(12, b"\x00")


def rec(key: bytes, state: FlowState, version: int, writer: str = "t", orig_is_lo: bool = True) -> FlowRecord:
    return FlowRecord(fk(key), state, orig_is_lo, version, 6, writer)


def pos(position: str) -> tuple[int, ...]:
    """A feed position as something ordered: Redis stream ids ``ms-seq``, memory ``seq``."""
    return tuple(int(part) for part in position.split("-"))


@contextmanager
def store_with_users(*instances: str) -> Iterator[dict[str, str]]:
    """A private redis-server with the users the testbed makes (``inst-<id>`` for each of
    ``instances``, and ``master``); their URLs by name, ``admin`` the server's own."""
    with redis_server() as admin_url:
        u = urlsplit(admin_url)
        r = redis.Redis.from_url(admin_url)
        urls = {"admin": admin_url}
        users = [(f"inst-{i}", store_acl.instance_rules(i)) for i in instances]
        for name, rules in [*users, ("master", store_acl.master_rules())]:
            r.execute_command("ACL", "SETUSER", name, "reset", "on", f">pw-{name}", *rules)  # type: ignore[no-untyped-call]
            urls[name] = f"redis://{name}:pw-{name}@{u.hostname}:{u.port}/0"
        r.close()
        yield urls
