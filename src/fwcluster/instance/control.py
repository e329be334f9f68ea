"""The instance's control socket: a Unix stream socket answering one JSON request per connection.

Unix sockets live in the file system, not in a network namespace, so tools in the host's
namespace (``fwcluster status``) read an instance's counters without a network path to it.
Request: one line ``{"cmd": "stats"}`` (or ``ping``, or ``flows``: instance/flowlist.py); answer:
one JSON line.

The socket is served on the instance's event loop, which also runs the datapath, so nothing here
ever blocks: the listening socket and every connection are non-blocking and read when the loop
says they are readable (``loop.add_reader``). A client has ``REQUEST_TIMEOUT`` to send its line,
at most ``MAX_CONNECTIONS`` are open at once (beyond: closed at once), a request is at most
``_MAX_REQUEST`` bytes. A silent client costs a file descriptor and a timer, never loop time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]
_MAX_REQUEST = 65536
REQUEST_TIMEOUT = 2.0  # seconds for a client to send its request line
MAX_CONNECTIONS = 64


class _Conn:
    __slots__ = ("data", "sock", "timer")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""
        self.timer: asyncio.TimerHandle | None = None


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
        self._conns: dict[int, _Conn] = {}
        self.refused = 0  # connections closed for the bound, the timeout or a bad request

    def fileno(self) -> int:
        return self._sock.fileno()

    def handle(self) -> None:
        """Accept the pending connections (called by the loop when the socket is readable); each
        is then read when it is readable, never waited for."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, or the like: try again on the next wake-up
                return
            if len(self._conns) >= MAX_CONNECTIONS:
                self.refused += 1
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock)
            self._conns[sock.fileno()] = conn
            loop.add_reader(sock.fileno(), self._readable, conn)
            conn.timer = loop.call_later(REQUEST_TIMEOUT, self._expire, conn)

    def _readable(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._done(conn)
            return
        conn.data += chunk
        if chunk and not conn.data.endswith(b"\n") and len(conn.data) < _MAX_REQUEST:
            return  # more to come
        try:
            answer = self._handler(_parse(conn.data))
        except (OSError, ValueError, RecursionError) as e:  # a bad request: its one-line answer
            self.refused += 1
            answer = {"error": str(e)[:200] or type(e).__name__}
        self._done(conn, json.dumps(answer).encode() + b"\n")

    def _expire(self, conn: _Conn) -> None:
        self.refused += 1
        self._done(conn, json.dumps({"error": f"no request within {REQUEST_TIMEOUT:g} s"}).encode() + b"\n")

    def _done(self, conn: _Conn, answer: bytes = b"") -> None:
        """Answer (as much as the socket takes now: answers are small) and close."""
        fd = conn.sock.fileno()
        if self._conns.pop(fd, None) is None:
            return
        if conn.timer is not None:
            conn.timer.cancel()
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(fd)
        with contextlib.suppress(OSError):
            conn.sock.send(answer)
        conn.sock.close()

    def close(self) -> None:
        for conn in list(self._conns.values()):
            self._done(conn)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _parse(data: bytes) -> dict[str, Any]:
    if len(data) >= _MAX_REQUEST and not data.endswith(b"\n"):
        raise ValueError(f"request over {_MAX_REQUEST} bytes")
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
