"""Long-running tasks that outlive their own mistakes.

Every background loop of an instance (the shared table's writer, feed follower and health watch,
the instance's expiry sweep and fast-path count, the held-packet ticker) catches what one
iteration raises and hands it to :meth:`TaskErrors.note`: it is counted for that task, logged
as one line (at most one per task every ``LOG_INTERVAL`` seconds, never a traceback flood), and
the loop goes on after a short pause (``ERROR_PAUSE``, so a fault that repeats cannot spin a
core). Cancellation is not an error: it ends the task as before.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fwcluster import eventlog

LOG_INTERVAL = 10.0  # seconds between two log lines about one task's errors
ERROR_PAUSE = 0.1  # seconds a loop waits after a failed iteration

# The instance's long-running tasks, so every counter exists (at 0) from the start.
TASKS = ("writer", "feed", "health", "lookup", "sweeper", "fast-count", "ticker")


class CountedLog:
    """Counts events by name and logs one line per name at most every ``interval`` seconds (the
    count so far appended), so a fault that repeats thousands of times a second stays one line:
    event ``event`` with the name as field ``key``, ``count`` and the caller's fields."""

    def __init__(
        self,
        logger: logging.Logger,
        names: tuple[str, ...] = (),
        interval: float = LOG_INTERVAL,
        event: str = "counted",
        key: str = "name",
    ) -> None:
        self.log = logger
        self.event = event
        self.key = key
        self.counts: dict[str, int] = dict.fromkeys(names, 0)
        self.interval = interval
        self._logged: dict[str, float] = {}

    def note(self, name: str, fmt: str, *args: object, **fields: Any) -> int:
        """Count one event of ``name``; log ``fmt % args`` (and ``fields``) when that is due.
        Returns the count."""
        n = self.counts.get(name, 0) + 1
        self.counts[name] = n
        now = time.monotonic()
        last = self._logged.get(name)
        if last is None or now - last >= self.interval:
            self._logged[name] = now
            extra = eventlog.fields(self.event, **{self.key: name}, count=n, **fields)
            self.log.warning(fmt + " (%d so far)", *args, n, extra=extra)
        return n


class TaskErrors:
    """Exceptions survived, counted per task (``counts``)."""

    def __init__(self, owner: str, logger: logging.Logger) -> None:
        self.owner = owner
        self._log = CountedLog(logger, TASKS, event="task-error", key="task")
        self.counts = self._log.counts

    def note(self, task: str, e: BaseException) -> None:
        """Count ``e`` for ``task``; log one line now and then."""
        error = f"{type(e).__name__}: {e}"[:300]
        self._log.note(task, "%s: task %s survived %s", self.owner, task, error, error=error)
