"""What an operator can ask the leading master to do: status, scale, drain or stop an instance.

The admin API (control/api.py) turns HTTP requests into these calls; they run on the master's own
event loop, one at a time (a scale and a drain never interleave). Every refusal is an
:class:`AdminError` with an HTTP status and a one-line message, raised before anything changed.

Membership lives in the store (hash ``fwc:members``, instance id -> role), kept by the leader:
- ``joining``  registered (``fwc:reg:<id>``), not beating yet: loading the table;
- ``ready``    up with the table loaded, carrying no bucket (a new instance before its share
               moves, or a drained one);
- ``active``   carrying buckets;
- ``standby``  ready, carrying nothing, first in line on a failure;
- ``draining`` its buckets are moving away (drain, stop, scale in);
- ``failed``   failed over (dead, hung or cut off).

Scaling asks the testbed's provisioning agent (testbed/provision.py) for instances; the buckets
are moved here, by the leader, through the fenced steering driver: only a fair share moves to a
new instance, and a leaving instance is emptied before the agent stops it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from fwcluster.control.lease import LeaderLease
from fwcluster.control.policy_store import NotLeader, StoredPolicyError
from fwcluster.policy import NO_POLICY, Policy, PolicyError, diff, parse_policy
from fwcluster.steering.balance import rebalance
from fwcluster.steering.base import Direction, SteeringError

if TYPE_CHECKING:
    from fwcluster.control.master import Master

PROVISION_TIMEOUT = 120.0  # seconds for the agent to build and start instances (join included)
MAX_INSTANCES = 32


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Admin:
    def __init__(self, master: Master) -> None:
        self.m = master
        self._busy = asyncio.Lock()
        self._refill: asyncio.Task[None] | None = None  # the standby pool being refilled

    # --- reading -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        m = self.m
        driver = m.driver.driver
        owners = m.owners()
        rows = []
        for instance_id in driver.targets:
            rows.append(
                {
                    "id": instance_id,
                    "role": m.role_of(instance_id, owners),
                    "buckets": {d: len(driver.buckets_of(instance_id, d)) for d in driver.directions()},
                    "pid": m.last_pid.get(instance_id),
                    "policy_version": m.policy_versions.get(instance_id),
                }
            )
        return {
            "master": m.id,
            "leader": m.epoch is not None,
            "epoch": m.epoch,
            "failovers": m.failovers,
            "instances": rows,
            # the stored policy's version as this master read it last (None: not known here)
            "policy": {"version": m.stored_policy_version},
        }

    # --- the policy (fwcluster/policy.py) ------------------------------------------------------

    async def _current_policy(self) -> tuple[int, Policy]:
        """The stored version and policy, or (0, the config's rules) when none is stored."""
        try:
            stored = await self.m.policy.read()
        except StoredPolicyError as e:
            raise AdminError(409, str(e)) from None
        except (RedisError, OSError) as e:
            raise AdminError(503, f"the store is unreachable: {e}") from None
        if stored is None:
            self.m.stored_policy_version = NO_POLICY
            return NO_POLICY, Policy(self.m.config.ruleset)
        self.m.stored_policy_version = stored[0]
        self.m.known_policy = stored
        return stored

    async def policy_show(self) -> dict[str, Any]:
        await self._must_lead()
        version, policy = await self._current_policy()
        return {
            "version": version,
            "stored": version != NO_POLICY,
            "default": policy.ruleset.default.name.lower(),
            "rules": policy.lines(),
            "body": policy.render(),
        }

    async def policy_diff(self, text: Any) -> dict[str, Any]:
        new = _policy_text(text)
        await self._must_lead()
        version, current = await self._current_policy()
        d = diff(current, new)
        return {"version": version, "changed": d.changed, "lines": d.lines()}

    async def policy_apply(self, text: Any) -> dict[str, Any]:
        """Validate the policy whole, then store it as the next version (nothing changes when it
        is refused). Instances pick it up from the store (instance/policy_watch.py)."""
        new = _policy_text(text)
        await self._must_lead()
        previous, current = await self._current_policy()
        epoch = self.m.epoch
        if epoch is None:
            raise AdminError(409, f"master {self.m.id} lost the lead during the operation")
        try:
            version, changed = await self.m.policy.store(new, self.m.id, epoch)
        except NotLeader:
            raise AdminError(
                409, f"master {self.m.id} does not lead (its lease moved on); ask the leader"
            ) from None
        except StoredPolicyError as e:
            raise AdminError(409, str(e)) from None
        except (RedisError, OSError) as e:
            raise AdminError(503, f"the store is unreachable: {e}") from None
        self.m.stored_policy_version = version
        self.m.known_policy = (version, new)
        d = diff(current, new)
        if changed:
            self.m.note("policy-applied", version=version, previous=previous, rules=len(new.ruleset.rules))
        return {"version": version, "previous": previous, "changed": changed, "lines": d.lines()}

    # --- changing --------------------------------------------------------------------------------

    async def scale(self, wanted: Any) -> dict[str, Any]:
        if not isinstance(wanted, int) or isinstance(wanted, bool):
            raise AdminError(400, f"scale: 'active' must be an integer, not {wanted!r}")
        if wanted < 1:
            raise AdminError(400, f"cannot scale to {wanted}: at least one active instance is needed")
        if wanted > MAX_INSTANCES:
            raise AdminError(400, f"cannot scale to {wanted}: at most {MAX_INSTANCES} instances")
        async with self._busy:
            await self._must_lead()
            self.m.reload_spec()  # the latest description (instances, standby) before deciding
            current = self.m.active()
            if wanted > len(current):
                return await self._scale_out(current, wanted - len(current))
            if wanted < len(current):
                return await self._scale_in(current, len(current) - wanted)
            return {"active": current, "moved": {}}

    async def drain(self, instance_id: str) -> dict[str, Any]:
        async with self._busy:
            await self._must_lead()
            return await self._drain(instance_id)

    async def stop(self, instance_id: str) -> dict[str, Any]:
        async with self._busy:
            await self._must_lead()
            self._known(instance_id)
            self.m.leaving.add(instance_id)
            try:
                moved = await self._drain(instance_id) if instance_id in self.m.active() else {"moved": {}}
                await self._provision({"op": "remove", "ids": [instance_id]})
            finally:
                self.m.leaving.discard(instance_id)
                self.m.reload_spec(force=True)
                await self.m.publish_members()
            self.m.note("instance-stopped", instance=instance_id)
            return {"stopped": instance_id, "moved": moved["moved"]}

    # --- the steps ---------------------------------------------------------------------------------

    async def _scale_out(self, current: list[str], count: int) -> dict[str, Any]:
        """Ready standby instances are promoted first: they hold the table already (snapshot at
        start, the feed since), so they carry traffic as soon as the buckets move. What they cannot
        cover is provisioned; then the standby pool is refilled in the background."""
        t0 = time.monotonic()
        owners = self.m.owners()
        promoted = [i for i in self.m.standby if i not in self.m.failed and i not in owners][:count]
        for i in promoted:
            self.m.standby.remove(i)
        reply: dict[str, Any] = {}
        if count > len(promoted):
            reply = await self._provision({"op": "add", "count": count - len(promoted)})
        added = promoted + [str(i) for i in reply.get("added", [])]
        t1 = time.monotonic()
        self.m.reload_spec(force=True)  # the agent described the new targets
        # Provisioning takes seconds: an instance may have failed meanwhile. The active set is
        # taken anew, and a failed instance (old or new) gets no bucket.
        added = [i for i in added if i not in self.m.failed and i in self.m.driver.driver.targets]
        current = [i for i in self.m.active() if i not in added]
        moved = await self.rebalance(current + added)
        t2 = time.monotonic()
        await self.m.publish_members()  # the new ones are "active"
        # where the time went: the agent building and starting them (until each is ready), the moves
        took = {"provision_ms": round((t1 - t0) * 1000, 1), "steer_ms": round((t2 - t1) * 1000, 1)}
        took |= {k: float(reply[k]) for k in ("build_ms", "join_ms") if isinstance(reply.get(k), int | float)}
        self.m.note("scaled-out", added=added, promoted=promoted, buckets=_counts(moved), **took)
        if promoted:
            self._refill = asyncio.create_task(self._refill_standby(len(promoted)))
        return {
            "active": current + added,
            "added": added,
            "promoted": promoted,
            "moved": _jsonable(moved),
            **took,
        }

    async def _refill_standby(self, count: int) -> None:
        """Provision replacements for promoted standby instances (one operation at a time: a
        scale or drain asked meanwhile waits for this)."""
        async with self._busy:
            try:
                reply = await self._provision({"op": "add", "count": count, "role": "standby"})
            except AdminError as e:
                self.m.note("standby-refill-failed", error=e.message)
                return
            self.m.reload_spec(force=True)
            await self.m.publish_members()
            self.m.note("standby-refilled", added=reply.get("added", []))

    async def _scale_in(self, current: list[str], count: int) -> dict[str, Any]:
        leaving = current[-count:]  # the newest go first
        staying = current[:-count]
        self.m.leaving.update(leaving)  # from now on, their end is not a failure
        try:
            await self.m.publish_members()  # "draining"
            moved = await self.rebalance(staying)
            await self._provision({"op": "remove", "ids": leaving})
        finally:
            self.m.leaving.difference_update(leaving)
            self.m.reload_spec(force=True)
            await self.m.publish_members()
        self.m.note("scaled-in", removed=leaving, buckets=_counts(moved))
        return {"active": staying, "removed": leaving, "moved": _jsonable(moved)}

    async def _drain(self, instance_id: str) -> dict[str, Any]:
        """Move every bucket of the instance to the other active ones (a fair share each); it stays
        up and "ready" (carrying nothing) unless the caller stops it."""
        self._known(instance_id)
        if instance_id in self.m.failed:
            raise AdminError(409, f"instance {instance_id} has failed; nothing to drain")
        others = [i for i in self.m.active() if i != instance_id]
        if not others:
            raise AdminError(400, f"draining {instance_id} would leave no active instance")
        purpose = instance_id in self.m.leaving  # a stop: keep it leaving until it is gone
        self.m.leaving.add(instance_id)
        try:
            await self.m.publish_members()  # "draining"
            moved = await self.rebalance(others)
        finally:
            if not purpose:
                self.m.leaving.discard(instance_id)
            await self.m.publish_members()
        self.m.note("drained", instance=instance_id, buckets=_counts(moved))
        return {"drained": instance_id, "moved": _jsonable(moved)}

    async def rebalance(self, members: list[str]) -> dict[str, dict[int, str]]:
        """Fair shares over ``members``, written through the fenced driver off the event loop
        (each write bounded by the lease), never interleaved with a failover. Instances that
        failed meanwhile get nothing."""
        m = self.m
        async with m.steer_lock:
            epoch = m.epoch
            if epoch is None:
                raise AdminError(409, f"master {m.id} lost the lead during the operation")
            members = [i for i in members if i not in m.failed]
            if not members:
                raise AdminError(409, "no healthy instance left to carry the buckets")

            def fenced(mapping: Any, direction: Direction) -> None:
                m.driver.assign(mapping, epoch, direction, m.lease_deadline)

            try:
                return await asyncio.to_thread(rebalance, m.driver.driver, members, fenced)
            except SteeringError as e:
                raise AdminError(409, f"steering refused the move: {e}") from None
            finally:
                m.steered()

    def _known(self, instance_id: str) -> None:
        if instance_id not in self.m.driver.driver.targets:
            known = ", ".join(self.m.driver.driver.targets) or "none"
            raise AdminError(404, f"unknown instance {instance_id!r} (known: {known})")

    async def _must_lead(self) -> None:
        if self.m.epoch is not None:
            return
        try:
            holder = await LeaderLease.holder(self.m.redis)
        except (RedisError, OSError):
            holder = None
        who = f"master {holder[0]} leads" if holder else "no master leads right now"
        raise AdminError(409, f"master {self.m.id} does not lead ({who}); ask the leader")

    async def _provision(self, request: dict[str, Any]) -> dict[str, Any]:
        path = self.m.provisioner
        if not path:
            raise AdminError(501, "this cluster has no provisioner: instances cannot be added or removed")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 5)
            try:
                writer.write(json.dumps(request).encode() + b"\n")
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), PROVISION_TIMEOUT)
            finally:
                writer.close()
        except (OSError, TimeoutError) as e:
            why = (e.strerror if isinstance(e, OSError) else None) or str(e) or "timed out"
            raise AdminError(503, f"provisioner at {path}: {why}") from None
        try:
            reply: dict[str, Any] = json.loads(line)
        except ValueError:
            raise AdminError(502, f"provisioner at {path} sent no valid reply") from None
        if "error" in reply:
            raise AdminError(502, f"provisioner: {reply['error']}")
        return reply


def _policy_text(text: Any) -> Policy:
    if not isinstance(text, str):
        raise AdminError(400, 'a policy needs a JSON body {"policy": "<the policy file\'s text>"}')
    try:
        return parse_policy(text, "policy")
    except PolicyError as e:
        raise AdminError(400, str(e)) from None


def _counts(moved: dict[str, dict[int, str]]) -> dict[str, int]:
    return {d: len(m) for d, m in moved.items()}


def _jsonable(moved: dict[str, dict[int, str]]) -> dict[str, dict[str, str]]:
    return {d: {str(b): i for b, i in m.items()} for d, m in moved.items()}
