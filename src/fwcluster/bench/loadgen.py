"""The study's load: many short HTTP downloads, each on a new TCP connection, at a fixed concurrency.

Runs inside the client namespace (``python -m fwcluster.bench.loadgen ...``) and prints one JSON
object. For every connection it records the TCP connection setup time (from ``connect()`` to the
socket reporting the connection established, in microseconds) and the full download time. One
epoll loop, non-blocking sockets, no threads: the generator's own cost is small and the same for
every configuration, and the ``direct`` baseline measures it.

Bounded: it stops after ``count`` downloads or ``duration`` seconds, whichever comes first, and
every connection has a timeout.
"""

from __future__ import annotations

import argparse
import errno
import json
import select
import socket
import sys
import time
from dataclasses import asdict, dataclass, field

_CONNECTING, _READING = 1, 2


@dataclass
class LoadResult:
    target: str
    concurrency: int
    completed: int = 0
    failed: int = 0
    elapsed: float = 0.0
    connect_us: list[int] = field(default_factory=list)
    total_us: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    done_s: list[float] = field(default_factory=list)  # with timeline: when each download completed
    failed_s: list[float] = field(default_factory=list)  # with timeline: when each one failed

    @property
    def connections_per_second(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0


class _Conn:
    __slots__ = ("buf", "deadline", "phase", "sock", "t0", "t_connect")

    def __init__(self, sock: socket.socket, t0: int, deadline: float) -> None:
        self.sock = sock
        self.t0 = t0
        self.t_connect = 0
        self.deadline = deadline
        self.phase = _CONNECTING
        self.buf = b""


def run(
    host: str,
    port: int,
    path: str,
    concurrency: int,
    count: int,
    duration: float,
    timeout: float,
    timeline: bool = False,
) -> LoadResult:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    addr = (host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    result = LoadResult(target=f"http://{host}:{port}{path}", concurrency=concurrency)
    ep = select.epoll()
    conns: dict[int, _Conn] = {}
    started = 0
    t_start = time.monotonic()
    t_end = t_start + duration

    def fail(fd: int, why: str) -> None:
        c = conns.pop(fd)
        ep.unregister(fd)
        c.sock.close()
        result.failed += 1
        result.errors[why] = result.errors.get(why, 0) + 1
        if timeline:
            result.failed_s.append(round(time.monotonic() - t_start, 3))

    def open_one() -> None:
        nonlocal started
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter_ns()
        rc = s.connect_ex(addr)
        started += 1
        fd = s.fileno()
        conns[fd] = _Conn(s, t0, time.monotonic() + timeout)
        ep.register(fd, select.EPOLLOUT)
        if rc not in (0, errno.EINPROGRESS):
            fail(fd, errno.errorcode.get(rc, str(rc)))

    while True:
        now = time.monotonic()
        while len(conns) < concurrency and started < count and now < t_end:
            open_one()
        if not conns:
            break
        for fd, _ev in ep.poll(0.05):
            c = conns.get(fd)
            if c is None:
                continue
            if c.phase == _CONNECTING:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(fd, errno.errorcode.get(err, str(err)))
                    continue
                c.t_connect = time.perf_counter_ns()
                c.phase = _READING
                try:
                    c.sock.send(request)
                except OSError as e:
                    fail(fd, errno.errorcode.get(e.errno or 0, "send"))
                    continue
                ep.modify(fd, select.EPOLLIN)
            else:
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    fail(fd, errno.errorcode.get(e.errno or 0, "recv"))
                    continue
                if data:
                    c.buf += data
                    continue
                # EOF: nginx closed after the response (Connection: close).
                t_done = time.perf_counter_ns()
                conns.pop(fd)
                ep.unregister(fd)
                c.sock.close()
                if c.buf.startswith(b"HTTP/1.") and c.buf[9:12] == b"200":
                    result.completed += 1
                    result.connect_us.append((c.t_connect - c.t0) // 1000)
                    result.total_us.append((t_done - c.t0) // 1000)
                    if timeline:
                        result.done_s.append(round(time.monotonic() - t_start, 3))
                else:
                    result.failed += 1
                    result.errors["bad_response"] = result.errors.get("bad_response", 0) + 1
        now = time.monotonic()
        for fd in [fd for fd, c in conns.items() if c.deadline <= now]:
            fail(fd, "timeout")
    result.elapsed = time.monotonic() - t_start
    ep.close()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fwcluster.bench.loadgen", description=__doc__)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--path", default="/index.html")
    ap.add_argument("--concurrency", type=int, default=25)
    ap.add_argument("--count", type=int, default=1000, help="stop after this many downloads")
    ap.add_argument(
        "--duration", type=float, default=60.0, help="stop starting new ones after this many seconds"
    )
    ap.add_argument("--timeout", type=float, default=5.0, help="per-connection timeout, seconds")
    ap.add_argument("--timeline", action="store_true", help="also report when each download ended")
    a = ap.parse_args(argv)
    if not (1 <= a.concurrency <= 10_000 and 1 <= a.count <= 10_000_000 and 0 < a.duration <= 3600):
        print("loadgen: --concurrency 1..10000, --count 1..10000000, --duration 0..3600", file=sys.stderr)
        return 2
    r = run(a.host, a.port, a.path, a.concurrency, a.count, a.duration, a.timeout, a.timeline)
    out = asdict(r)
    out["connections_per_second"] = r.connections_per_second
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
