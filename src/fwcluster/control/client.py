"""A client of the admin API (control/api.py): one master's Unix socket or http:// URL.

``call`` asks a list of masters in turn: a master that does not lead answers 409 and the next one is
asked. Errors are :class:`AdminCallError` with a one-line message and the HTTP status (0 when no
master could be reached).
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

TIMEOUT = 330.0  # the master allows itself 300 s for a scale out
READ_TIMEOUT = 15.0  # a GET answers at once: a master that does not is hung, ask the next one


class AdminCallError(Exception):
    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Endpoint:
    """One master's API: a Unix socket path or an http:// URL (with its token)."""

    def __init__(self, where: str, token: str | None = None) -> None:
        self.where = where
        self.token = token
        if where.startswith("/"):
            self.unix: str | None = where
            self.host, self.port = "", 0
            return
        url = urlsplit(where)
        if url.scheme != "http" or not url.hostname:
            raise AdminCallError(f"{where!r}: give http://ADDR:PORT or the path of a master's socket", 400)
        self.unix = None
        self.host, self.port = url.hostname, url.port or 80

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer); ConnectionError when the master cannot be reached."""
        timeout = READ_TIMEOUT if method == "GET" else TIMEOUT
        conn: http.client.HTTPConnection = (
            _UnixConnection(self.unix, timeout)
            if self.unix
            else http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        )
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request(method, path, json.dumps(body).encode() if body is not None else None, headers)
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as e:
            raise ConnectionError(f"{self.where}: {e.strerror or e}") from None
        except http.client.HTTPException as e:
            raise ConnectionError(f"{self.where}: {e}") from None
        finally:
            conn.close()
        try:
            doc = json.loads(raw)
        except ValueError:
            raise AdminCallError(f"{self.where} answered with something that is not JSON", 502) from None
        return resp.status, doc if isinstance(doc, dict) else {"error": "answer is not a JSON object"}


def call(
    endpoints: Sequence[Endpoint], method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Ask the masters in turn until one that leads (or the only one given) answers."""
    last = "no master answered"
    for endpoint in endpoints:
        try:
            status, doc = endpoint.request(method, path, body)
        except ConnectionError as e:
            last = str(e)
            continue
        if status == 409 and "does not lead" in str(doc.get("error", "")) and len(endpoints) > 1:
            last = str(doc["error"])
            continue  # ask the next master
        if status >= 400:
            raise AdminCallError(str(doc.get("error", f"HTTP {status}")), status)
        return doc
    raise AdminCallError(f"cannot reach the admin API: {last}")
