"""The log format (fwcluster.eventlog): one valid JSON object per line, with the base keys
(time, level, process, id, event) and the event's fields, from the stdlib logging calls and from
``event()`` alike; and the token bucket the log limiter and the look-up gate share."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fwcluster import eventlog
from fwcluster.control.master import event as master_event
from fwcluster.statetable.guard import TaskErrors
from fwcluster.tokenbucket import TokenBucket


@pytest.fixture
def jsonlog() -> Iterator[None]:
    """The process's logging as a running instance has it (restored afterwards)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    eventlog.setup("instance", "fw7")
    try:
        yield
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)
        eventlog._context.update(process="fwcluster", id="")


def lines(out: str) -> list[dict[str, Any]]:
    """Every line of ``out`` as a JSON object (fails on a line that is not one)."""
    docs = []
    for ln in out.splitlines():
        doc = json.loads(ln)
        assert isinstance(doc, dict), ln
        docs.append(doc)
    return docs


def test_a_logging_call_with_an_event_name_is_one_json_line_with_its_fields(
    jsonlog: None, capsys: pytest.CaptureFixture[str]
) -> None:
    before = time.time()
    logging.getLogger("fwcluster.instance").warning(
        "instance %s: store down: %s", "fw7", "refused", extra=eventlog.fields("store-down", error="refused")
    )
    (doc,) = lines(capsys.readouterr().out)
    assert list(doc)[:5] == list(eventlog.BASE_KEYS)
    assert doc["level"] == "warning" and doc["process"] == "instance" and doc["id"] == "fw7"
    assert doc["event"] == "store-down" and doc["error"] == "refused"
    assert doc["msg"] == "instance fw7: store down: refused" and doc["logger"] == "fwcluster.instance"
    assert before <= doc["time"] <= time.time() + 1  # unix seconds, comparable with time.time()


def test_any_record_stays_one_valid_line(jsonlog: None, capsys: pytest.CaptureFixture[str]) -> None:
    """No event name: event "log"; a newline in the message, a value JSON cannot hold, a field
    named like a base key, an exception with its traceback: each still one object on one line."""
    log = logging.getLogger("fwcluster.test")
    log.info("two\nlines")
    log.info("odd", extra={"event": "odd", "where": {1, 2}, "id": "fake"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed", extra=eventlog.fields("task-error", task="t"))
    log.debug("not shown: below info")
    plain, odd, failed = lines(capsys.readouterr().out)
    assert plain["event"] == eventlog.GENERIC_EVENT and plain["msg"] == "two\nlines"
    assert odd["where"] == "{1, 2}" and odd["id"] == "fw7" and odd["id_"] == "fake"
    assert failed["level"] == "error" and failed["error"] == "ValueError: boom"
    assert "Traceback" in failed["traceback"] and failed["task"] == "t"


def test_event_writes_the_same_shape_without_logging(
    jsonlog: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The master's event lines keep their ``event`` and ``time`` keys and every field."""
    master_event("failover", instance="fw1", reason="heartbeat", to=["fw2"], detect_ms=501.2, master="m1")
    master_event("task-error", master="m1", task="watch", error="E: x")
    fo, te = lines(capsys.readouterr().out)
    assert fo["event"] == "failover" and fo["level"] == "info" and fo["to"] == ["fw2"]
    assert fo["instance"] == "fw1" and fo["detect_ms"] == 501.2 and isinstance(fo["time"], float)
    assert te["level"] == "warning" and te["task"] == "watch"


def test_task_errors_are_task_error_lines(jsonlog: None, capsys: pytest.CaptureFixture[str]) -> None:
    errors = TaskErrors("instance fw7", logging.getLogger("fwcluster.instance"))
    for _ in range(3):
        errors.note("sweeper", RuntimeError("bad"))
    (doc,) = lines(capsys.readouterr().out)  # one line, not three (guard.LOG_INTERVAL)
    assert doc["event"] == "task-error" and doc["task"] == "sweeper" and doc["count"] == 1
    assert doc["error"] == "RuntimeError: bad" and "survived" in doc["msg"]


def test_a_closed_stdout_loses_the_line_not_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    class Closed:
        def write(self, text: str) -> int:
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr("sys.stdout", Closed())
    eventlog.event("ready")  # no exception


def test_the_token_bucket_on_a_fake_clock() -> None:
    b = TokenBucket(rate=10, burst=10, now=100.0)
    assert sum(b.take(100.0) for _ in range(25)) == 10  # the burst, then nothing
    assert not b.take(100.05)  # half a token
    assert b.take(100.25)  # two and a half tokens later
    assert b.take(100.25) and not b.take(100.25)
    assert b.available(102.0) == 10  # never more than the burst
    assert b.available(50.0) == 10  # a clock that goes back refills nothing
