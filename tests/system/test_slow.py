"""The rate-limited downloads under /slow/: intact, and open for seconds (for long-lived-flow tests)."""

from __future__ import annotations

import hashlib
import subprocess
import time

import pytest
from netns_helpers import Builder

from fwcluster.testbed import steer_move, steer_spread
from fwcluster.testbed.server import LARGE_FILES, SLOW_RATE

pytestmark = pytest.mark.netns


def test_slow_download_is_intact_and_takes_seconds(testbed: Builder) -> None:
    state = testbed(1)
    assert state.files["/slow/1M.bin"] == state.files["/files/1M.bin"]
    argv = ["ip", "netns", "exec", state.client_netns, "curl", "-s", "-m", "20", "-o", "-"]
    t0 = time.monotonic()
    p = subprocess.run(
        [*argv, f"http://{state.server_addr}/slow/1M.bin"], capture_output=True, timeout=30, check=False
    )
    took = time.monotonic() - t0
    assert p.returncode == 0
    assert hashlib.sha256(p.stdout).hexdigest() == state.files["/slow/1M.bin"]
    nominal = LARGE_FILES["1M.bin"] / SLOW_RATE  # 4 s; nginx lets the first socket buffer go at once
    assert nominal * 0.5 <= took <= nominal * 2.5, took
    # the unlimited path stays fast
    t0 = time.monotonic()
    p = subprocess.run(
        [*argv, f"http://[{state.server_addr6}]/files/1M.bin"], capture_output=True, timeout=30, check=False
    )
    assert hashlib.sha256(p.stdout).hexdigest() == state.files["/files/1M.bin"]
    assert time.monotonic() - t0 < 1.5


def test_twenty_slow_downloads_survive_a_bucket_move(testbed: Builder) -> None:
    """Direct mode (no instance): moving buckets mid-download re-routes the flows, nothing breaks."""

    state = testbed(2)
    argv = ["ip", "netns", "exec", state.client_netns, "curl", "-s", "-m", "20", "-o", "-"]
    downloads = [
        subprocess.Popen([*argv, f"http://{state.server_addr}/slow/1M.bin"], stdout=subprocess.PIPE)
        for _ in range(20)
    ]
    try:
        time.sleep(1.0)
        assert all(d.poll() is None for d in downloads), "downloads should still be running"
        steer_move("fw1", ["fw2"])
        time.sleep(1.0)
        steer_spread()
        for d in downloads:
            out, _ = d.communicate(timeout=25)
            assert d.returncode == 0
            assert hashlib.sha256(out).hexdigest() == state.files["/slow/1M.bin"]
    finally:
        for d in downloads:
            if d.poll() is None:
                d.kill()
                d.wait(timeout=5)
