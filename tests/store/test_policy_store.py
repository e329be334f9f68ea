"""The stored policy on a real redis-server, with the testbed's store users: the leading master
stores versions atomically (one script: two applies never get the same version, no change makes
no version, a master whose lease moved on changes nothing); an instance reads it with its own
user (which may not write it) and refuses a bad record whole, keeping what it applied."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis

from fwcluster.control.policy_store import NotLeader, PolicyStore, StoredPolicyError
from fwcluster.core.rules import RuleSet
from fwcluster.instance import policy_watch
from fwcluster.instance.policy_watch import UNKNOWN, PolicyWatch
from fwcluster.policy import DENY_ALL, NO_POLICY, POLICY_KEY, Policy, parse_policy

from .helpers import Run, store_with_users

FALLBACK = Policy(RuleSet())


def _policy(port: int) -> Policy:
    text = f'[policy]\ndefault = "drop"\n[[rules]]\naction = "accept"\nproto = "tcp"\ndport = {port}\n'
    return parse_policy(text, f"port {port}")


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, str]]:
    with store_with_users("fw1") as urls:
        yield urls


@pytest.fixture
def admin(users: dict[str, str]) -> Iterator[Any]:
    r = redis.Redis.from_url(users["admin"], socket_timeout=5.0)
    r.delete(POLICY_KEY)
    r.set(b"fwc:leader", b"m1:5")  # m1 leads at epoch 5
    yield r
    r.delete(POLICY_KEY, b"fwc:leader")
    r.close()


async def _store(url: str, *policies: Policy, master: str = "m1", epoch: int = 5) -> list[tuple[int, bool]]:
    clients = [aioredis.Redis.from_url(url) for _ in policies]
    try:
        stores = [PolicyStore(c) for c in clients]
        return list(
            await asyncio.gather(*(s.store(p, master, epoch) for s, p in zip(stores, policies, strict=True)))
        )
    finally:
        for c in clients:
            await c.aclose()


async def _read(url: str) -> tuple[int, Policy] | None:
    client = aioredis.Redis.from_url(url)
    try:
        return await PolicyStore(client).read()
    finally:
        await client.aclose()


def test_versions_count_changes_only(users: dict[str, str], admin: Any, run: Run) -> None:
    url = users["master"]
    assert run(_read(url)) is None
    assert run(_store(url, _policy(80))) == [(1, True)]
    assert run(_store(url, _policy(80))) == [(1, False)]  # the same policy: no new version
    assert run(_store(url, _policy(81))) == [(2, True)]
    version, policy = run(_read(url))
    assert version == 2 and policy == _policy(81)


def test_concurrent_applies_never_share_a_version(users: dict[str, str], admin: Any, run: Run) -> None:
    policies = [_policy(1000 + i) for i in range(24)]
    results = run(_store(users["master"], *policies))
    versions = sorted(v for v, changed in results)
    assert versions == list(range(1, 25)) and all(changed for _, changed in results)
    last = max(range(24), key=lambda i: results[i][0])
    assert run(_read(users["master"])) == (24, policies[last])  # the body of the newest version


def test_a_master_whose_lease_moved_on_changes_nothing(users: dict[str, str], admin: Any, run: Run) -> None:
    with pytest.raises(NotLeader):
        run(_store(users["master"], _policy(80), master="m2", epoch=5))
    with pytest.raises(NotLeader):
        run(_store(users["master"], _policy(80), master="m1", epoch=4))
    admin.delete(b"fwc:leader")  # the lease ran out
    with pytest.raises(NotLeader):
        run(_store(users["master"], _policy(80)))
    assert admin.exists(POLICY_KEY) == 0


def test_a_bad_stored_record_is_reported_not_overwritten(users: dict[str, str], admin: Any, run: Run) -> None:
    admin.hset(POLICY_KEY, mapping={"version": "seven", "body": "[policy]\n"})
    with pytest.raises(StoredPolicyError):
        run(_store(users["master"], _policy(80)))
    with pytest.raises(StoredPolicyError):
        run(_read(users["master"]))
    assert admin.hget(POLICY_KEY, "version") == b"seven"
    admin.delete(POLICY_KEY)
    admin.set(POLICY_KEY, b"not a hash")
    with pytest.raises(StoredPolicyError):
        run(_store(users["master"], _policy(80)))


def test_an_instance_reads_but_never_writes_the_policy(users: dict[str, str], admin: Any) -> None:
    r = redis.Redis.from_url(users["inst-fw1"], socket_timeout=5.0)
    try:
        assert r.hget(POLICY_KEY, "version") is None
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.hset(POLICY_KEY, "version", "99")
    finally:
        r.close()


def test_the_instance_starts_with_the_stored_policy_or_the_fallback(
    users: dict[str, str], admin: Any, run: Run
) -> None:
    watch = PolicyWatch(users["inst-fw1"], "fw1", FALLBACK)
    try:
        assert watch.initial() == (NO_POLICY, FALLBACK)  # nothing stored: the config's rules
        run(_store(users["master"], _policy(80)))
        assert watch.initial() == (1, _policy(80))
    finally:
        watch.stop()


def test_bad_records_are_refused_whole_and_counted(users: dict[str, str], admin: Any, run: Run) -> None:
    run(_store(users["master"], _policy(80)))
    watch = PolicyWatch(users["inst-fw1"], "fw1", FALLBACK)
    try:
        watch.applied = watch.initial()[0]
        assert watch.step() is None  # nothing new
        run(_store(users["master"], _policy(81)))
        assert watch.step() == (2, _policy(81))
        watch.applied = 2
        for bad in (
            {"version": "3", "body": "[sync]\nlevel = 'full'\n"},  # a section a policy has not
            {"version": "4", "body": '[policy]\ndefault = "drop"\n[[rules]]\naction = "maybe"\n'},
            {"version": "-1", "body": _policy(82).render()},
            {"version": "5", "body": b"\xff\xfe"},
        ):
            admin.hset(POLICY_KEY, mapping=bad)
            assert watch.step() is None  # refused: the applied version stays
            assert watch.step() is None  # and read once, not again on every poll
        assert watch.refused == 4 and watch.applied == 2
        admin.delete(POLICY_KEY)
        assert watch.step() is None  # the store lost it: keep what is applied
        run(_store(users["master"], _policy(83)))
        assert watch.step() == (1, _policy(83))  # a new record after the loss is applied
    finally:
        watch.stop()


def test_a_bad_record_or_no_store_at_the_start_fails_closed(
    users: dict[str, str], admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin.hset(POLICY_KEY, mapping={"version": "1", "body": "[rules]\n"})
    watch = PolicyWatch(users["inst-fw1"], "fw1", FALLBACK)
    try:
        assert watch.initial() == (UNKNOWN, DENY_ALL)
        assert watch.refused == 1
        admin.delete(POLICY_KEY)
        assert watch.step() == (NO_POLICY, FALLBACK)  # fixed: now the config's rules
    finally:
        watch.stop()
    monkeypatch.setattr(policy_watch, "START_WAIT", 0.3)
    u = urlsplit(users["inst-fw1"])
    gone = PolicyWatch(f"redis://inst-fw1:pw@{u.hostname}:{_free_port()}/0", "fw1", FALLBACK)
    try:
        assert gone.initial() == (UNKNOWN, DENY_ALL)
        assert gone.read_errors == 1
    finally:
        gone.stop()


def _free_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_the_leader_writes_back_a_record_the_store_lost(users: dict[str, str], admin: Any, run: Run) -> None:
    async def restore(version: int, policy: Policy, master: str = "m1") -> bool:
        client = aioredis.Redis.from_url(users["master"])
        try:
            return await PolicyStore(client).restore(version, policy, master, 5)
        finally:
            await client.aclose()

    run(_store(users["master"], _policy(80), _policy(81)))
    assert run(restore(2, _policy(90))) is False  # a record exists: nothing is written over it
    admin.delete(POLICY_KEY)  # the store lost it
    with pytest.raises(NotLeader):
        run(restore(2, _policy(81), master="m2"))
    assert run(restore(2, _policy(81))) is True
    assert run(_read(users["master"])) == (2, _policy(81))
    assert run(_store(users["master"], _policy(82))) == [(3, True)]  # and versions go on from it
