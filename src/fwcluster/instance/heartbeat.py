"""Heartbeats: a running instance says so in the store every ``heartbeat_ms``.

``fwc:hb:<id>`` = ``<pid>:<unix time in ms>``, with a TTL of ``heartbeat_ms * misses``: the key vanishes
when the instance stops beating (hung, cut off, dead), which is what masters watch. The instance
registers with a key of its own,
``fwc:reg:<id>`` = ``<pid>:<unix time in ms of the start>:<host key>:<policy>`` (no TTL; the host
key, procutil.host_key, tells a master whether it can see the pid; the policy is the version of
the cluster policy it applied, fwcluster/policy.py, or ``x`` while it has none and fails closed;
older instances wrote neither of the last two fields; written before it loads the table and
again with every beat, so a store that lost its data learns it
back); masters find registrations with ``SCAN MATCH fwc:reg:*``. A clean stop deletes
both keys in one command. These two keys are the only control keys an instance writes (its store
user may touch no other: docs/architecture.md, "Threat model").

The beats come from a thread of their own, not from the event loop. The event loop also runs the
datapath: after a pause (SIGSTOP, a long GC, a burst) it first works through the packets the kernel
queued meanwhile, and a heartbeat waiting behind that backlog made masters fail over a healthy,
busy instance. A beat from a thread only needs the GIL, which Python hands over every few ms.

A thread alone would keep beating for a process whose event loop is wedged, and its buckets would
be black-holed (the queue fills, the kernel drops: fail closed, but down). So the loop stamps its
progress (``loop_alive``) and the thread only beats while the last stamp is at most
``stall_ms`` old: a stopped process is missed after the TTL, a wedged loop after ``stall_ms`` + TTL.
This is the split a Kafka consumer makes between session heartbeats and its poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time

from redis.exceptions import RedisError

from fwcluster import eventlog
from fwcluster.procutil import host_key
from fwcluster.statetable.discovery import sync_client

HB_PREFIX = b"fwc:hb:"
REG_PREFIX = b"fwc:reg:"
# Set by the leading master for a few seconds after it failed an instance over (PX); every beat
# reads it, and while it exists the engine picks up TCP segments nobody knows (Engine.pickup).
TAKEOVER_KEY = b"fwc:takeover"
STALL_MS = 2000  # the event loop may be busy this long (backlog after a pause) and still count as alive

log = logging.getLogger("fwcluster.instance")


class Heartbeat:
    def __init__(
        self, url: str, instance_id: str, interval_ms: int, ttl_ms: int, stall_ms: int = STALL_MS
    ) -> None:
        self.id = instance_id
        self.interval = interval_ms / 1000
        self.ttl_ms = ttl_ms
        self.stall = max(stall_ms, ttl_ms) / 1000
        self.sent = 0
        self.failed = 0
        self.skipped = 0  # beats withheld because the event loop made no progress
        self.takeover = False  # did the last beat find TAKEOVER_KEY (a failover just happened)?
        # a redis+sentinel:// URL: beats go to the primary the sentinels name (statetable/discovery.py)
        self._r = sync_client(url, max(0.1, self.interval * 2))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stamper: asyncio.Task[None] | None = None
        self.loop_alive = time.monotonic()
        self._reg_key = REG_PREFIX + instance_id.encode()
        self._registration = f"{os.getpid()}:{int(time.time() * 1000)}:{host_key()}"
        # the version of the policy applied (instance/policy_watch.py); -1: none, failing closed
        self.policy_version = -1

    @property
    def registration(self) -> str:
        pv = self.policy_version
        return f"{self._registration}:{'x' if pv < 0 else pv}"

    def register(self) -> None:
        """Register before loading the table: the leader sees the instance as "joining" until it
        beats; best effort (every beat registers again)."""
        with contextlib.suppress(RedisError, OSError):
            self._r.set(self._reg_key, self.registration)

    def start(self) -> None:
        """Start beating (call from inside the running event loop, which the stamper task proves alive)."""
        self.loop_alive = time.monotonic()
        self._stamper = asyncio.create_task(self._stamp(), name="heartbeat-stamp")
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.id}", daemon=True)
        self._thread.start()

    async def _stamp(self) -> None:
        while True:
            self.loop_alive = time.monotonic()
            await asyncio.sleep(self.interval)

    def _beat(self) -> None:
        key = HB_PREFIX + self.id.encode()
        pid = os.getpid()
        failing = False
        while not self._stop.is_set():
            if time.monotonic() - self.loop_alive > self.stall:
                self.skipped += 1
            else:
                try:
                    pipe = self._r.pipeline(transaction=False)
                    pipe.set(key, f"{pid}:{int(time.time() * 1000)}", px=self.ttl_ms)
                    pipe.set(self._reg_key, self.registration)
                    pipe.get(TAKEOVER_KEY)
                    beat, reg, takeover = pipe.execute(raise_on_error=False)
                    for res in (beat, reg):
                        if isinstance(res, Exception):
                            raise res
                    # An error here (a store user without the read right) is "no takeover".
                    self.takeover = isinstance(takeover, bytes)
                    self.sent += 1
                    if failing:
                        log.warning(
                            "instance %s: heartbeats go through again",
                            self.id,
                            extra=eventlog.fields("heartbeat-ok", failed=self.failed),
                        )
                    failing = False
                except Exception as e:  # one failed beat never ends the thread
                    self.failed += 1
                    if not failing:  # one line when beats start failing, not one per beat
                        error = f"{type(e).__name__}: {e}"[:300]
                        log.warning(
                            "instance %s: heartbeat failed: %s",
                            self.id,
                            error,
                            extra=eventlog.fields("heartbeat-failed", error=error),
                        )
                    failing = True
            self._stop.wait(self.interval)

    async def stop(self) -> None:
        self._stop.set()
        if self._stamper is not None:
            self._stamper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stamper
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2.0)
        await asyncio.to_thread(self._deregister)

    def _deregister(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            # A clean stop deregisters at once (both keys in one command). Masters still watch an
            # instance that holds buckets: its stop is a failover (control/master.py).
            self._r.delete(self._reg_key, HB_PREFIX + self.id.encode())
        with contextlib.suppress(Exception):
            self._r.close()


PID_MAX = 1 << 22  # the kernel's upper bound for pid_max
_BEAT = re.compile(rb"([1-9][0-9]{0,6}):([0-9]{1,15})")  # pid, unix time in ms (below year 33658)
# ... and a host key, and the policy version applied
_REGISTRATION = re.compile(rb"([1-9][0-9]{0,6}):([0-9]{1,15})(?::([0-9a-f]{16})(?::([0-9]{1,15}|x))?)?")
ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # an instance id as masters accept it from the store


def parse_beat(raw: object) -> tuple[int, float] | None:
    """(pid, unix time in seconds) of a heartbeat or registration value; None when it is not one
    (the caller skips it and counts it)."""
    if not isinstance(raw, bytes):
        return None
    m = _BEAT.fullmatch(raw)
    if m is None or int(m[1]) >= PID_MAX:
        return None
    return int(m[1]), int(m[2]) / 1000


def parse_registration(raw: object) -> tuple[int, float, str] | None:
    """(pid, unix time in seconds of the start, host key or "") of a registration; None when it is
    not one (the caller skips it and counts it)."""
    if not isinstance(raw, bytes):
        return None
    m = _REGISTRATION.fullmatch(raw)
    if m is None or int(m[1]) >= PID_MAX:
        return None
    return int(m[1]), int(m[2]) / 1000, (m[3] or b"").decode()


def registration_policy(raw: object) -> int | None:
    """The policy version a registration says its instance applied: -1 for none (it fails
    closed), None when it does not say (an older instance) or is no registration."""
    if not isinstance(raw, bytes):
        return None
    m = _REGISTRATION.fullmatch(raw)
    if m is None or m[4] is None:
        return None
    return -1 if m[4] == b"x" else int(m[4])
