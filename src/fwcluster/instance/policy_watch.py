"""An instance's side of the cluster policy (fwcluster/policy.py): read the stored version before
the queue is bound, then pick up every new one within a poll.

A thread of its own, with a blocking store client, does every store read and every parse: the
event loop, which carries the packets, only takes a checked :class:`Policy` (through
``call_soon_threadsafe``) and hands its ruleset to the engine between two events
(``Engine.set_ruleset``). Every ``POLL_INTERVAL`` the thread reads the version field (one
``HGET``); when it changed, the record (version and body in one ``HMGET``), which it checks as
bad input: a record that is not a valid policy is refused whole, counted (``refused``) and
logged, and the instance keeps the policy it applied.

At the start (:meth:`PolicyWatch.initial`, before the queue is bound) the stored policy is the
one applied; the config's rules only when the store holds none. A store that cannot be read
within ``START_WAIT``, or a bad record, leaves the instance with no policy it can trust: it fails
closed (no new connection passes; ``DENY_ALL``) until a read succeeds. A store that lost the
record later (a restart without persistence) changes nothing: the instance keeps what it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from fwcluster import eventlog
from fwcluster.policy import (
    BODY_FIELD,
    DENY_ALL,
    NO_POLICY,
    POLICY_KEY,
    VERSION_FIELD,
    Policy,
    PolicyError,
    decode_record,
)
from fwcluster.statetable.discovery import sync_client
from fwcluster.statetable.guard import CountedLog

log = logging.getLogger("fwcluster.instance")

POLL_INTERVAL = 0.2  # seconds between two reads of the stored version: a new one is applied within this
START_WAIT = 5.0  # seconds a starting instance tries to read the stored policy before failing closed
START_RETRY = 0.25
READ_TIMEOUT = 0.5
UNKNOWN = -1  # the version of DENY_ALL: no policy could be read (fail closed)

Apply = Callable[[int, Policy], None]


class PolicyWatch:
    def __init__(self, url: str, instance_id: str, fallback: Policy, interval: float = POLL_INTERVAL) -> None:
        self.id = instance_id
        self.fallback = fallback  # the config's rules: when the store holds no policy
        self.interval = interval
        self.applied = UNKNOWN  # set by the event loop once it applied a version
        self.refused = 0  # records read from the store that were no valid policy
        self.read_errors = 0
        self._r = sync_client(url, READ_TIMEOUT)
        self._log = CountedLog(log, event="policy-refused", key="what")
        self._seen: bytes | None = b""  # the raw version handed over or refused last (b"": none yet)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ off the event loop
    def initial(self) -> tuple[int, Policy]:
        """The policy to start with (blocking: run it in a thread, before the queue is bound)."""
        deadline = time.monotonic() + START_WAIT
        while True:
            try:
                raw = self._r.hget(POLICY_KEY, VERSION_FIELD)
                if raw is None:
                    self._seen = None
                    return NO_POLICY, self.fallback
                return self._record()
            except PolicyError:
                return UNKNOWN, DENY_ALL  # refused and logged by _record
            except (RedisError, OSError) as e:
                if time.monotonic() >= deadline:
                    self.read_errors += 1
                    log.warning(
                        "instance %s: cannot read the cluster policy (%s: %s); no new connection "
                        "passes until it can",
                        self.id, type(e).__name__, e,
                        extra=eventlog.fields("policy-unreadable", error=f"{type(e).__name__}: {e}"),
                    )  # fmt: skip
                    return UNKNOWN, DENY_ALL
                time.sleep(START_RETRY)

    def _record(self) -> tuple[int, Policy]:
        """Read and check the whole record; PolicyError (counted, logged) for a bad one."""
        raw, body = self._r.hmget(POLICY_KEY, [VERSION_FIELD, BODY_FIELD])
        self._seen = raw
        try:
            return decode_record(raw, body)
        except PolicyError as e:
            self.refused = self._log.note(
                "refused", "instance %s: refused the stored policy: %s; keeping version %s",
                self.id, e, self.applied if self.applied != UNKNOWN else "none (fail closed)",
            )  # fmt: skip
            raise

    def start(self, loop: asyncio.AbstractEventLoop, apply: Apply) -> None:
        """Poll in a thread; ``apply`` runs on ``loop`` with each new version."""
        self._thread = threading.Thread(
            target=self._poll, args=(loop, apply), name=f"policy-{self.id}", daemon=True
        )
        self._thread.start()

    def _poll(self, loop: asyncio.AbstractEventLoop, apply: Apply) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            try:
                found = self.step()
                if failing:
                    log.warning(
                        "instance %s: the cluster policy can be read again",
                        self.id,
                        extra=eventlog.fields("policy-readable"),
                    )
                failing = False
            except Exception as e:  # one failed read never ends the thread
                self.read_errors += 1
                if not failing:
                    log.warning(
                        "instance %s: cannot read the cluster policy: %s: %s",
                        self.id,
                        type(e).__name__,
                        e,
                        extra=eventlog.fields("policy-unreadable", error=f"{type(e).__name__}: {e}"),
                    )
                failing = True
                continue
            if found is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed: the instance stops
                    loop.call_soon_threadsafe(apply, *found)

    def step(self) -> tuple[int, Policy] | None:
        """One poll: a new (version, policy) to apply, or None."""
        raw = self._r.hget(POLICY_KEY, VERSION_FIELD)
        if raw == self._seen:
            return None
        if raw is None:
            self._seen = None
            if self.applied == UNKNOWN:
                return NO_POLICY, self.fallback
            log.warning(
                "instance %s: the store holds no policy; keeping version %d",
                self.id,
                self.applied,
                extra=eventlog.fields("policy-missing", version=self.applied),
            )
            return None
        try:
            version, policy = self._record()
        except PolicyError:
            return None
        return (version, policy) if version != self.applied else None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        with contextlib.suppress(Exception):
            self._r.close()
