"""The load generator's open and closed loops against real sockets on 127.0.0.1 (no root, no
namespaces): a tiny HTTP server that answers, and a listener that never answers (a stall).
Nothing here checks a speed: only what is counted and how the counts add up."""

from __future__ import annotations

import http.server
import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from fwcluster.bench import loadgen
from fwcluster.bench.arrivals import offsets


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"x")

    def log_message(self, *_args: object) -> None:
        pass


def _load(port: int, concurrency: int, count: int, duration: float = 30.0, **kw: Any) -> loadgen.Load:
    return loadgen.Load("127.0.0.1", port, "/", concurrency, count, duration, **kw)


@pytest.fixture
def http_port() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=10)


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A listener that never accepts: the kernel completes the handshakes, nobody answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_open_loop_starts_every_arrival_and_measures_from_its_scheduled_time(http_port: int) -> None:
    arrivals = len(list(offsets(100.0, "poisson", 60, 0.6, random.Random(11))))
    r = loadgen.run(_load(http_port, 50, 60, 0.6, rate=100.0, seed=11))
    assert r.mode == "open" and r.rate == 100.0 and r.arrivals == "poisson"
    assert r.completed + r.failed + r.dropped_arrivals == arrivals
    assert r.failed == 0 and r.dropped_arrivals == 0, r.errors
    assert len(r.connect_us) == len(r.sojourn_us) == len(r.sojourn_total_us) == r.completed
    # the sojourn includes the wait from the scheduled arrival to connect(): never shorter
    assert all(s >= c for s, c in zip(r.sojourn_us, r.connect_us, strict=True))
    assert all(t >= s for t, s in zip(r.sojourn_total_us, r.sojourn_us, strict=True))
    assert 0 <= r.lag_us_p50 <= r.lag_us_max


def test_a_stall_does_not_hold_back_later_arrivals_beyond_the_bound_they_are_dropped(
    stalled_port: int,
) -> None:
    arrivals = len(list(offsets(200.0, "uniform", 100, 0.5, random.Random(1))))
    assert arrivals == 100
    r = loadgen.run(_load(stalled_port, 8, 100, 0.5, timeout=1.0, rate=200.0, arrivals="uniform"))
    assert r.completed == 0
    assert r.peak_open == 8  # the first 8 arrivals were started at once, none waited for another
    assert r.failed == 8 and r.errors == {"timeout": 8}
    assert r.dropped_arrivals == arrivals - 8  # counted, not silently delayed


def test_closed_loop_keeps_its_concurrency_and_stops_at_the_count(http_port: int) -> None:
    r = loadgen.run(_load(http_port, 4, 40))
    assert r.mode == "closed" and r.rate is None
    assert r.completed == 40 and r.failed == 0 and r.dropped_arrivals == 0
    assert r.peak_open == 4 and not r.sojourn_us
    assert r.window_completed <= r.completed and r.elapsed >= r.window_s > 0


def test_warm_up_downloads_are_not_recorded(http_port: int) -> None:
    marks: list[str] = []
    r = loadgen.run(_load(http_port, 2, 10, warmup=0.3), marks.append)
    assert marks == ["measuring", "stopped"]
    assert r.warmup == 0.3 and r.completed == 10 and len(r.connect_us) == 10


def test_open_loop_with_a_warm_up_counts_only_measured_arrivals(http_port: int) -> None:
    r = loadgen.run(_load(http_port, 50, 15, rate=100.0, warmup=0.2, seed=5))
    assert r.completed == 15 and r.failed == 0 and len(r.sojourn_us) == 15


def test_the_command_line_refuses_a_bad_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert loadgen.main(["--host", "127.0.0.1", "--rate", "0"]) == 2
    assert "--rate" in capsys.readouterr().err


def test_workers_share_a_closed_loop_and_their_results_add_up(http_port: int) -> None:
    marks: list[str] = []
    r = loadgen.run_workers(_load(http_port, 5, 41), 2, marks.append)
    assert marks == ["measuring", "stopped"]
    assert r.concurrency == 5 and r.completed == 41 and r.failed == 0
    assert len(r.connect_us) == len(r.total_us) == 41 and r.peak_open <= 5


def test_workers_share_an_open_loop_rate_and_its_bound(stalled_port: int) -> None:
    r = loadgen.run_workers(_load(stalled_port, 6, 100, 0.5, timeout=1.0, rate=200.0, arrivals="uniform"), 2)
    assert r.mode == "open" and r.rate == 200.0 and r.concurrency == 6
    assert r.completed == 0 and r.failed == 6 and r.peak_open == 6
    assert r.failed + r.dropped_arrivals == 100
