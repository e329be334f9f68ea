"""The failover bench's measures: the steady-rate stream reader and the stall read from a capture.

Regression for the TCP stall that `bench failover` reported at 0.8-1.3 s: it measured the
silence between two short connections that reused one client port (and curl's own pauses),
not the long downloads.
"""

from __future__ import annotations

import hashlib
import socket

from fwcluster.bench.capture import Seen, longest_silence
from fwcluster.bench.stream import Download

BODY = bytes(range(256)) * 40
HEADER = f"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()


def _download() -> Download:
    a, b = socket.socketpair()
    b.close()
    return Download(a, 20000)


def test_a_stream_in_small_pieces_is_checked_whole() -> None:
    d = _download()
    data = HEADER + BODY
    for i in range(0, len(data), 7):  # the header split across reads too
        d.feed(data[i : i + 7])
    rep = d.report()
    assert d.done and rep["error"] == "" and rep["bytes"] == len(BODY)
    assert rep["sha256"] == hashlib.sha256(BODY).hexdigest()


def test_a_stream_that_is_not_a_200_or_has_no_length_is_an_error() -> None:
    d = _download()
    d.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnop")
    assert d.done and d.report()["error"].startswith("status")
    d = _download()
    d.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert d.done and d.report()["error"] == "no Content-Length"
    d = _download()
    d.feed(b"x" * 20000)
    assert d.done and d.report()["error"] == "header too long"


def test_a_stream_longer_than_announced_is_an_error() -> None:
    d = _download()
    d.feed(HEADER + BODY + b"extra")
    assert d.done and d.report()["error"] == "longer than Content-Length"


def _seen(port: int, times: list[float], skew: float = 0.0) -> list[Seen]:
    return [Seen(t + skew, "198.19.0.2.80", f"198.18.0.2.{port}", t) for t in times]


def test_silence_is_per_connection_and_runs_to_the_end_of_the_window() -> None:
    steady = _seen(20000, [i * 0.01 for i in range(301)])  # every 10 ms for 3 s
    stopped = _seen(20001, [i * 0.01 for i in range(101)])  # stops at 1 s
    assert round(longest_silence(steady + stopped, 0.0, 3.0), 3) == 0.01
    assert round(longest_silence(steady + stopped, 0.0, 3.0, to_end=True), 3) == 2.0


def test_kernel_stamps_are_used_where_they_are_wall_clock_times() -> None:
    # The reader ran late for one packet: its arrival stamp shows a gap the wire did not have.
    seen = _seen(20000, [i * 0.01 for i in range(100)])
    late = seen[50]
    seen[50] = late._replace(t=late.t + 0.25)
    seen[51:] = [s._replace(t=s.t + 0.25) for s in seen[51:]]
    assert longest_silence(seen, 0.0, 1.0) > 0.2
    assert round(longest_silence(seen, 0.0, 2.0, kernel=True), 3) == 0.01
    # A kernel stamp far from the arrival (a monotonic departure time) is not used.
    odd = [s._replace(kt=s.kt + 5000.0) for s in _seen(20000, [0.0, 0.5])]
    assert round(longest_silence(odd, 0.0, 1.0, kernel=True), 3) == 0.5
