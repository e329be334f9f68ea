"""A master: holds (or waits for) the leader lease; the leader watches the instances and fails
them over.

Discovery: every instance registers with a key of its own (``fwc:reg:<id>``, instance/heartbeat.py);
the leader finds them with ``SCAN MATCH fwc:reg:*`` every ``DISCOVER_INTERVAL`` and reads the
heartbeat and registration of each one it knows every ``TICK`` (one MGET). A registered instance
that has not beaten yet is "joining".

Detection, every ``TICK``:
- process gone: the instance's pid (from its heartbeat) no longer runs (or is a zombie) — seen
  within one tick of a SIGKILL, for instances on the master's own host (same boot and pid
  namespace: the registration's host key, procutil.host_key); for an instance elsewhere a pid
  says nothing and only its heartbeats count;
- missed heartbeats: the instance's heartbeat key expired (``heartbeat_ms * misses``) — a hung
  (SIGSTOP) or cut-off instance. Not while the store itself was away: after the master's store
  connection recovers (an outage, a Sentinel failover: the new primary may miss the beats of the
  last TTL, and instances need a beat to find it), an instance's missing beats are judged again
  once it has proved that it reaches the new primary (a beat that changed since the store came
  back), and at the latest ``STORE_BACK_GRACE`` later; an instance whose process is gone is still
  failed over at once. A master that starts leading meanwhile knows the pids from the
  registrations (it has seen no beat yet).

Failover: the failed instance's buckets, and only those, move to the healthy instances through
the fenced steering driver, with the leader's epoch: to a ready standby if there is one; else, with
``[sync] follow = "backup"``, all to the failed instance's designated backup (statetable/ring.py),
which already holds its flows, and the fair shares come back ``REBALANCE_DELAY`` later; else
spread over the healthy active instances. One JSON line per
event on stdout (the master's log): what failed, why, and how long detection and rerouting took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError, ResponseError

from fwcluster import eventlog
from fwcluster.config import Config
from fwcluster.control.admin import Admin, AdminError
from fwcluster.control.api import AdminApi
from fwcluster.control.lease import EPOCH_KEY, LEADER_KEY, LeaderLease
from fwcluster.control.metrics import MasterMetrics
from fwcluster.control.policy_store import NotLeader, PolicyStore, StoredPolicyError
from fwcluster.instance.heartbeat import (
    HB_PREFIX,
    ID,
    REG_PREFIX,
    TAKEOVER_KEY,
    parse_beat,
    parse_registration,
    registration_policy,
)
from fwcluster.policy import NO_POLICY, POLICY_KEY, VERSION_FIELD, Policy
from fwcluster.procutil import host_key, running
from fwcluster.statetable.discovery import async_client
from fwcluster.statetable.redis_store import MEMBERS as MEMBERS_KEY
from fwcluster.statetable.ring import RING_ROLES, backup_of
from fwcluster.statetable.settings import Follow
from fwcluster.steering.base import SteeringError
from fwcluster.steering.fencing import EpochGate, FencedDriver
from fwcluster.steering.spec import load_driver, load_provisioner, load_standby
from fwcluster.storeurl import is_sentinel_url

log = logging.getLogger("fwcluster.master")

TICK = 0.01  # seconds between health checks while leading
DISCOVER_INTERVAL = 1.0  # seconds between scans for registrations (a SCAN walks the whole keyspace)
SCAN_COUNT = 1000
LEASE_SAFETY = 0.9  # steering writes must end within this share of the lease after its last renewal
OWNERS_REFRESH = 0.5  # seconds between reads of who holds buckets (others may steer by hand)
# After a failover, how long instances pick up TCP segments that no one knows (Engine.pickup):
# TCP's retransmissions of such a connection come at 0.2, 0.6, 1.4, 3 s after the loss.
TAKEOVER_MS = 5000
FAILOVER_RETRY = 1.0  # seconds between tries to move the buckets a failed instance still holds
# follow = "backup": after a failover to the backup, the fair shares come back this much later,
# once the others had time to read the membership (every 0.5 s) and bulk-load the failed
# instance's flows by its index (statetable/shared.py); a flow not loaded yet is looked up.
REBALANCE_DELAY = 2.0
# After the store came back (an outage, a Sentinel failover) an instance's missed heartbeats are
# not judged until it has beaten on the new primary, for at most this long: every instance's
# heartbeat thread has to notice the old primary is gone (a socket timeout), ask the sentinels and
# reconnect before it beats again, and on a loaded host that took longer than the default 0.5 s TTL
# (a healthy instance failed over in the netns test with a busy core). A dead process is still
# failed over at once; a hung one during the store's failover (a double fault) after this bound.
STORE_BACK_GRACE = 10.0
EPOCH_WAIT_MS = 200  # a new epoch waits at most this long for a replica (replicated store only)
MEMBERS = MEMBERS_KEY  # instance id -> role, kept by the leading master (control/admin.py)
# Replace the membership hash (DEL, then HSET of the pairs in ARGV), atomically.
WRITE_MEMBERS = """
redis.call('DEL', KEYS[1])
if #ARGV > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
end
return #ARGV / 2
"""
ROLES = frozenset({"joining", "ready", "active", "standby", "draining", "failed"})
LEASE_KEYS = {"leader": LEADER_KEY, "epoch": EPOCH_KEY}
STEERING_SPEC = "steering.json"
STEERING_EPOCH = "steering.epoch"


# Events that tell of trouble: logged at level warning (api-failed: error); the rest are info.
WARNING_EVENTS = frozenset({
    "task-error", "bad-record", "spec-unreadable", "lead-refused", "store-down", "instance-gone",
    "failover-impossible", "failover-refused", "rebalance-refused", "steering-unreadable",
    "standby-refill-failed",
})  # fmt: skip


def event(kind: str, **fields: Any) -> None:
    """One structured line per event on stdout (the master's log; docs/logging.md)."""
    level = (
        logging.ERROR if kind == "api-failed" else logging.WARNING if kind in WARNING_EVENTS else logging.INFO
    )
    eventlog.event(kind, level, **fields)


class Master:
    def __init__(
        self, master_id: str, config: Config, run_dir: Path, store_url: str, steering: Path | None = None
    ) -> None:
        self.id = master_id
        self.config = config
        self.run_dir = run_dir
        # a redis+sentinel:// URL: the primary the sentinels name, followed across a failover
        self.redis: Any = async_client(store_url, 0.5)
        self.store_ha = is_sentinel_url(store_url)
        self.lease = LeaderLease(self.redis, master_id, config.cluster.lease_ms, self._bad_lease)
        self._write_members = self.redis.register_script(WRITE_MEMBERS)
        self.policy = PolicyStore(self.redis)  # the stored policy (control/admin.py applies it)
        self.stored_policy_version: int | None = None  # as read last (None: not yet)
        self.known_policy: tuple[int, Policy] | None = None  # the last version read or stored
        self.policy_versions: dict[str, int | None] = {}  # instance id -> the policy it applied (-1: none)
        self._spec = steering or run_dir / STEERING_SPEC  # the steering description
        self._spec_mtime = 0.0
        self.driver = FencedDriver(load_driver(self._spec), EpochGate(run_dir / STEERING_EPOCH))
        self.standby: list[str] = []  # first in line on a failure
        self.provisioner = ""  # the testbed's agent that adds and removes instances ("" = none)
        self.leaving: set[str] = set()  # being drained or stopped on purpose: their end is no failure
        self._members: dict[str, str] = {}  # the membership last written to the store
        self.reload_spec()
        self.epoch: int | None = None
        self.lease_deadline = 0.0  # time.monotonic() by which our steering writes must be done
        self.steer_lock = asyncio.Lock()  # one steering change at a time (failover, admin moves)
        self.failed: set[str] = set()
        self.last_pid: dict[str, int] = {}  # instance id -> pid of its last heartbeat
        self.last_beat: dict[str, float] = {}  # instance id -> unix time of its last heartbeat
        self.last_ok: dict[str, float] = {}  # instance id -> unix time we last saw it alive
        self.registered: dict[str, int] = {}  # instance id -> pid of its registration (fwc:reg:<id>)
        self.remote: set[str] = set()  # registered from another host: their pids say nothing here
        self._proven: set[str] = set()  # beat on the store since it came back (judged again)
        self._first_beat: dict[str, bytes] = {}  # the first beat seen since the store came back
        self.joining: set[str] = set()  # registered, not beating yet (loading the table)
        self._next_discover = 0.0
        self._owners: set[str] = set()  # who held buckets at the last read (_owners_now)
        self._retry_at: dict[str, float] = {}  # failed instance -> when to retry moving its buckets
        self._rebalance_at = 0.0  # time.monotonic() of the rebalance after a failover to a backup
        self._fail_reason: dict[str, str] = {}  # failed instance -> why it failed
        self._owners_at = -OWNERS_REFRESH
        self.failovers = 0
        self._store_lost = False  # the last store operation failed
        self._grace_until = 0.0  # time.monotonic() until which missed heartbeats are not judged
        self._stop = asyncio.Event()
        self._failing: set[str] = set()  # loops whose last iteration failed (logged once)
        self._bad_seen: set[tuple[str, str]] = set()  # bad records already logged
        self._status = run_dir / f"{master_id}.master.json"
        self.metrics = MasterMetrics(self)  # metrics: served by __main__ with --metrics
        self.admin = Admin(self)  # what the admin API (control/api.py) calls
        self.api_addr: tuple[str, int] | None = None  # the API's network address (None: Unix socket only)
        self.api_token: str | None = None

    def _write_status(self) -> None:
        doc = {"id": self.id, "pid": os.getpid(), "leader": self.epoch is not None, "epoch": self.epoch,
               "failovers": self.failovers, "updated": time.time()}  # fmt: skip
        tmp = self._status.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self._status)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self._write_status()
        try:
            sock = self.run_dir / f"{self.id}.api.sock"
            api = AdminApi(self.admin, loop, sock, self.api_addr, self.api_token)
        except OSError as e:
            event("api-failed", master=self.id, error=str(e))
            raise
        event("master-started", master=self.id, pid=os.getpid())
        # Two loops: the lease is renewed on time even while the leader waits for a steering write.
        tasks = [
            asyncio.create_task(self._lease_loop(), name="lease"),
            asyncio.create_task(self._watch_loop(), name="watch"),
        ]
        try:
            await self._stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(api.close)
            if self.epoch is not None:
                with contextlib.suppress(Exception):
                    await self.lease.release()
            self.epoch = None
            self._write_status()
            with contextlib.suppress(Exception):
                await self.redis.aclose()
            event("master-stopped", master=self.id)

    async def _lease_loop(self) -> None:
        renew_every = self.config.cluster.lease_ms / 4000
        next_status = 0.0
        ready = False
        while not self._stop.is_set():
            await self._guarded("lease", self._lead)
            if not ready:  # the first round is over: it leads, or knows it does not
                ready = True
                event("master-ready", master=self.id, leader=self.epoch is not None, epoch=self.epoch)
            if time.monotonic() >= next_status:
                await self._guarded("status", self._status_step)
                next_status = time.monotonic() + 0.25
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), renew_every)

    async def _watch_loop(self) -> None:
        while not self._stop.is_set():
            if self.epoch is not None:
                await self._guarded("watch", self._watch)
            elif time.monotonic() >= self._next_discover:
                await self._guarded("follow", self._follow)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), TICK if self.epoch is not None else 0.05)

    async def _status_step(self) -> None:
        self._write_status()

    async def _guarded(self, task: str, step: Callable[[], Awaitable[None]]) -> None:
        """One iteration of a loop: an unexpected error is counted and logged (one line, when the
        loop starts failing), and the loop goes on."""
        try:
            await step()
        except Exception as e:
            self.metrics.task_error(task)  # metrics
            if task not in self._failing:
                self._failing.add(task)
                event("task-error", master=self.id, task=task, error=f"{type(e).__name__}: {e}"[:300])
            return
        self._failing.discard(task)

    def bad_record(self, source: str, key: bytes | str = b"") -> None:
        """A record from the store that is not what it should be: skipped (or replaced) and
        counted; one line the first time a key is found bad."""
        self.metrics.bad_record(source)  # metrics
        name = key.decode("ascii", "replace") if isinstance(key, bytes) else key
        if (source, name) not in self._bad_seen and len(self._bad_seen) < 1000:
            self._bad_seen.add((source, name))
            event("bad-record", master=self.id, source=source, key=name[:100])

    def reload_spec(self, force: bool = False) -> None:
        """Instances come and go (scaling): follow the steering description when it changes."""
        try:
            mtime = self._spec.stat().st_mtime
        except OSError:
            return
        if mtime == self._spec_mtime and not force:
            return
        try:
            self.driver.driver = load_driver(self._spec)
            # A standby that holds buckets (promoted, or failed over to) is active, whatever the
            # description still says.
            owners = self.owners()
            self.standby = [i for i in load_standby(self._spec) if i not in owners]
            self.provisioner = load_provisioner(self._spec)
        except SteeringError as e:
            event("spec-unreadable", master=self.id, error=str(e))
            return
        self._spec_mtime = mtime

    def role_of(self, instance_id: str, owners: set[str] | None = None) -> str:
        """An instance's role as this master sees it (the roles: control/admin.py); ``owners``,
        the instances holding buckets, saves a read of the kernel's tables per call."""
        if instance_id in self.failed:
            return "failed"
        if instance_id in self.leaving:
            return "draining"
        if instance_id in (self.owners() if owners is None else owners):
            return "active"
        return "standby" if instance_id in self.standby else "ready"

    def owners(self) -> set[str]:
        """The instances that hold a bucket in either direction, from the kernel."""
        return {i for t in self.driver.driver.direction_tables().values() for i in t.values()}

    def active(self) -> list[str]:
        """The instances that carry traffic and are neither failed nor leaving, oldest first."""
        owners = set(self.driver.driver.table("forward").values())
        return [
            i
            for i in self.driver.driver.targets
            if i in owners and i not in self.failed and i not in self.leaving
        ]

    async def publish_members(self, owners: set[str] | None = None) -> None:
        """Write the membership (instance id -> role) to the store; the leader keeps it (the
        instances read it too: with ``follow = "backup"`` who backs up whom follows from it)."""
        if self.epoch is None:
            return
        owners = self.owners() if owners is None else owners
        members = {i: "joining" for i in self.joining}
        members |= {i: self.role_of(i, owners) for i in self.driver.driver.targets}
        if members == self._members:
            return
        try:  # the whole hash at once, in one script (no MULTI: the master's store user has none)
            await self._write_members(keys=[MEMBERS], args=[x for kv in members.items() for x in kv])
        except (RedisError, OSError):
            return
        self._members = members

    def _store_failed(self, e: Exception) -> None:
        if not self._store_lost:
            event("store-down", master=self.id, error=f"{type(e).__name__}: {e}"[:300])
        self._store_lost = True

    def _store_ok(self) -> None:
        """A store operation worked: after trouble, each instance's missed heartbeats wait until it
        has beaten on the store again, at most ``STORE_BACK_GRACE``."""
        if self._store_lost:
            self._store_lost = False
            self._grace_until = time.monotonic() + STORE_BACK_GRACE
            self._proven.clear()
            self._first_beat.clear()
            event("store-back", master=self.id, grace_ms=round(STORE_BACK_GRACE * 1000))

    def in_grace(self) -> bool:
        return self._store_lost or time.monotonic() < self._grace_until

    def _beat_since_back(self, instance_id: str, raw: bytes) -> None:
        """In the grace: an instance proves it reaches the store once its beat changed."""
        first = self._first_beat.setdefault(instance_id, raw)
        if first != raw:
            self._proven.add(instance_id)

    def _pid_alive(self, instance_id: str, pid: int) -> bool:
        """Does the instance's process run? Unknowable for an instance on another host: it counts
        as running, and only its heartbeats decide."""
        return instance_id in self.remote or running(pid)

    def _bad_lease(self, source: str) -> None:
        self.bad_record(source, LEASE_KEYS[source])

    def note(self, kind: str, **fields: Any) -> None:
        """An event line from this master (admin operations)."""
        event(kind, master=self.id, epoch=self.epoch, **fields)

    async def _lead(self) -> None:
        self.reload_spec()
        t0 = time.monotonic()
        try:
            epoch = await self.lease.acquire_or_renew(self.driver.gate.newest())
        except (RedisError, OSError) as e:
            epoch = None  # cannot reach the store: we cannot know that we still lead
            self._store_failed(e)
        else:
            self._store_ok()
        # The store's TTL started after t0: until this deadline no other master can hold the lease.
        self.lease_deadline = t0 + self.config.cluster.lease_ms / 1000 * LEASE_SAFETY if epoch else 0.0
        if epoch != self.epoch:
            if epoch is not None:
                try:
                    # Tell the gate at once: from now on a deposed leader's writes are refused,
                    # even before this one has moved a bucket (off the loop: a write of the old
                    # leader may hold the gate until its lease runs out).
                    await asyncio.to_thread(self.driver.gate.admit, epoch, self.lease_deadline)
                except SteeringError as e:
                    event("lead-refused", master=self.id, epoch=epoch, error=str(e))
                    self.lease_deadline = 0.0
                    return
                if self.store_ha:
                    await self._replicate_epoch()
                event("leader", master=self.id, epoch=epoch)
                self._members = {}  # write the membership anew
                self._next_discover = 0.0  # find the registered instances at once
                await self._load_members()
            else:
                event("follower", master=self.id, previous_epoch=self.epoch)
            self.epoch = epoch
            self.metrics.leadership(epoch is not None)  # metrics
            self._write_status()
            if epoch is not None:
                await self.publish_members()

    async def _replicate_epoch(self) -> None:
        """A new epoch on a replicated store: wait (briefly, best effort) until a replica has it,
        so that a failover of the store right now does not hand the next leader an older
        counter. The gate's floor (steering.epoch) keeps epochs rising whatever happens."""
        with contextlib.suppress(RedisError, OSError):
            await self.redis.execute_command("WAIT", 1, EPOCH_WAIT_MS)

    async def _load_members(self) -> None:
        """A new leader starts from what earlier leaders decided: instances already failed. Entries
        that are not an instance id and a role are skipped and counted; a key that is no hash is
        removed (the leader writes it anew)."""
        try:
            kind = await self.redis.type(MEMBERS)
            if kind not in (b"hash", b"none"):
                self.bad_record("member", MEMBERS)
                await self.redis.delete(MEMBERS)
                return
            members = await self.redis.hgetall(MEMBERS)
        except (RedisError, OSError):
            return
        failed = set()
        for k, v in members.items():
            instance_id = k.decode("ascii", "replace")
            role = v.decode("ascii", "replace")
            if not ID.fullmatch(instance_id) or role not in ROLES:
                self.bad_record("member", MEMBERS + b" " + k[:64])
            elif role == "failed":
                failed.add(instance_id)
        self.failed = failed

    async def _discover(self) -> None:
        """Find the registered instances (``SCAN MATCH fwc:reg:*``)."""
        found: set[str] = set()
        async for key in self.redis.scan_iter(match=REG_PREFIX + b"*", count=SCAN_COUNT):
            instance_id = key[len(REG_PREFIX) :].decode("ascii", "replace")
            if ID.fullmatch(instance_id):
                found.add(instance_id)
            else:
                self.bad_record("registration", key[:100])
        for instance_id in found - set(self.registered):
            self.registered[instance_id] = 0  # its pid comes with the next read

    async def _read_policy_version(self) -> None:
        """The stored policy's version, for status (which instance lags behind it); the record
        itself when the version changed, so that a store that lost it gets it back (restore)."""
        try:
            raw = await self.redis.hget(POLICY_KEY, VERSION_FIELD)
            if raw is None and self.known_policy is not None and self.epoch is not None:
                version, policy = self.known_policy
                if await self.policy.restore(version, policy, self.id, self.epoch):
                    event("policy-restored", master=self.id, version=version, epoch=self.epoch)
                self.stored_policy_version = version
                return
            if raw is None:
                self.stored_policy_version = NO_POLICY
                return
            if self.known_policy is None or raw != str(self.known_policy[0]).encode():
                self.known_policy = await self.policy.read()
            self.stored_policy_version = self.known_policy[0] if self.known_policy else NO_POLICY
        except (ResponseError, StoredPolicyError):  # a bad record: refused by the instances, reported by show
            self.bad_record("policy", POLICY_KEY)
            self.stored_policy_version = None
        except NotLeader:
            return

    async def _follow(self) -> None:
        """A follower keeps the stored policy too, so that whichever master leads after the store
        lost its data can write the record back (not only the one that led before). A store it
        cannot reach is the lease loop's to report."""
        self._next_discover = time.monotonic() + DISCOVER_INTERVAL
        with contextlib.suppress(RedisError, OSError):
            await self._read_policy_version()

    async def _watch(self) -> None:
        try:
            if time.monotonic() >= self._next_discover:
                await self._discover()
                await self._read_policy_version()
                self._next_discover = time.monotonic() + DISCOVER_INTERVAL
            # Registered or not: every instance steering knows is watched, so one that holds
            # buckets and stops beating is failed over however it ended (a clean stop included).
            ids = sorted((set(self.registered) | set(self.driver.driver.targets)) - self.leaving)
            keys = [HB_PREFIX + i.encode() for i in ids] + [REG_PREFIX + i.encode() for i in ids]
            values = await self.redis.mget(keys) if ids else []
        except (RedisError, OSError) as e:
            self._store_failed(e)
            return
        self._store_ok()
        in_grace = self.in_grace()
        owners = await self._owners_now()
        now = time.time()
        alive: list[str] = []
        newly_failed: list[tuple[str, str]] = []
        joining: set[str] = set()
        for instance_id, raw, reg in zip(ids, values[: len(ids)], values[len(ids) :], strict=True):
            beat = parse_beat(raw) if raw is not None else None
            if raw is not None and beat is None:  # skipped: as if it had not beaten
                self.bad_record("heartbeat", HB_PREFIX + instance_id.encode())
            if in_grace and beat is not None:
                self._beat_since_back(instance_id, raw)
            grace = in_grace and instance_id not in self._proven
            # the pid last seen beating, or (a master that just started leading) the registration's
            last = self.last_pid.get(instance_id) or self.registered.get(instance_id, 0)
            if reg is None:
                self.registered.pop(instance_id, None)  # deregistered (a clean stop), or never was
                if beat is None:
                    if instance_id in owners and instance_id not in self.failed:
                        if grace and last and self._pid_alive(instance_id, last):
                            continue  # the store lost its keys (failover, restart): beats come back
                        newly_failed.append((instance_id, "stopped"))  # its buckets would be black-holed
                    continue
            else:
                registration = parse_registration(reg)
                if registration is not None:
                    self.registered[instance_id] = registration[0]
                    self.policy_versions[instance_id] = registration_policy(reg)
                    if registration[2] and registration[2] != host_key():
                        self.remote.add(instance_id)
                    else:
                        self.remote.discard(instance_id)
                else:
                    self.bad_record("registration", REG_PREFIX + instance_id.encode())
                    self.registered.setdefault(instance_id, 0)
            if beat is not None:
                pid, beat_time = beat
                self.last_pid[instance_id], self.last_beat[instance_id] = pid, beat_time
                is_running = self._pid_alive(instance_id, pid)
            else:
                is_running = False
            reg_pid = self.registered.get(instance_id, 0)
            if (
                beat is None
                and reg_pid
                and reg_pid != self.last_pid.get(instance_id)
                and self._pid_alive(instance_id, reg_pid)
                and (instance_id not in owners or instance_id in self.failed)
            ):
                joining.add(instance_id)  # a new process, loading the table: not beating yet
                continue
            if instance_id in self.failed:
                if is_running:  # beating again (a resumed or new process): alive, though it has no buckets
                    self.failed.discard(instance_id)
                    event(
                        "instance-back",
                        instance=instance_id,
                        pid=self.last_pid.get(instance_id),
                        master=self.id,
                    )
                    await self.publish_members()
                    alive.append(instance_id)
                continue
            if beat is None:
                last = self.last_pid.get(instance_id) or self.registered.get(instance_id, 0)
                if grace and last and self._pid_alive(instance_id, last):
                    alive.append(instance_id)  # the store was away: its beats may not be there yet
                elif grace and last:
                    newly_failed.append((instance_id, "process-gone"))
                else:
                    newly_failed.append((instance_id, "heartbeat"))
            elif not is_running:
                newly_failed.append((instance_id, "process-gone"))
            else:
                alive.append(instance_id)
                self.last_ok[instance_id] = now
        if joining != self.joining:
            self.joining = joining
            await self.publish_members()
        else:
            # Buckets moved (a scale step, an operator's move): the roles, and so the ring, change.
            await self.publish_members(owners)
        for instance_id, reason in newly_failed:
            async with self.steer_lock:  # never between the reads and the writes of an admin move
                await self._fail_over(instance_id, reason, alive, now)
        # A failed instance that still holds buckets (no healthy instance then, or steering
        # refused the move) black-holes them: try again, once a second, while someone is alive.
        stranded = self.failed & owners - {i for i, _ in newly_failed} - self.leaving
        if stranded and alive:
            tick = time.monotonic()
            for instance_id in sorted(stranded):
                if self._retry_at.get(instance_id, 0.0) <= tick:
                    self._retry_at[instance_id] = tick + FAILOVER_RETRY
                    async with self.steer_lock:
                        reason = self._fail_reason.get(instance_id, "heartbeat")
                        await self._fail_over(instance_id, reason, alive, now)
        if self._rebalance_at and time.monotonic() >= self._rebalance_at and not newly_failed:
            self._rebalance_at = 0.0
            await self._rebalance()

    async def _rebalance(self) -> None:
        """The fair shares again over the active instances, after a failover put all of the
        failed one's buckets on its backup (only the excess moves, as in a scale step)."""
        members = self.active()
        try:
            moved = await self.admin.rebalance(members)
        except AdminError as e:
            event("rebalance-refused", error=e.message, master=self.id)
            return
        event(
            "rebalanced",
            to=members,
            buckets={d: len(mv) for d, mv in moved.items()},
            epoch=self.epoch,
            master=self.id,
        )
        await self.publish_members()

    async def _owners_now(self) -> set[str]:
        """The instances holding buckets, read from the kernel (off the event loop) at most every
        ``OWNERS_REFRESH`` and after each of our own steering writes."""
        if time.monotonic() >= self._owners_at + OWNERS_REFRESH:
            try:
                self._owners = await asyncio.to_thread(self.owners)
            except SteeringError as e:  # keep the last known owners; a line when this starts
                if "owners" not in self._failing:
                    self._failing.add("owners")
                    event("steering-unreadable", master=self.id, error=str(e))
                return self._owners
            self._failing.discard("owners")
            self._owners_at = time.monotonic()
        return self._owners

    def steered(self) -> None:
        """Our own steering write happened: read the owners anew on the next tick."""
        self._owners_at = -OWNERS_REFRESH

    async def _fail_over(self, instance_id: str, reason: str, healthy: list[str], now: float) -> None:
        """Move the buckets of a failed instance (only those) to the healthy ones.

        ``detect_ms``: for a dead process, the time since we last saw it alive (at most a tick
        plus the store round trip); for missed heartbeats, the time since its last heartbeat."""
        epoch = self.epoch
        if epoch is None:  # lost the lease meanwhile
            return
        pid = self.last_pid.get(instance_id, 0)
        since = self.last_beat if reason == "heartbeat" else self.last_ok
        detect_ms = (now - since.get(instance_id, now)) * 1000
        # Read first: should this fail, the instance is not marked failed, and the next tick tries again.
        driver = self.driver.driver
        holds = (
            await asyncio.to_thread(driver.buckets_of, instance_id, "both")
            if instance_id in driver.targets
            else []
        )
        self.failed.add(instance_id)
        self._fail_reason[instance_id] = reason
        if not holds:  # a standby, or an instance already emptied: nothing to reroute
            event("instance-gone", instance=instance_id, reason=reason, pid=pid, master=self.id)
            return
        if not healthy:
            event("failover-impossible", instance=instance_id, reason=reason, master=self.id)
            self.metrics.failover_error(reason, "no-healthy-instance")  # metrics
            return
        # A standby instance (ready, carrying nothing) takes all of the failed one's buckets;
        # without one, they spread over the healthy active instances.
        ready = [i for i in self.standby if i in healthy]
        targets = ready[:1] or [i for i in healthy if i not in self.standby] or healthy
        if not ready and self.config.sync.follow == Follow.BACKUP:
            # The designated backup follows the failed instance's changes: it holds its flows.
            # (The others would find them only by look-ups; see docs/architecture.md.) The ring
            # is the one the instances follow: from the membership published last.
            backup = backup_of(instance_id, [i for i, r in self._members.items() if r in RING_ROLES])
            if backup is not None and backup in healthy:
                targets = [backup]
                self._rebalance_at = time.monotonic() + REBALANCE_DELAY
        t0 = time.monotonic()
        try:
            moved = await asyncio.to_thread(
                self.driver.move, instance_id, targets, epoch, "both", self.lease_deadline
            )
        except SteeringError as e:
            event("failover-refused", instance=instance_id, reason=reason, error=str(e), master=self.id)
            self.metrics.failover_error(reason, "steering-refused")  # metrics
            return
        reroute_ms = (time.monotonic() - t0) * 1000
        # Tell the instances (their heartbeats read the key): connections established on the
        # failed instance in its last moment may have no state anywhere; for TAKEOVER_MS they
        # are picked up mid-stream (Engine.pickup). Best effort: without it they time out.
        with contextlib.suppress(RedisError, OSError):
            await self.redis.set(TAKEOVER_KEY, f"{epoch}:{instance_id}", px=TAKEOVER_MS)
        self.steered()
        self.failovers += 1
        self.metrics.failover(reason)  # metrics
        for i in targets:
            if i in self.standby:
                self.standby.remove(i)  # it carries traffic now: active
        event(
            "failover",
            instance=instance_id,
            reason=reason,
            pid=pid,
            to=targets,
            buckets={d: len(m) for d, m in moved.items()},
            detect_ms=round(detect_ms, 1),
            reroute_ms=round(reroute_ms, 1),
            epoch=epoch,
            master=self.id,
        )
        await self.publish_members()  # after the event line: its time is the reroute's
