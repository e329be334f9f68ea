"""JSON-lines logs: every long-running fwcluster process (instance, master, the testbed's agent)
writes one JSON object per line to stdout, one line per event (journald, or the testbed's log
file, takes stdout as it is). The line format is in docs/logging.md:

    {"time": 1764685572.123456, "level": "info", "process": "instance", "id": "fw1",
     "event": "ready", ...the event's fields..., "msg": "instance fw1 ready"}

``time`` is the unix time in seconds (microseconds), so a reader compares it with ``time.time()``;
``event`` is a stable name a reader may select on, the other keys are the event's fields.

Two ways in, one line shape, one writer:

- :func:`event` writes an event line directly (the master's events: control/master.py);
- stdlib ``logging`` calls, once :func:`setup` installed :class:`JsonFormatter` on the root
  logger: the event name and fields come from ``extra=`` (build it with :func:`fields`), the
  message goes to ``msg``; a record without an event name is event ``log``.

The core and the engine are sans-I/O and never log (they count); the layers above do, never per
packet (the denied-connection lines are rate-limited: instance/denied.py).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

# The keys every line has, in this order; an event field of the same name is renamed ``<name>_``.
BASE_KEYS = ("time", "level", "process", "id", "event")
GENERIC_EVENT = "log"  # a logging record that names no event
_context = {"process": "fwcluster", "id": ""}
_lock = threading.Lock()  # one line at a time, from any thread (the heartbeat thread logs too)
# What a LogRecord carries of its own: everything else on a record came in through ``extra=``.
_RECORD_KEYS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def setup(process: str, ident: str, level: int = logging.INFO) -> None:
    """Make this process's logs JSON lines on stdout: ``process`` (instance, master, agent) and
    ``ident`` (its id) go into every line. Replaces the handlers of the root logger."""
    _context["process"] = process
    _context["id"] = ident
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = StdoutHandler()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)


def fields(event: str, **values: Any) -> dict[str, Any]:
    """``extra=`` for a logging call: ``log.warning("...", extra=fields("store-down", error=...))``."""
    return {"event": event, **values}


def line(level: str, event: str, values: Mapping[str, Any], when: float | None = None) -> str:
    """One log line (without the newline)."""
    doc: dict[str, Any] = {
        "time": round(time.time() if when is None else when, 6),
        "level": level,
        "process": _context["process"],
        "id": _context["id"],
        "event": event,
    }
    for key, value in values.items():
        doc[f"{key}_" if key in doc else key] = value
    return json.dumps(doc, default=str)


def write(text: str) -> None:
    """Write one line to stdout (as it is now: a test may have replaced it). A closed or broken
    stdout loses the line, never the process."""
    with _lock:
        try:
            out = sys.stdout
            out.write(text + "\n")
            out.flush()
        except (OSError, ValueError):
            pass


def event(name: str, /, level: int = logging.INFO, **values: Any) -> None:
    """Write one event line: ``name`` and its fields."""
    write(line(_level_name(level), name, values))


def _level_name(level: int) -> str:
    return logging.getLevelName(level).lower()


class JsonFormatter(logging.Formatter):
    """A logging record as one line: the event name and fields from ``extra=``, the message as
    ``msg``, the logger's name as ``logger``, an exception as ``error`` and ``traceback``."""

    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in record.__dict__.items() if k not in _RECORD_KEYS}
        name = extra.pop("event", None)
        values: dict[str, Any] = extra
        values["msg"] = record.getMessage()
        values["logger"] = record.name
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            values.setdefault("error", f"{type(exc).__name__}: {exc}")
            values["traceback"] = self.formatException(record.exc_info)
        return line(_level_name(record.levelno), str(name or GENERIC_EVENT), values, record.created)


class StdoutHandler(logging.Handler):
    """Formatted records to stdout through :func:`write` (one lock with :func:`event`)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        write(text)
