"""The admin API: HTTP with JSON, served by every master; the leader carries out changes.

    GET  /v1/status                   this master's view: leader?, epoch, instances with role and buckets
    POST /v1/scale                    {"active": N}: scale to N active instances
    POST /v1/instances/<id>/drain     move the instance's buckets away; it stays up, "ready"
    POST /v1/instances/<id>/stop      drain, then stop and remove it

Every answer is one JSON object; a refusal is ``{"error": "<one line>"}`` with a 4xx/5xx status,
and nothing changed. A master that does not lead answers changes with 409 and names the leader.

Two listeners: a Unix socket in the run dir (``<id>.api.sock``, mode 0600: whoever may open it is
root on this host, so no token), which the CLI uses; and optionally a network address, where every
request must carry ``Authorization: Bearer <token>`` (compared in constant time).

Requests are handled on threads; the work itself runs on the master's event loop, so it never races
the failure detector.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import socket
import socketserver
import threading
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fwcluster.control.admin import Admin, AdminError

MAX_BODY = 64 * 1024
CALL_TIMEOUT = 300.0  # a scale out builds namespaces and waits for instances to join
_INSTANCE_OP = re.compile(r"^/v1/instances/([A-Za-z0-9_.-]{1,64})/(drain|stop)$")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        try:
            self._authorize()
            body = self._body()
            status, doc = HTTPStatus.OK, self._route(method, body)
        except AdminError as e:
            status, doc = HTTPStatus(e.status), {"error": e.message}
        except TimeoutError:
            status, doc = HTTPStatus.GATEWAY_TIMEOUT, {"error": "the master did not finish in time"}
        self._reply(status, doc)

    def _authorize(self) -> None:
        token = self.server.token
        if token is None:
            return
        given = self.headers.get("Authorization", "")
        if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), token.encode()):
            raise AdminError(401, "missing or wrong token (send 'Authorization: Bearer <token>')")

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise AdminError(400, "bad Content-Length") from None
        if length > MAX_BODY:
            raise AdminError(413, f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise AdminError(400, f"request body is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise AdminError(400, "request body must be a JSON object")
        return doc

    def _route(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        admin = self.server.admin
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/status":
            self._allow(method, "GET")
            return self._call(_now(admin.status))
        if path == "/v1/scale":
            self._allow(method, "POST")
            if "active" not in body:
                raise AdminError(400, 'scale needs a JSON body {"active": N}')
            return self._call(lambda: admin.scale(body["active"]))
        m = _INSTANCE_OP.match(path)
        if m:
            self._allow(method, "POST")
            instance_id, op = m.groups()
            return self._call(lambda: (admin.drain if op == "drain" else admin.stop)(instance_id))
        raise AdminError(404, f"no such endpoint {method} {path or '/'}")

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise AdminError(405, f"use {allowed} here, not {method}")

    def _call(self, coro: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            return await coro()

        future = asyncio.run_coroutine_threadsafe(run(), self.server.loop)
        return future.result(CALL_TIMEOUT)

    def _reply(self, status: HTTPStatus, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def address_string(self) -> str:  # Unix sockets have no peer address
        return str(self.client_address[0]) if self.client_address else "unix"

    def log_message(self, format: str, *args: Any) -> None:
        """No line per request: the master logs what changed as events."""


def _now(fn: Callable[[], dict[str, Any]]) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def run() -> dict[str, Any]:
        return fn()

    return run


class _Server(socketserver.BaseServer):
    """What the handlers need from their server (both listener kinds mix this in)."""

    admin: Admin
    loop: asyncio.AbstractEventLoop
    token: str | None


class _TcpServer(ThreadingHTTPServer, _Server):
    daemon_threads = True


class _Tcp6Server(_TcpServer):
    address_family = socket.AF_INET6


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer, _Server):
    daemon_threads = True


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
        unix_path.unlink(missing_ok=True)
        old = os.umask(0o177)  # the socket is born 0600
        try:
            unix = _UnixServer(str(unix_path), _Handler)
        finally:
            os.umask(old)
        self.servers: list[socketserver.BaseServer] = [unix]
        self._setup(unix, admin, loop, None)
        if tcp is not None:
            host, port = tcp
            net = (_Tcp6Server if ":" in host else _TcpServer)((host, port), _Handler)
            self._setup(net, admin, loop, token)
            self.servers.append(net)
        self.unix_path = unix_path
        self._threads = [
            threading.Thread(target=s.serve_forever, name="admin-api", daemon=True) for s in self.servers
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _setup(server: Any, admin: Admin, loop: asyncio.AbstractEventLoop, token: str | None) -> None:
        server.admin, server.loop, server.token = admin, loop, token

    def close(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()
        self.unix_path.unlink(missing_ok=True)
