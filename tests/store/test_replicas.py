"""Sync confirmation with replicas: a write is confirmed only when the replicas have it."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
import redis

from fwcluster.bench.store import redis_server
from fwcluster.core.states import FlowState
from fwcluster.statetable.record import FlowRecord
from fwcluster.statetable.redis_store import PREFIX, RedisStore
from fwcluster.statetable.store import ReplicaLagError

from .helpers import Run


def _replica_of(primary_url: str) -> dict[str, str]:
    u = urlsplit(primary_url)
    return {"replicaof": f"{u.hostname} {u.port}", "masterauth": u.password or ""}


def _wait_link_up(replica_url: str, timeout: float = 10.0) -> None:
    r = redis.Redis.from_url(replica_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = r.info("replication")
            if info.get("master_link_status") == "up":
                return
            time.sleep(0.05)
        raise AssertionError(f"replica never linked: {r.info('replication')}")
    finally:
        r.close()


def test_write_with_replicas_is_on_the_replica_when_confirmed(redis_url: str, run: Run) -> None:
    with redis_server(extra=_replica_of(redis_url)) as replica_url:
        _wait_link_up(replica_url)
        store = RedisStore(redis_url, timeout=2.0)
        rec = FlowRecord(b"\x06replica-test\x00", FlowState.ESTABLISHED, True, 3, 6, "fw1")
        try:
            (res,) = run(store.write([(rec, 60_000)], clean=True, replicas=1))
            assert res.applied
            # Confirmed with replicas=1: the replica holds it the moment the write returns.
            r = redis.Redis.from_url(replica_url)
            try:
                assert r.get(PREFIX + rec.key) == rec.encode()
            finally:
                r.close()
        finally:
            run(store.close())


def test_write_is_not_confirmed_when_replicas_are_missing(redis_url: str, run: Run) -> None:
    store = RedisStore(redis_url, timeout=0.2)
    rec = FlowRecord(b"\x06no-replica\x00\x00", FlowState.ESTABLISHED, True, 3, 6, "fw1")
    try:
        with pytest.raises(ReplicaLagError):
            run(store.write([(rec, 60_000)], clean=True, replicas=2))
        # The primary applied it; only the confirmation is missing.
        (held,) = run(store.get([rec.key]))
        assert held == rec
    finally:
        run(store.close())
