"""The instance's control socket: a Unix stream socket answering one JSON request per connection.

Unix sockets live in the file system, not in a network namespace, so tools in the host's
namespace (``fwcluster status``) read an instance's counters without a network path to it.
Request: one line ``{"cmd": "stats"}``; answer: one JSON line.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]
_MAX_REQUEST = 65536


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        if path.exists() or path.is_symlink():
            path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        os.chmod(path, 0o600)
        self._sock.listen(16)
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def handle(self) -> None:
        """Serve the pending connections (called when the socket is readable)."""
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return
            with conn:
                conn.settimeout(1.0)
                try:
                    answer = self._handler(_read_request(conn))
                except (OSError, ValueError) as e:
                    answer = {"error": str(e)}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(answer).encode() + b"\n")

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _read_request(conn: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n") and len(data) < _MAX_REQUEST:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    request = json.loads(data or b"{}")
    if not isinstance(request, dict):
        raise ValueError("request must be a JSON object")
    return request


def query(path: str | Path, request: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
    """Ask an instance over its control socket; raises OSError when it does not answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data)
    if not isinstance(answer, dict):
        raise OSError(f"{path}: malformed answer")
    return answer
