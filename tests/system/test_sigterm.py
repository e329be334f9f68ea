"""A SIGTERM of an instance outside the admin API (by pid, as an operator or systemd would): the
instance deregisters on its clean stop, and the leading master still fails its buckets over, so
no download breaks (they continue on the other instances from the shared table)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from downloads import finish, start_downloads, wait_established
from netns_helpers import Builder, curl, url
from test_masters import SLOW, leader, wait_for
from test_shared_state import all_on, config

from fwcluster.bench.datapath import SteadyLoad
from fwcluster.testbed import steer_table
from fwcluster.testbed.processes import alive

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("level", ["established", "full"])
def test_sigterm_of_an_active_instance_is_a_failover(testbed: Builder, tmp_path: Path, level: str) -> None:
    state = testbed(3, config(tmp_path, level, "clean", "async"), start_instances=True)
    assert leader(state) is not None
    all_on(state, "fw1")  # every download crosses fw1
    downloads = start_downloads(state, 20, tmp_path / "dl", SLOW)
    wait_established(state, 20)
    steady = SteadyLoad(state, 8, 6.0, 3.0)
    time.sleep(1.0)
    pid = state.instance("fw1").pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # not through the admin API
    (fo,) = wait_for(state, "failover", timeout=5.0)
    assert fo["instance"] == "fw1" and fo["reason"] == "stopped", fo
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
    after = steer_table()
    for table in after.values():
        assert "fw1" not in table.values() and set(table.values()) <= {"fw2", "fw3"}
    intact, problems = finish(downloads, state.files[SLOW])
    assert intact == 20, problems
    load = steady.join()
    assert steady.started_after(float(fo["time"])) == [], load["errors"]
    assert curl(state.client_netns, url(state, 4)).body == b"x"
