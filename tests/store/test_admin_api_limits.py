"""The admin API under hostile clients: idle connections, bad lengths, deep JSON. A master (its
store is never asked here) with the in-memory steering driver serves the API on 127.0.0.1 with a
token, its event loop in a thread of the test."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fwcluster.config import load_config
from fwcluster.control import api as api_mod
from fwcluster.control.api import MAX_DEPTH, AdminApi
from fwcluster.control.master import Master
from fwcluster.steering import Balancer
from fwcluster.steering.spec import dump_spec

from .steering_memory import MemoryDriver, targets

TOKEN = "t" * 32


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[AdminApi, int]]:
    spec = dump_spec("symmetric", [Balancer("fwc-lb", "client")], 8, targets("fw1", "fw2"))
    (tmp_path / "steering.json").write_text(json.dumps(spec))
    m = Master("m1", load_config(None), tmp_path, "redis://127.0.0.1:1")
    m.driver.driver = MemoryDriver(["fw1", "fw2"])
    m.driver.driver.assign({b: "fw1" for b in range(8)})
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = AdminApi(m.admin, loop, tmp_path / "m1.api.sock", ("127.0.0.1", port), TOKEN)
    try:
        yield server, port
    finally:
        server.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    token: str | None = TOKEN,
) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body, h)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def raw(port: int, data: bytes) -> tuple[int, dict[str, object]]:
    """Send bytes as they are (lengths a client library would not send) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_400_idle_connections_do_not_keep_status_from_being_answered(api: tuple[AdminApi, int]) -> None:
    server, port = api
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(400)]
    try:
        idle[0].sendall(b"GET /v1/status HTTP/1.1\r\n")  # one of them sends half a head
        deadline = time.monotonic() + 10
        while server.open < 400 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.open >= 400  # all held open by the server, none answered yet
        t0 = time.monotonic()
        status, doc = request(port, "GET", "/v1/status")
        took = time.monotonic() - t0
        assert status == 200 and [i["id"] for i in doc["instances"]] == ["fw1", "fw2"]  # type: ignore[union-attr]
        assert took < 1.0, f"status took {took:.2f} s behind 400 idle connections"
        assert threading.active_count() <= threads_before + 2  # no thread per connection
    finally:
        for s in idle:
            s.close()


def test_bad_lengths_and_deep_json_are_refused_with_one_line_each(
    api: tuple[AdminApi, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, port = api
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    with caplog.at_level(logging.WARNING, logger="fwcluster.master.api"):
        status, doc = raw(port, b"POST /v1/scale HTTP/1.1\r\n" + auth + b"Content-Length: -1\r\n\r\n{}")
        assert status == 400 and "Content-Length" in str(doc["error"])
        status, doc = raw(port, b"POST /v1/scale HTTP/1.1\r\n" + auth + b"\r\n")
        assert status == 411
        status, doc = raw(port, b"POST /v1/scale HTTP/1.1\r\n" + auth + b"Content-Length: 99999999\r\n\r\n")
        assert status == 413
        deep = b"[" * 100_000 + b"]" * 100_000  # json.loads of this raises RecursionError
        status, doc = request(port, "POST", "/v1/scale", deep, {"Content-Length": str(len(deep))})
        assert status == 413  # over the body bound first
        deep = b'{"active": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}"
        status, doc = request(port, "POST", "/v1/scale", deep)
        assert status == 400 and "deeper" in str(doc["error"])
        status, doc = request(port, "GET", "/v1/status", token=None)
        assert status == 401
        status, doc = raw(port, b"NOT HTTP\r\n\r\n")
        assert status == 400
    lines = [r for r in caplog.records if r.name == "fwcluster.master.api"]
    assert len(lines) == 7, [r.getMessage() for r in lines]  # one line per refused request
    assert all("\n" not in r.getMessage() and r.exc_info is None for r in lines)  # no tracebacks


def test_a_client_that_sends_nothing_is_closed_after_the_head_timeout(
    api: tuple[AdminApi, int], monkeypatch: pytest.MonkeyPatch
) -> None:

    server, port = api
    monkeypatch.setattr(api_mod, "HEAD_TIMEOUT", 0.2)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        data = s.recv(65536)  # the server answers 408 and closes
    assert b" 408 " in data.split(b"\r\n")[0]
    deadline = time.monotonic() + 5
    while server.open and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.open == 0
