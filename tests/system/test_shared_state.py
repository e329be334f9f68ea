"""The shared state table on the real testbed: real packets, real redis-server, real nginx.

Every test builds its own testbed (three instances unless said otherwise) and tears it down.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from downloads import finish, start_downloads, wait_established
from netns_helpers import Builder, curl, url

from fwcluster.bench.datapath import loadgen
from fwcluster.instance.control import query
from fwcluster.testbed import TestbedState, restart_instance, steer_move, store_start, store_stop

pytestmark = pytest.mark.netns

SLOW = "/slow/1M.bin"


def config(
    tmp: Path, level: str, access: str = "clean", confirm: str = "sync", kind: str = "symmetric"
) -> Path:
    f = tmp / f"{level}-{access}-{confirm}-{kind}.toml"
    f.write_text(
        f'[sync]\nlevel = "{level}"\naccess = "{access}"\nconfirm = "{confirm}"\n'
        f'[steering]\nkind = "{kind}"\n'
        '[policy]\ndefault = "drop"\n'
        '[[rules]]\naction = "accept"\nproto = "tcp"\ndport = 80\n'
    )
    return f


def stats(state: TestbedState) -> dict[str, dict[str, object]]:
    out = {}
    for i in state.instances:
        try:
            out[i.id] = query(i.control_socket, {"cmd": "stats"})
        except OSError:
            out[i.id] = {}
    return out


def store_sum(state: TestbedState, field: str) -> int:
    return sum(int(s["store"][field]) for s in stats(state).values() if s.get("store"))  # type: ignore[index]


def all_on(state: TestbedState, target: str) -> None:
    """Steer every bucket to ``target``."""
    for inst in state.instances:
        if inst.id != target:
            steer_move(inst.id, [target])


def test_ecmp_full_clean_all_downloads_succeed(testbed: Builder, tmp_path: Path) -> None:
    state = testbed(3, config(tmp_path, "full", "clean", "sync", "ecmp"), start_instances=True)
    r = loadgen(state.client_netns, state.server_addr, 10, 200)
    assert (r["completed"], r["failed"]) == (200, 0), r["errors"]
    s = stats(state)
    assert sum(1 for v in s.values() if int(v["packets"]) > 0) >= 2  # type: ignore[call-overload]
    # Directions crossed different instances: replicas learned flows from the feed or the store.
    assert store_sum(state, "feed_applied") + store_sum(state, "lookup_hits") > 0


def test_ecmp_without_sharing_downloads_fail(testbed: Builder, tmp_path: Path) -> None:
    """The reason sharing exists: with sync level none, a reply that crosses another instance is
    a packet of an unknown connection, and is dropped."""
    state = testbed(3, config(tmp_path, "none", "dirty", "async", "ecmp"), start_instances=True)
    r = loadgen(state.client_netns, state.server_addr, 60, 60, timeout=2.0)
    assert r["failed"] > 0
    assert r["completed"] < 60


@pytest.mark.parametrize("level", ["established", "full"])
def test_moving_buckets_keeps_long_downloads(testbed: Builder, tmp_path: Path, level: str) -> None:
    state = testbed(3, config(tmp_path, level, "clean", "async"), start_instances=True)
    all_on(state, "fw1")
    downloads = start_downloads(state, 20, tmp_path / "dl")
    wait_established(state, 20)
    time.sleep(1.0)
    steer_move("fw1", ["fw2", "fw3"])
    intact, problems = finish(downloads, state.files[SLOW])
    assert intact == 20, problems
    moved = stats(state)
    assert int(moved["fw2"]["packets"]) > 0 and int(moved["fw3"]["packets"]) > 0  # type: ignore[call-overload]


def test_moving_buckets_without_sharing_breaks_downloads(testbed: Builder, tmp_path: Path) -> None:
    state = testbed(3, config(tmp_path, "none", "dirty", "async"), start_instances=True)
    all_on(state, "fw1")
    downloads = start_downloads(state, 20, tmp_path / "dl", stall_abort=3)
    wait_established(state, 20)
    time.sleep(1.0)
    steer_move("fw1", ["fw2", "fw3"])
    intact, problems = finish(downloads, state.files[SLOW])
    assert intact < 20 and problems


@pytest.mark.parametrize("level", ["established", "full"])
def test_sigkill_of_the_carrying_instance_loses_no_download(
    testbed: Builder, tmp_path: Path, level: str
) -> None:
    state = testbed(3, config(tmp_path, level, "clean", "async"), start_instances=True)
    all_on(state, "fw1")
    downloads = start_downloads(state, 20, tmp_path / "dl")
    wait_established(state, 20)
    time.sleep(1.0)
    pid = state.instance("fw1").pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    steer_move("fw1", ["fw2", "fw3"])
    intact, problems = finish(downloads, state.files[SLOW])
    assert intact == 20, problems


def test_a_joining_instance_serves_flows_opened_before_it_started(testbed: Builder, tmp_path: Path) -> None:
    state = testbed(2, config(tmp_path, "full", "clean", "async"), start_instances=True)
    all_on(state, "fw1")
    downloads = start_downloads(state, 10, tmp_path / "dl")
    wait_established(state, 10)
    state = restart_instance("fw2")  # a new process: it joins from the store's snapshot
    joined = stats(state)["fw2"]
    assert int(joined["store"]["snapshot_flows"]) >= 10  # type: ignore[index]
    steer_move("fw1", ["fw2"])
    intact, problems = finish(downloads, state.files[SLOW])
    assert intact == 10, problems


def _wait_store_seen(state: TestbedState, up: bool, timeout: float) -> None:
    """Wait until every instance reports the store as ``up`` (or not), with a generous bound: on
    a busy machine an instance notices a lost or returned store late, never not at all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = stats(state)
        if all(v.get("store") and bool(v["store"]["store_up"]) == up for v in s.values()):  # type: ignore[index]
            return
        time.sleep(0.2)
    raise AssertionError(f"instances did not see the store {'back' if up else 'gone'}: {stats(state)}")


def test_store_outage_established_flows_pass_and_the_instance_recovers(
    testbed: Builder, tmp_path: Path
) -> None:
    cfg = config(tmp_path, "established", "clean", "async")
    cfg.write_text(cfg.read_text() + '[store]\noutage = "refuse"\n')
    state = testbed(2, cfg, start_instances=True)
    downloads = start_downloads(state, 10, tmp_path / "dl")
    wait_established(state, 10)
    store_stop()
    try:
        _wait_store_seen(state, False, 15.0)
        # New connections are refused while the store is away (outage "refuse").
        assert curl(state.client_netns, url(state, 4), timeout=1.0).returncode == 28
        time.sleep(1.5)
    finally:
        store_start()
    _wait_store_seen(state, True, 15.0)
    assert all(int(v["store"]["reconnects"]) >= 1 for v in stats(state).values())  # type: ignore[index]
    assert curl(state.client_netns, url(state, 4)).body == b"x"
    intact, problems = finish(downloads, state.files[SLOW])
    assert intact == 10, problems
    pids = [i.pid for i in state.instances]
    assert [int(v["pid"]) for v in stats(state).values()] == pids  # type: ignore[call-overload]
