"""Masters on the real testbed: failover without a hand on the steering, leader takeover."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from downloads import finish, start_downloads, wait_established
from netns_helpers import Builder, curl, url
from test_shared_state import all_on, config

from fwcluster.testbed import TestbedState, steer_table
from fwcluster.testbed.masters import master_events, read_status
from fwcluster.testbed.processes import alive

pytestmark = pytest.mark.netns

SLOW = "/slow/1M.bin"


def events(state: TestbedState, kind: str) -> list[dict[str, object]]:
    return master_events(state, kind)


def wait_for(state: TestbedState, kind: str, timeout: float = 3.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(state, kind)
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"no {kind!r} event within {timeout}s")


def leader(state: TestbedState) -> str | None:
    for m in state.masters:
        doc = read_status(m)
        if doc and doc.get("leader") and alive(m.pid):
            return m.id
    return None


@pytest.mark.parametrize("level", ["established", "full"])
def test_sigkill_of_an_instance_is_failed_over_by_the_master(
    testbed: Builder, tmp_path: Path, level: str
) -> None:
    state = testbed(3, config(tmp_path, level, "clean", "async"), start_instances=True)
    assert len(state.masters) == 2 and leader(state) is not None
    all_on(state, "fw1")
    # fw2 keeps a few buckets: only fw1's may move.
    before = steer_table()
    downloads = start_downloads(state, 20, tmp_path / "dl")
    wait_established(state, 20)
    time.sleep(0.5)
    pid = state.instance("fw1").pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    (fo,) = wait_for(state, "failover")
    assert fo["instance"] == "fw1" and fo["reason"] == "process-gone"
    after = steer_table()
    for direction, table in before.items():
        for bucket, owner in table.items():
            if owner != "fw1":
                assert after[direction][bucket] == owner  # nothing else moved
            else:
                assert after[direction][bucket] in ("fw2", "fw3")
    intact, problems = finish(downloads, state.files[SLOW])
    assert intact == 20, problems
    assert curl(state.client_netns, url(state, 4)).body == b"x"


def test_a_hung_instance_is_detected_by_missed_heartbeats(testbed: Builder, tmp_path: Path) -> None:
    state = testbed(3, config(tmp_path, "full", "clean", "async"), start_instances=True)
    all_on(state, "fw2")
    downloads = start_downloads(state, 10, tmp_path / "dl")
    wait_established(state, 10)
    pid = state.instance("fw2").pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        (fo,) = wait_for(state, "failover")
        assert fo["instance"] == "fw2" and fo["reason"] == "heartbeat"
        intact, problems = finish(downloads, state.files[SLOW])
        assert intact == 10, problems
    finally:
        os.kill(pid, signal.SIGCONT)


def test_when_the_leading_master_dies_the_other_leads_and_traffic_goes_on(
    testbed: Builder, tmp_path: Path
) -> None:
    state = testbed(3, config(tmp_path, "established", "clean", "async"), start_instances=True)
    first = leader(state)
    assert first is not None
    downloads = start_downloads(state, 10, tmp_path / "dl")
    wait_established(state, 10)
    killed = next(m for m in state.masters if m.id == first)
    t0 = time.monotonic()
    os.kill(killed.pid, signal.SIGKILL)
    while leader(state) in (None, first) and time.monotonic() - t0 < 5:
        time.sleep(0.02)
    took = time.monotonic() - t0
    assert leader(state) not in (None, first)
    assert took < 2.0, f"takeover took {took:.2f} s"
    intact, problems = finish(downloads, state.files[SLOW])
    assert intact == 10, problems  # the data plane did not notice
    (new_leader,) = [e for e in events(state, "leader") if e["master"] != first]
    (old,) = [e for e in events(state, "leader") if e["master"] == first]
    assert int(new_leader["epoch"]) > int(old["epoch"])  # type: ignore[call-overload]


def test_a_standby_instance_takes_the_failed_instances_buckets(testbed: Builder, tmp_path: Path) -> None:
    cfg = config(tmp_path, "established", "clean", "async")
    cfg.write_text(cfg.read_text() + "[cluster]\nstandby = 1\n")
    state = testbed(3, cfg, start_instances=True)
    roles = {i.id: i.role for i in state.instances}
    assert roles == {"fw1": "active", "fw2": "active", "fw3": "active", "fw4": "standby"}
    table = steer_table()["forward"]
    assert "fw4" not in table.values()  # ready, but no traffic
    fw2_buckets = sorted(b for b, owner in table.items() if owner == "fw2")
    downloads = start_downloads(state, 10, tmp_path / "dl")
    wait_established(state, 10)
    pid = state.instance("fw2").pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    (fo,) = wait_for(state, "failover")
    assert fo["to"] == ["fw4"]
    after = steer_table()["forward"]
    assert sorted(b for b, owner in after.items() if owner == "fw4") == fw2_buckets
    assert all(after[b] == owner for b, owner in table.items() if owner != "fw2")
    intact, problems = finish(downloads, state.files[SLOW])
    assert intact == 10, problems


def test_metrics_are_served_on_the_management_network_only(testbed: Builder, tmp_path: Path) -> None:
    from fwcluster.testbed import netns_exec

    state = testbed(2, config(tmp_path, "established", "dirty", "async"), start_instances=True)
    assert curl(state.client_netns, url(state, 4)).body == b"x"
    fw1 = state.instance("fw1")
    scrape = netns_exec(state.mgmt_netns, ["curl", "-s", "-m", "2", f"http://{fw1.mgmt_addr}:9100/metrics"])
    assert scrape.returncode == 0
    assert "fwcluster_packets_total" in scrape.stdout and "fwcluster_sync_info{" in scrape.stdout
    masters = netns_exec(
        state.mgmt_netns, ["curl", "-s", "-m", "2", f"http://{state.mgmt_addr}:9201/metrics"]
    )
    assert "fwcluster_master_leader" in masters.stdout
    # The data plane cannot reach the management side of an instance.
    blocked = netns_exec(
        state.client_netns, ["curl", "-s", "-m", "1", f"http://{fw1.mgmt_addr}:9100/metrics"]
    )
    assert blocked.returncode == 28
