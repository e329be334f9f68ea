"""The study's load: many short HTTP downloads, each on a new TCP connection.

Runs inside the client namespace (``python -m fwcluster.bench.loadgen ...``) and prints one JSON
object. For every connection it records the TCP connection setup time (from ``connect()`` to the
socket reporting the connection established, in microseconds) and the full download time. One
epoll loop, non-blocking sockets, no threads: the generator's own cost is small and the same for
every configuration, and the ``direct`` baseline measures it (it also reports its own CPU time).

Two ways to load:

- closed loop (default): ``concurrency`` downloads in flight; each one that ends starts the next;
- open loop (``rate``): new connections arrive at a fixed rate (Poisson or evenly spaced), each
  started at its scheduled time whatever the earlier ones do. An arrival that finds
  ``concurrency`` connections open (the bound) is not started and counts as a dropped arrival.
  Besides ``connect_us`` it reports the sojourn from the scheduled arrival (``sojourn_us`` to
  established, ``sojourn_total_us`` to the end of the download), so a late start shows too.

An optional warm-up (seconds, same load, not recorded) runs first in the same process, so the
measured window starts in the steady state. Bounded: it stops starting downloads after ``count``
measured ones or ``duration`` seconds after the warm-up, whichever comes first, and every
connection has a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import random
import resource
import select
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from fwcluster.bench.arrivals import KINDS, Schedule

_CONNECTING, _READING = 1, 2
_SCAN_NS = 50_000_000  # timeouts are checked every 50 ms
_POLL_S = 0.05
_UNBOUNDED = 10**12


@dataclass
class LoadResult:
    target: str
    concurrency: int  # closed loop: downloads in flight; open loop: the bound on open connections
    mode: str = "closed"  # closed | open
    rate: float | None = None  # open loop: arrivals per second
    arrivals: str | None = None  # open loop: poisson | uniform
    warmup: float = 0.0  # seconds of unrecorded load before the measured window
    completed: int = 0
    failed: int = 0
    dropped_arrivals: int = 0  # open loop: arrivals that found `concurrency` connections open
    peak_open: int = 0
    elapsed: float = 0.0  # from the end of the warm-up until the last measured download ended
    window_s: float = 0.0  # from the end of the warm-up until no new download starts
    window_completed: int = 0  # measured downloads that ended inside that window
    cpu_s: float = 0.0  # the generator's own CPU time (user + system) over the window
    lag_us_p50: int = 0  # open loop: scheduled arrival -> connect() called
    lag_us_max: int = 0
    connect_us: list[int] = field(default_factory=list)
    total_us: list[int] = field(default_factory=list)
    sojourn_us: list[int] = field(default_factory=list)  # open loop: scheduled arrival -> established
    sojourn_total_us: list[int] = field(default_factory=list)  # open loop: arrival -> download done
    errors: dict[str, int] = field(default_factory=dict)
    done_s: list[float] = field(default_factory=list)  # with timeline: when each download completed
    failed_s: list[float] = field(default_factory=list)  # with timeline: when each one failed

    @property
    def connections_per_second(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0


class _Conn:
    __slots__ = ("buf", "deadline", "due", "measured", "phase", "sock", "t0", "t_connect")

    def __init__(self, sock: socket.socket, t0: int, due: int, deadline: int, measured: bool) -> None:
        self.sock = sock
        self.t0 = t0  # connect() called
        self.due = due  # scheduled arrival (closed loop: t0)
        self.t_connect = 0
        self.deadline = deadline
        self.measured = measured
        self.phase = _CONNECTING
        self.buf = b""


class _Alarm:
    """A timerfd on CLOCK_MONOTONIC (``time.monotonic_ns``): epoll wakes when it fires, to the
    microsecond, where epoll's own timeout has whole milliseconds (an arrival would start up to
    1 ms late)."""

    _CLOCK_MONOTONIC, _ABSTIME, _FLAGS = 1, 1, os.O_NONBLOCK | os.O_CLOEXEC

    class _Spec(ctypes.Structure):
        _fields_ = [
            ("interval_s", ctypes.c_long), ("interval_ns", ctypes.c_long),
            ("value_s", ctypes.c_long), ("value_ns", ctypes.c_long),
        ]  # fmt: skip

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        self.fd: int = libc.timerfd_create(self._CLOCK_MONOTONIC, self._FLAGS)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
        self._armed = -1

    def arm(self, at_ns: int) -> None:
        """Fire at ``at_ns`` (``time.monotonic_ns``); a time in the past fires at once."""
        if at_ns == self._armed:
            return
        spec = self._Spec(0, 0, *divmod(max(at_ns, 1), 1_000_000_000))
        if self._settime(self.fd, self._ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime")
        self._armed = at_ns

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)
        self._armed = -1

    def close(self) -> None:
        os.close(self.fd)


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


@dataclass(frozen=True)
class Load:
    """What one run of the generator does (see the module's doc)."""

    host: str
    port: int = 80
    path: str = "/index.html"
    concurrency: int = 25  # closed loop: downloads in flight; open loop: the bound on open connections
    count: int = 1000  # measured downloads at most
    duration: float = 60.0  # no new download starts this many seconds after the warm-up
    timeout: float = 5.0  # per connection
    timeline: bool = False  # also report when each download ended
    rate: float | None = None  # open loop: new connections per second
    arrivals: str = "poisson"  # open loop: poisson | uniform
    warmup: float = 0.0  # seconds of unrecorded load first
    seed: int | None = None  # of the arrival schedule
    phase: float = 0.0  # open loop: measured arrivals shifted by this many seconds

    def share(self, i: int, n: int) -> Load:
        """Worker ``i`` of ``n``'s part: its share of concurrency, count and rate; the workers of
        a uniform load interleave their arrivals."""

        def part(total: int) -> int:
            return total // n + (1 if i < total % n else 0)

        return replace(
            self,
            concurrency=part(self.concurrency),
            count=part(self.count),
            rate=None if self.rate is None else self.rate / n,
            seed=None if self.seed is None else self.seed + i,
            phase=i / self.rate if self.rate is not None and self.arrivals == "uniform" else 0.0,
        )


def run(load: Load, mark: Callable[[str], None] | None = None) -> LoadResult:
    """One run; ``mark`` (if given) is called with ``"measuring"`` when the warm-up ends and with
    ``"stopped"`` when no further download will start."""
    host, port, path, concurrency, count = load.host, load.port, load.path, load.concurrency, load.count
    duration, timeout, timeline, rate = load.duration, load.timeout, load.timeline, load.rate
    arrivals, warmup, phase = load.arrivals, load.warmup, load.phase
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    addr = (host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    result = LoadResult(target=f"http://{host}:{port}{path}", concurrency=concurrency, warmup=warmup)
    if rate is not None:
        result.mode, result.rate, result.arrivals = "open", rate, arrivals
    _raise_fd_limit(concurrency + 64)
    clock = time.monotonic_ns
    timeout_ns = round(timeout * 1e9)
    ep = select.epoll()
    conns: dict[int, _Conn] = {}
    lags: list[int] = []
    measured_started = 0
    t_start = clock()
    warm_end = t_start + round(warmup * 1e9)
    t_end = warm_end + round(duration * 1e9)
    rng = random.Random(load.seed)
    schedules: list[Schedule] = []  # open loop: the warm-up's arrivals (time-bounded), the measured ones
    if rate is not None:
        if warmup > 0:
            schedules.append(Schedule(t_start, rate, arrivals, _UNBOUNDED, warmup, rng))
        shift = round(phase * 1e9)
        schedules.append(Schedule(warm_end + shift, rate, arrivals, count, duration - phase, rng))
    measuring = warmup <= 0
    stopped = False
    cpu0 = _cpu_s()
    window_end = 0
    if measuring and mark:
        mark("measuring")

    def since_start_s(t: int) -> float:
        return round((t - t_start) / 1e9, 3)

    def fail(fd: int, why: str) -> None:
        c = conns.pop(fd)
        ep.unregister(fd)
        c.sock.close()
        if not c.measured:
            return
        result.failed += 1
        result.errors[why] = result.errors.get(why, 0) + 1
        if timeline:
            result.failed_s.append(since_start_s(clock()))

    def open_one(due: int, measured: bool) -> None:
        nonlocal measured_started
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setblocking(False)
        t0 = clock()
        rc = s.connect_ex(addr)
        fd = s.fileno()
        conns[fd] = _Conn(s, t0, due, t0 + timeout_ns, measured)
        if measured:
            measured_started += 1
            if rate is not None:
                lags.append((t0 - due) // 1000)
        ep.register(fd, select.EPOLLOUT)
        if rc not in (0, errno.EINPROGRESS):
            fail(fd, errno.errorcode.get(rc, str(rc)))

    def finish(fd: int, c: _Conn) -> None:
        t_done = clock()
        conns.pop(fd)
        ep.unregister(fd)
        c.sock.close()
        if not c.measured:
            return
        if c.buf.startswith(b"HTTP/1.") and c.buf[9:12] == b"200":
            result.completed += 1
            if not stopped:
                result.window_completed += 1
            result.connect_us.append((c.t_connect - c.t0) // 1000)
            result.total_us.append((t_done - c.t0) // 1000)
            if rate is not None:
                result.sojourn_us.append((c.t_connect - c.due) // 1000)
                result.sojourn_total_us.append((t_done - c.due) // 1000)
            if timeline:
                result.done_s.append(since_start_s(t_done))
        else:
            result.failed += 1
            result.errors["bad_response"] = result.errors.get("bad_response", 0) + 1

    alarm = _Alarm() if rate is not None else None
    if alarm:
        ep.register(alarm.fd, select.EPOLLIN)
    next_scan = t_start + _SCAN_NS
    while True:
        now = clock()
        if not measuring and now >= warm_end:
            measuring = True
            cpu0 = _cpu_s()
            if mark:
                mark("measuring")
        if rate is None:
            if measuring:
                while len(conns) < concurrency and measured_started < count and now < t_end:
                    open_one(clock(), True)
                no_more = measured_started >= count or now >= t_end
            else:
                while len(conns) < concurrency:
                    open_one(clock(), False)
                no_more = False
        else:
            while schedules and schedules[0].done:
                schedules.pop(0)
            for due in schedules[0].due(now) if schedules else ():
                warm = due < warm_end
                if len(conns) >= concurrency:
                    if not warm:
                        result.dropped_arrivals += 1
                    continue
                open_one(due, not warm)
            while schedules and schedules[0].done:
                schedules.pop(0)
            nxt = schedules[0].next_ns() if schedules else None
            if alarm and nxt is not None:
                alarm.arm(nxt)
            no_more = not schedules
        result.peak_open = max(result.peak_open, len(conns))
        if no_more and not stopped and measuring:
            stopped = True
            window_end = clock()
            result.cpu_s = round(_cpu_s() - cpu0, 4)
            if mark:
                mark("stopped")
        if stopped and not conns:
            break
        for fd, _ev in ep.poll(_POLL_S):
            c = conns.get(fd)
            if c is None:
                if alarm and fd == alarm.fd:
                    alarm.clear()
                continue
            if c.phase == _CONNECTING:
                # A failed connect makes send() return its error: no getsockopt(SO_ERROR) needed.
                c.t_connect = clock()
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
                finish(fd, c)  # EOF: nginx closed after the response (Connection: close)
        now = clock()
        if now >= next_scan:
            next_scan = now + _SCAN_NS
            for fd in [fd for fd, c in conns.items() if c.deadline <= now]:
                fail(fd, "timeout")
    t_last = clock()
    result.elapsed = (t_last - max(warm_end, t_start)) / 1e9
    result.window_s = round((window_end - max(warm_end, t_start)) / 1e9, 4)
    if lags:
        lags.sort()
        result.lag_us_p50, result.lag_us_max = lags[len(lags) // 2], lags[-1]
    ep.close()
    if alarm:
        alarm.close()
    return result


def merge(parts: list[LoadResult]) -> LoadResult:
    """One result from the workers of one load (counts summed, samples pooled, the longest
    elapsed time; ``lag_us_p50`` is the worst worker's)."""
    first = parts[0]
    out = LoadResult(
        target=first.target,
        concurrency=sum(p.concurrency for p in parts),
        mode=first.mode,
        rate=None if first.rate is None else sum(p.rate or 0.0 for p in parts),
        arrivals=first.arrivals,
        warmup=first.warmup,
    )
    for p in parts:
        for name in ("completed", "failed", "dropped_arrivals", "peak_open", "window_completed"):
            setattr(out, name, getattr(out, name) + getattr(p, name))
        for name in ("connect_us", "total_us", "sojourn_us", "sojourn_total_us", "done_s", "failed_s"):
            getattr(out, name).extend(getattr(p, name))
        for why, k in p.errors.items():
            out.errors[why] = out.errors.get(why, 0) + k
    out.elapsed = max(p.elapsed for p in parts)
    out.window_s = max(p.window_s for p in parts)
    out.cpu_s = round(sum(p.cpu_s for p in parts), 4)
    out.lag_us_p50 = max(p.lag_us_p50 for p in parts)
    out.lag_us_max = max(p.lag_us_max for p in parts)
    out.done_s.sort()
    out.failed_s.sort()
    return out


def run_workers(load: Load, procs: int, mark: Callable[[str], None] | None = None) -> LoadResult:
    """The same load from ``procs`` forked worker processes, each with its share (one Python
    process is one core: on a fast path the generator would otherwise be the bottleneck). A mark
    is passed on once every worker made it."""
    procs = max(1, min(procs, load.concurrency, load.count))
    if procs == 1:
        return run(load, mark)
    readers: dict[int, tuple[int, list[bytes]]] = {}
    for i in range(procs):
        r_fd, w_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: run its share, report over the pipe, leave at once
            code = 1
            try:
                os.close(r_fd)
                with os.fdopen(w_fd, "w") as w:

                    def tell(name: str, w: Any = w) -> None:
                        w.write(json.dumps({"mark": name}) + "\n")
                        w.flush()

                    res = run(load.share(i, procs), tell)
                    w.write(json.dumps(asdict(res)) + "\n")
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(w_fd)
        readers[r_fd] = (pid, [])
    seen: dict[str, int] = {}
    results: list[LoadResult] = []
    sel = select.epoll()
    for fd in readers:
        sel.register(fd, select.EPOLLIN)
    open_fds = set(readers)
    while open_fds:
        for fd, _ev in sel.poll(1.0):
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                sel.unregister(fd)
                open_fds.discard(fd)
                continue
            buf = readers[fd][1]
            buf.append(chunk)
            *lines, rest = b"".join(buf).split(b"\n")
            buf[:] = [rest]
            for line in lines:
                doc = json.loads(line)
                if set(doc) == {"mark"}:
                    seen[doc["mark"]] = seen.get(doc["mark"], 0) + 1
                    if seen[doc["mark"]] == procs and mark:
                        mark(doc["mark"])
                else:
                    results.append(LoadResult(**doc))
    sel.close()
    for fd, (pid, _) in readers.items():
        os.close(fd)
        os.waitpid(pid, 0)
    if len(results) != procs:
        raise RuntimeError(f"{procs - len(results)} of {procs} load generator workers failed")
    return merge(results)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m fwcluster.bench.loadgen", description=__doc__)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--path", default="/index.html")
    ap.add_argument(
        "--concurrency",
        type=int,
        default=25,
        help="closed loop: downloads in flight; open loop: most connections open at once",
    )
    ap.add_argument("--count", type=int, default=1000, help="stop after this many measured downloads")
    ap.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="stop starting new ones this many seconds after the warm-up",
    )
    ap.add_argument("--timeout", type=float, default=5.0, help="per-connection timeout, seconds")
    ap.add_argument("--timeline", action="store_true", help="also report when each download ended")
    ap.add_argument("--rate", type=float, help="open loop: new connections per second")
    ap.add_argument("--arrivals", choices=KINDS, default="poisson", help="open loop: arrival process")
    ap.add_argument("--warmup", type=float, default=0.0, help="seconds of unrecorded load first")
    ap.add_argument("--seed", type=int, help="seed of the arrival schedule")
    ap.add_argument("--marks", action="store_true", help='print {"mark": ...} lines before the result')
    ap.add_argument("--procs", type=int, default=1, help="worker processes sharing the load (default 1)")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if not (1 <= a.concurrency <= 10_000 and 1 <= a.count <= 10_000_000 and 0 < a.duration <= 3600):
        print("loadgen: --concurrency 1..10000, --count 1..10000000, --duration 0..3600", file=sys.stderr)
        return 2
    if a.rate is not None and not 0 < a.rate <= 1_000_000:
        print("loadgen: --rate must be 0..1000000 connections per second", file=sys.stderr)
        return 2
    if not (0 <= a.warmup <= 600 and 0 < a.timeout <= 600 and 1 <= a.procs <= 64):
        print("loadgen: --warmup 0..600, --timeout 0..600, --procs 1..64", file=sys.stderr)
        return 2

    def mark(name: str) -> None:
        sys.stdout.write(json.dumps({"mark": name}) + "\n")
        sys.stdout.flush()

    load = Load(
        a.host, a.port, a.path, a.concurrency, a.count, a.duration, a.timeout, a.timeline,
        rate=a.rate, arrivals=a.arrivals, warmup=a.warmup, seed=a.seed,
    )  # fmt: skip
    r = run_workers(load, a.procs, mark if a.marks else None)
    out = asdict(r)
    out["connections_per_second"] = r.connections_per_second
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
