"""The admin API: HTTP with JSON, served by every master; the leader carries out changes.

    GET  /v1/status                   this master's view: leader?, epoch, instances with role and buckets
    POST /v1/scale                    {"active": N}: scale to N active instances
    POST /v1/instances/<id>/drain     move the instance's buckets away; it stays up, "ready"
    POST /v1/instances/<id>/stop      drain, then stop and remove it
    GET  /v1/policy                   the stored policy: version, default, rules (0: none stored)
    POST /v1/policy/diff              {"policy": TEXT}: what applying it would change (nothing changes)
    POST /v1/policy                   {"policy": TEXT}: validate it whole, store it as the next version

Every answer is one JSON object; a refusal is ``{"error": "<one line>"}`` with a 4xx/5xx status,
and nothing changed. A master that does not lead answers changes with 409 and names the leader.

Two listeners: a Unix socket in the run dir (``<id>.api.sock``, mode 0600: whoever may open it is
root on this host, so no token), which the CLI uses; and optionally a network address, where every
request must carry ``Authorization: Bearer <token>`` (compared in constant time).

The listeners run on an event loop of their own, in a thread: a connection costs a coroutine, not a
thread, and nothing a client does reaches the master's loop before its request is complete and
authorized. Limits: ``MAX_CONNECTIONS`` open at once (beyond: 503 at once), the request head within
``HEAD_TIMEOUT`` and ``MAX_HEAD`` bytes, a body only with a valid ``Content-Length`` (a POST
without one: 411; negative or not a number: 400; over ``MAX_BODY``: 413) and within
``BODY_TIMEOUT``, JSON nested at most ``MAX_DEPTH`` deep, at most ``MAX_WORKERS`` requests at work
on the master at once (beyond: 503). One request per connection. The work itself runs on the
master's event loop (so it never races the failure detector), bounded by ``CALL_TIMEOUT`` (504).
Each refused request is one log line (at most ``LOG_BURST`` a second, then a count), never a
traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fwcluster import eventlog
from fwcluster.control.admin import Admin, AdminError

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024
MAX_DEPTH = 32
MAX_CONNECTIONS = 1024
MAX_WORKERS = 8
HEAD_TIMEOUT = 5.0
BODY_TIMEOUT = 5.0
CALL_TIMEOUT = 300.0  # a scale out builds namespaces and waits for instances to join
LOG_BURST = 10  # refusal lines per second; the rest are counted in the next line
_INSTANCE_OP = re.compile(r"^/v1/instances/([A-Za-z0-9_.-]{1,64})/(drain|stop)$")

log = logging.getLogger("fwcluster.master.api")

Call = Callable[[], Awaitable[dict[str, Any]]]


class _Refusals:
    """One line per refused request, at most LOG_BURST a second; the rest are counted."""

    def __init__(self) -> None:
        self._second = 0
        self._lines = 0
        self._hidden = 0
        self.total = 0

    def note(self, peer: str, what: str, status: int, message: str) -> None:
        self.total += 1
        now = int(time.monotonic())
        if now != self._second:
            if self._hidden:
                log.warning(
                    "admin api: %d more refused requests were not logged",
                    self._hidden,
                    extra=eventlog.fields("api-refused-suppressed", count=self._hidden),
                )
            self._second, self._lines, self._hidden = now, 0, 0
        if self._lines >= LOG_BURST:
            self._hidden += 1
            return
        self._lines += 1
        log.warning(
            "admin api: refused %s %s: %d %s",
            peer,
            what,
            status,
            message[:200],
            extra=eventlog.fields("api-refused", peer=peer, request=what, status=status, error=message[:200]),
        )


def json_depth(raw: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for c in raw:
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # quote
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif c in (0x5D, 0x7D):
            depth -= 1
    return deepest


class AdminApi:
    def __init__(
        self,
        admin: Admin,
        loop: asyncio.AbstractEventLoop,
        unix_path: Path,
        tcp: tuple[str, int] | None = None,
        token: str | None = None,
    ) -> None:
        if tcp is not None and not token:
            raise ValueError("an admin API on a network address needs a token")
        self.admin = admin
        self.master_loop = loop
        self.unix_path = unix_path
        self.refusals = _Refusals()
        self.open = 0  # connections open now
        self.working = 0  # requests at work on the master now
        # The sockets are bound here, so a busy address is an OSError for the caller.
        unix_path.unlink(missing_ok=True)
        old = os.umask(0o177)  # the socket is born 0600
        try:
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            unix.bind(str(unix_path))
        finally:
            os.umask(old)
        self._socks: list[tuple[socket.socket, str | None]] = [(unix, None)]
        if tcp is not None:
            host, port = tcp
            net = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            net.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                net.bind((host, port))
            except OSError:
                net.close()
                unix.close()
                raise
            self._socks.append((net, token))
        for s, _ in self._socks:
            s.listen(128)
            s.setblocking(False)
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.AbstractServer] = []
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="admin-api", daemon=True)
        self._thread.start()
        ready.wait(10)

    # --- the API's own loop ---------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        finally:
            ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _start(self) -> None:
        for sock, token in self._socks:

            def serve(
                r: asyncio.StreamReader, w: asyncio.StreamWriter, token: str | None = token
            ) -> Awaitable[None]:
                return self._connection(r, w, token)

            if sock.family == socket.AF_UNIX:
                server = await asyncio.start_unix_server(serve, sock=sock, limit=MAX_HEAD)
            else:
                server = await asyncio.start_server(serve, sock=sock, limit=MAX_HEAD)
            self._servers.append(server)

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str | None
    ) -> None:
        peer = _peer(writer)
        what = "request"
        self.open += 1
        try:
            if self.open > MAX_CONNECTIONS:
                raise AdminError(503, f"too many connections (at most {MAX_CONNECTIONS})")
            method, path, headers = await self._head(reader)
            what = f"{method} {path}"
            _authorize(headers, token)
            body = await self._body(reader, method, headers)
            call = self._route(method, path, body)
            status, doc = HTTPStatus.OK, await self._work(call)
        except AdminError as e:
            status, doc = HTTPStatus(e.status), {"error": e.message}
            self.refusals.note(peer, what, e.status, e.message)
        except (ConnectionError, asyncio.IncompleteReadError):  # gone before a request: no line
            status, doc = HTTPStatus.BAD_REQUEST, None
        except Exception as e:  # a bug must not end the server: one line, 500
            message = f"internal error: {type(e).__name__}: {e}"
            status, doc = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": message[:300]}
            self.refusals.note(peer, what, 500, message)
        finally:
            self.open -= 1
        if doc is not None:
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                writer.write(_response(status, doc))
                await asyncio.wait_for(writer.drain(), HEAD_TIMEOUT)
        writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _head(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except TimeoutError:
            raise AdminError(408, f"no complete request within {HEAD_TIMEOUT:g} s") from None
        except asyncio.LimitOverrunError:
            raise AdminError(431, f"request head over {MAX_HEAD} bytes") from None
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                raise ConnectionError("closed before a request") from None
            raise AdminError(400, "the request ended before its head did") from None
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
            raise AdminError(400, "not an HTTP/1.x request line")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name.strip() or name != name.strip():
                raise AdminError(400, "malformed header line")
            headers[name.lower()] = value.strip()
        return parts[0], parts[1], headers

    async def _body(
        self, reader: asyncio.StreamReader, method: str, headers: dict[str, str]
    ) -> dict[str, Any]:
        if "transfer-encoding" in headers:
            raise AdminError(411, "send the body with a Content-Length (no Transfer-Encoding)")
        given = headers.get("content-length")
        if given is None:
            if method in ("POST", "PUT"):
                raise AdminError(411, "a Content-Length is required")
            return {}
        if not given.isdigit() or not given.isascii():
            raise AdminError(400, f"bad Content-Length {given[:20]!r}")
        length = int(given)
        if length > MAX_BODY:
            raise AdminError(413, f"request body over {MAX_BODY} bytes")
        if not length:
            return {}
        try:
            raw = await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT)
        except TimeoutError:
            raise AdminError(408, f"the body did not arrive within {BODY_TIMEOUT:g} s") from None
        except asyncio.IncompleteReadError:
            raise AdminError(400, "the body is shorter than its Content-Length") from None
        if json_depth(raw) > MAX_DEPTH:
            raise AdminError(400, f"request body nests deeper than {MAX_DEPTH}")
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise AdminError(400, f"request body is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise AdminError(400, "request body must be a JSON object")
        return doc

    def _route(self, method: str, target: str, body: dict[str, Any]) -> Call:
        admin = self.admin
        path = target.split("?", 1)[0].rstrip("/")
        if path == "/v1/status":
            _allow(method, "GET")
            return _now(admin.status)
        if path == "/v1/scale":
            _allow(method, "POST")
            if "active" not in body:
                raise AdminError(400, 'scale needs a JSON body {"active": N}')
            return lambda: admin.scale(body["active"])
        if path == "/v1/policy":
            if method == "GET":
                return admin.policy_show
            _allow(method, "POST")
            return lambda: admin.policy_apply(body.get("policy"))
        if path == "/v1/policy/diff":
            _allow(method, "POST")
            return lambda: admin.policy_diff(body.get("policy"))
        m = _INSTANCE_OP.match(path)
        if m:
            _allow(method, "POST")
            instance_id, op = m.groups()
            return lambda: (admin.drain if op == "drain" else admin.stop)(instance_id)
        raise AdminError(404, f"no such endpoint {method} {path[:100] or '/'}")

    async def _work(self, call: Call) -> dict[str, Any]:
        """Run the call on the master's loop: at most MAX_WORKERS at once, each within CALL_TIMEOUT."""
        if self.working >= MAX_WORKERS:
            raise AdminError(503, f"busy: {MAX_WORKERS} requests at work; try again")
        self.working += 1
        try:

            async def run() -> dict[str, Any]:
                return await call()

            future = asyncio.run_coroutine_threadsafe(run(), self.master_loop)
            try:
                return await asyncio.wait_for(asyncio.wrap_future(future), CALL_TIMEOUT)
            except TimeoutError:
                future.cancel()
                raise AdminError(504, "the master did not finish in time") from None
        finally:
            self.working -= 1

    def close(self) -> None:
        if self._loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        for s, _ in self._socks:
            s.close()
        self.unix_path.unlink(missing_ok=True)


def _authorize(headers: dict[str, str], token: str | None) -> None:
    if token is None:
        return
    given = headers.get("authorization", "")
    if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), token.encode()):
        raise AdminError(401, "missing or wrong token (send 'Authorization: Bearer <token>')")


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise AdminError(405, f"use {allowed} here, not {method[:20]}")


def _now(fn: Callable[[], dict[str, Any]]) -> Call:
    async def run() -> dict[str, Any]:
        return fn()

    return run


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return f"{peer[0]}:{peer[1]}"
    return "unix"


def _response(status: HTTPStatus, doc: dict[str, Any]) -> bytes:
    data = json.dumps(doc).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data
