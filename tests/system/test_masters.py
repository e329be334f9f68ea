"""Masters on the real testbed: failover without a hand on the steering, leader takeover."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from downloads import finish, start_downloads, wait_established
from netns_helpers import Builder, curl, url
from test_shared_state import all_on, config

from fwcluster.bench.capture import LiveCapture, first_of, flows, longest_silence
from fwcluster.bench.datapath import SteadyLoad
from fwcluster.bench.failover import STREAM_CAPTURE, STREAM_PORTS
from fwcluster.instance.control import query
from fwcluster.steering.fencing import EpochGate, FencedDriver, StaleEpochError
from fwcluster.steering.spec import load_driver
from fwcluster.testbed import TestbedState, netns_exec, steer_table
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


# Streams of about 4 s each, paced by the server (nginx limit_rate): a client-side curl
# --limit-rate does not hold a connection open once the kernel fast path forwards at full
# speed (the client's socket buffers take the whole file, and the server closes at once).
STREAM, STREAM_RATE = SLOW, None
STEADY_TIMEOUT = 3.0


@pytest.mark.parametrize("level", ["established", "full"])
def test_sigkill_of_an_instance_is_failed_over_by_the_master(
    testbed: Builder, tmp_path: Path, level: str, record_property: Callable[[str, object], None]
) -> None:
    state = testbed(3, config(tmp_path, level, "clean", "async"), start_instances=True)
    assert len(state.masters) == 2 and leader(state) is not None
    all_on(state, "fw1")
    before = steer_table()
    downloads = start_downloads(
        state, 20, tmp_path / "dl", STREAM, rate=STREAM_RATE, local_ports=STREAM_PORTS
    )
    wait_established(state, 20)
    steady = SteadyLoad(state, 8, 6.0, STEADY_TIMEOUT)
    # What each instance forwards, and the data the client receives on the downloads (their
    # ports only: the short requests' ports come back, and the time between two looked like a
    # stall), as it happens.
    out = {i.id: LiveCapture(i.netns, "tcp port 80", "out") for i in state.instances}
    client = LiveCapture(state.client_netns, STREAM_CAPTURE)
    time.sleep(1.0)
    pid = state.instance("fw1").pid
    assert pid is not None
    t_kill = time.time()
    os.kill(pid, signal.SIGKILL)
    (fo,) = wait_for(state, "failover")
    assert fo["instance"] == "fw1" and fo["reason"] == "process-gone"
    time.sleep(2.0)
    seen = {k: c.stop() for k, c in out.items()}
    data = client.stop()
    after = steer_table()
    for direction, table in before.items():
        for bucket, owner in table.items():
            if owner != "fw1":
                assert after[direction][bucket] == owner  # nothing else moved
            else:
                assert after[direction][bucket] in ("fw2", "fw3")
    # The reroute gap: from the kill to the first packet of fw1's connections that another
    # instance forwarded.
    dead_flows = flows(seen["fw1"], t_kill)
    firsts = [t for k in ("fw2", "fw3") if (t := first_of(seen[k], dead_flows, t_kill)) is not None]
    assert firsts, "no instance forwarded the dead instance's connections"
    gap_ms = (min(firsts) - t_kill) * 1000
    stall_ms = longest_silence(data, t_kill - 0.5, t_kill + 2.0, kernel=True) * 1000
    record_property("reroute_gap_ms", round(gap_ms, 1))
    record_property("tcp_stall_ms", round(stall_ms, 1))
    record_property("master_detect_ms", fo["detect_ms"])
    intact, problems = finish(downloads, state.files[STREAM])
    assert intact == 20, problems
    load = steady.join()
    assert load["completed"] > 100
    # Requests caught on fw1 by the kill may time out; none that started after the reroute.
    assert steady.started_after(float(fo["time"])) == [], load["errors"]
    assert curl(state.client_netns, url(state, 4)).body == b"x"


# Only at full: at established the SYN is not shared, and a SYN-ACK that crosses another instance
# than its SYN meets no flow there, whatever follows what (the seed's design drops it too).
@pytest.mark.parametrize("level", ["full"])
def test_sigkill_with_ecmp_moves_both_directions_to_the_backup(
    testbed: Builder, tmp_path: Path, level: str, record_property: Callable[[str, object], None]
) -> None:
    """ECMP: the two directions of a download cross different instances. With follow = "backup"
    the killed instance's buckets all go to its backup (the next in the ring, which followed its
    changes), then the fair shares come back; the changes an instance never followed come from
    the store by look-ups."""
    state = testbed(3, config(tmp_path, level, "clean", "async", "ecmp"), start_instances=True)
    assert leader(state) is not None
    before = steer_table()
    downloads = start_downloads(state, 20, tmp_path / "dl", STREAM, rate=STREAM_RATE)
    wait_established(state, 20)
    time.sleep(1.0)
    pid = state.instance("fw1").pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    (fo,) = wait_for(state, "failover")
    assert fo["instance"] == "fw1" and fo["to"] == ["fw2"]  # the ring fw1 -> fw2 -> fw3
    (rb,) = wait_for(state, "rebalanced", timeout=10.0)  # then fw2's excess goes to fw3
    assert rb["to"] == ["fw2", "fw3"]
    time.sleep(1.0)
    after = steer_table()
    for direction, table in before.items():
        for bucket, owner in table.items():
            assert (
                after[direction][bucket] == owner
                if owner == "fw3"
                else after[direction][bucket] in ("fw2", "fw3")
            )
    intact, problems = finish(downloads, state.files[STREAM])
    assert intact == 20, problems
    stats = {i.id: query(i.control_socket, {"cmd": "stats"}) for i in state.instances if i.id != "fw1"}
    record_property("lookups", {k: v["store"]["lookups"] for k, v in stats.items()})
    assert curl(state.client_netns, url(state, 4)).body == b"x"


def test_a_hung_instance_is_detected_by_missed_heartbeats(
    testbed: Builder, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    state = testbed(3, config(tmp_path, "full", "clean", "async"), start_instances=True)
    all_on(state, "fw2")
    downloads = start_downloads(state, 20, tmp_path / "dl", STREAM, rate=STREAM_RATE)
    wait_established(state, 20)
    steady = SteadyLoad(state, 8, 6.0, STEADY_TIMEOUT)
    time.sleep(1.0)
    pid = state.instance("fw2").pid
    assert pid is not None
    t_stop = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        (fo,) = wait_for(state, "failover")
        assert fo["instance"] == "fw2" and fo["reason"] == "heartbeat"
        record_property("sigstop_to_failover_ms", round((float(fo["time"]) - t_stop) * 1000, 1))
        intact, problems = finish(downloads, state.files[STREAM])
        assert intact == 20, problems
        load = steady.join()
        assert steady.started_after(float(fo["time"])) == [], load["errors"]
    finally:
        os.kill(pid, signal.SIGCONT)
    # Resumed, it beats again: back, with no bucket, and not failed over a second time.
    wait_for(state, "instance-back", timeout=5.0)
    time.sleep(2.0)
    assert len(events(state, "failover")) == 1


def test_when_the_leading_master_dies_the_other_leads_and_traffic_goes_on(
    testbed: Builder, tmp_path: Path
) -> None:
    state = testbed(3, config(tmp_path, "established", "clean", "async"), start_instances=True)
    first = leader(state)
    assert first is not None
    downloads = start_downloads(state, 20, tmp_path / "dl")
    wait_established(state, 20)
    killed = next(m for m in state.masters if m.id == first)
    t0 = time.monotonic()
    os.kill(killed.pid, signal.SIGKILL)
    while leader(state) in (None, first) and time.monotonic() - t0 < 5:
        time.sleep(0.02)
    took = time.monotonic() - t0
    assert leader(state) not in (None, first)
    assert took < 2.0, f"takeover took {took:.2f} s"
    intact, problems = finish(downloads, state.files[SLOW])
    assert intact == 20, problems  # the data plane did not notice
    (new_leader,) = [e for e in events(state, "leader") if e["master"] != first]
    (old,) = [e for e in events(state, "leader") if e["master"] == first]
    assert int(new_leader["epoch"]) > int(old["epoch"])  # type: ignore[call-overload]


def test_a_paused_leader_is_deposed_and_its_stale_epoch_cannot_steer(
    testbed: Builder, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    state = testbed(3, config(tmp_path, "established", "clean", "async"), start_instances=True)
    first = leader(state)
    assert first is not None
    (old,) = [e for e in events(state, "leader") if e["master"] == first]
    paused = next(m for m in state.masters if m.id == first)
    table = steer_table()
    t0 = time.monotonic()
    os.kill(paused.pid, signal.SIGSTOP)  # it still believes it leads, with its old epoch
    try:
        new = wait_for_new_leader(state, first, timeout=5.0)
        record_property("takeover_after_pause_ms", round((time.monotonic() - t0) * 1000, 1))
        assert int(new["epoch"]) > int(old["epoch"])  # type: ignore[call-overload]
        # A write with the old epoch, through the same gate and driver the masters use: refused,
        # and the kernel's tables are untouched.
        run = Path(state.run_dir)
        stale = FencedDriver(load_driver(run / "steering.json"), EpochGate(run / "steering.epoch"))
        with pytest.raises(StaleEpochError):
            stale.assign(dict.fromkeys(table["forward"], "fw1"), int(old["epoch"]))  # type: ignore[call-overload]
        assert steer_table() == table
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    # Resumed, the old leader finds the lease gone and steps down.
    deadline = time.monotonic() + 5
    while not [e for e in events(state, "follower") if e["master"] == first] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e for e in events(state, "follower") if e["master"] == first]
    assert leader(state) == new["master"]


def wait_for_new_leader(state: TestbedState, old: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events(state, "leader") if e["master"] != old]
        if found:
            return found[-1]
        time.sleep(0.02)
    raise AssertionError(f"no new leader within {timeout}s")


def test_a_standby_instance_takes_the_failed_instances_buckets(testbed: Builder, tmp_path: Path) -> None:
    cfg = config(tmp_path, "established", "clean", "async")
    cfg.write_text(cfg.read_text() + "[cluster]\nstandby = 1\n")
    state = testbed(3, cfg, start_instances=True)
    roles = {i.id: i.role for i in state.instances}
    assert roles == {"fw1": "active", "fw2": "active", "fw3": "active", "fw4": "standby"}
    table = steer_table()["forward"]
    assert "fw4" not in table.values()  # ready, but no traffic
    fw2_buckets = sorted(b for b, owner in table.items() if owner == "fw2")
    downloads = start_downloads(state, 20, tmp_path / "dl")
    wait_established(state, 20)
    pid = state.instance("fw2").pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    (fo,) = wait_for(state, "failover")
    assert fo["to"] == ["fw4"]
    after = steer_table()["forward"]
    assert sorted(b for b, owner in after.items() if owner == "fw4") == fw2_buckets
    assert all(after[b] == owner for b, owner in table.items() if owner != "fw2")
    intact, problems = finish(downloads, state.files[SLOW])
    assert intact == 20, problems


def test_metrics_are_served_on_the_management_network_only(testbed: Builder, tmp_path: Path) -> None:

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
