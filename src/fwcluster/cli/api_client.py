"""The CLI's side of the admin API (control/api.py): find the leading master and ask it.

By default the CLI talks to the masters of the local testbed over their Unix sockets
(``<run>/<id>.api.sock``), leader first; a master that does not lead answers 409 and the next one
is asked. ``--api URL --token T`` talks to one master over the network instead (from a namespace
that reaches it, e.g. ``ip netns exec fwc-mgmt fwcluster --api http://198.18.255.1:9301 ...``).
Every refusal becomes a one-line :class:`UserError`.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fwcluster.cli.errors import UserError

TIMEOUT = 330.0  # the master allows itself 300 s for a scale out


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
            raise UserError(f"--api {where!r}: give http://ADDR:PORT or the path of a master's socket")
        self.unix = None
        self.host, self.port = url.hostname, url.port or 80

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        conn: http.client.HTTPConnection = (
            _UnixConnection(self.unix, TIMEOUT)
            if self.unix
            else http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
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
            raise UserError(f"{self.where} answered with something that is not JSON", code=1) from None
        return resp.status, doc if isinstance(doc, dict) else {"error": "answer is not a JSON object"}


def local_endpoints(run_dir: Path | None = None) -> list[Endpoint]:
    """The local testbed's masters, the one that says it leads first."""
    from fwcluster.testbed import masters as master_proc
    from fwcluster.testbed.state import DEFAULT_RUN_DIR, load_state

    state = load_state(run_dir or DEFAULT_RUN_DIR)
    if state is None:
        raise UserError("no testbed is up (run: fwcluster testbed up)", code=1)
    if not state.masters:
        raise UserError("the testbed runs no masters ([cluster] masters = 0): there is no admin API", code=1)
    ordered = sorted(state.masters, key=lambda m: not (master_proc.read_status(m) or {}).get("leader"))
    return [Endpoint(str(Path(state.run_dir) / f"{m.id}.api.sock")) for m in ordered]


def call(
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    api: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """Ask the leader (or the one ``api`` master); the answer, or a one-line UserError."""
    endpoints = [Endpoint(api, token)] if api else local_endpoints()
    last = "no master answered"
    for endpoint in endpoints:
        try:
            status, doc = endpoint.request(method, path, body)
        except ConnectionError as e:
            last = str(e)
            continue
        if status == 409 and "does not lead" in str(doc.get("error", "")) and not api:
            last = str(doc["error"])
            continue  # ask the next master
        if status >= 400:
            raise UserError(str(doc.get("error", f"HTTP {status}")), code=2 if status < 500 else 1)
        return doc
    raise UserError(f"cannot reach the admin API: {last}", code=1)
