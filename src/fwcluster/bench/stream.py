"""Long downloads read at a steady rate: the streams of the failure and scaling trials.

Runs inside the client namespace (``python -m fwcluster.bench.stream ...``) and prints one JSON
object: per download its local port, the body's length and SHA-256, and an error if it failed.

Why not ``curl --limit-rate``: the client's socket takes the whole file in the first half second
(receive buffers autotune up to ``tcp_rmem``'s maximum, 32 MB here), and curl then paces only what
it reads from its own buffer, in bursts with pauses of a second or more. So the "stream" was
silent on the wire through the kill, and a silence measured there was curl's. Here every socket
has a small fixed receive buffer (``SO_RCVBUF``, which also turns autotuning off) and is read every
``TICK`` seconds for its share of ``rate``: the window opens a little at every tick, and the
server sends a few segments each time, a steady stream for as long as the download lasts.

Each download binds a local port from ``--ports`` (below the ephemeral range), so a capture can
tell the streams from short connections, whose ports come back within a trial.
Bounded: every download has ``--timeout``; the process ends when all have ended.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

TICK = 0.005  # seconds between reads
RCVBUF = 65536  # bytes asked for; the kernel doubles it and opens about half as the window
HEADER_MAX = 16384


@dataclass
class Download:
    sock: socket.socket
    port: int
    head: bytes = b""
    length: int | None = None  # Content-Length, once the header is in
    got: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    error: str = ""
    done: bool = False

    def feed(self, data: bytes) -> None:
        if self.length is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > HEADER_MAX:
                    self.finish("header too long")
                return
            header, data = self.head[:end].decode("latin-1"), self.head[end + 4 :]
            lines = header.split("\r\n")
            if len(lines[0].split()) < 2 or lines[0].split()[1] != "200":
                self.finish(f"status {lines[0]!r}")
                return
            sizes = [
                ln.split(":", 1)[1].strip() for ln in lines[1:] if ln.lower().startswith("content-length:")
            ]
            if not sizes or not sizes[0].isdigit():
                self.finish("no Content-Length")
                return
            self.length = int(sizes[0])
        self.digest.update(data)
        self.got += len(data)
        if self.got >= self.length:
            self.finish("" if self.got == self.length else "longer than Content-Length")

    def finish(self, error: str) -> None:
        self.error, self.done = error, True
        self.sock.close()

    def report(self) -> dict[str, Any]:
        return {"port": self.port, "bytes": self.got, "sha256": self.digest.hexdigest(), "error": self.error}


def _connect(host: str, port: int, path: str, ports: tuple[int, int], rcvbuf: int) -> Download:
    last: OSError | None = None
    for local in range(ports[0], ports[1] + 1):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window scale
        try:
            s.bind(("", local))
        except OSError as e:  # in use (or in TIME_WAIT from an earlier trial): the next one
            s.close()
            last = e
            continue
        s.settimeout(5.0)
        try:
            s.connect((host, port))
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        except OSError as e:
            s.close()
            d = Download(socket.socket(), local)
            d.finish(f"connect: {e}")
            return d
        s.setblocking(False)
        return Download(s, local)
    raise OSError(errno.EADDRINUSE, f"no free local port in {ports[0]}-{ports[1]}: {last}")


def run(host: str, port: int, path: str, count: int, rate: float, ports: tuple[int, int], timeout: float,
        rcvbuf: int = RCVBUF) -> list[dict[str, Any]]:  # fmt: skip
    """``count`` downloads of ``path``, each read at ``rate`` bytes per second."""
    downloads = [_connect(host, port, path, ports, rcvbuf) for _ in range(count)]
    start = last = time.monotonic()
    allowance = [0.0] * count
    while not all(d.done for d in downloads):
        time.sleep(TICK)
        now = time.monotonic()
        share, last = rate * (now - last), now
        for i, d in enumerate(downloads):
            if d.done:
                continue
            if now - start > timeout:
                d.finish("timeout")
                continue
            allowance[i] = min(allowance[i] + share, rate)  # at most a second's worth owed
            while allowance[i] >= 1 and not d.done:
                try:
                    data = d.sock.recv(min(int(allowance[i]), 65536))
                except BlockingIOError:
                    break
                except OSError as e:
                    d.finish(f"recv: {errno.errorcode.get(e.errno or 0, str(e))}")
                    break
                if not data:
                    d.finish("closed early" if d.length is None or d.got < d.length else "")
                    break
                allowance[i] -= len(data)
                d.feed(data)
    return [d.report() for d in downloads]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fwcluster.bench.stream", description=__doc__.split("\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--path", required=True)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--rate", type=float, default=2_000_000, help="bytes per second per download")
    ap.add_argument("--ports", default="20000-21999", help="local ports to bind, LO-HI")
    ap.add_argument("--timeout", type=float, default=30.0, help="per download, seconds")
    a = ap.parse_args(argv)
    lo, _, hi = a.ports.partition("-")
    if not (lo.isdigit() and hi.isdigit() and 1024 <= int(lo) <= int(hi) <= 65535):
        print("stream: --ports LO-HI within 1024-65535", file=sys.stderr)
        return 2
    if not (1 <= a.count <= 1000 and 1 <= a.rate <= 1e9 and 0 < a.timeout <= 600):
        print("stream: --count 1..1000, --rate 1..1e9, --timeout 0..600", file=sys.stderr)
        return 2
    print(json.dumps(run(a.host, a.port, a.path, a.count, a.rate, (int(lo), int(hi)), a.timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
