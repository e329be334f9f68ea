"""The admin API on the real testbed: the leading master scales, drains and stops instances; the
CLI talks to it; bad calls get one-line errors and change nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns_helpers import Builder
from test_masters import leader, wait_for
from test_shared_state import config

from fwcluster.testbed import TestbedState, steer_table, store_client_argv
from fwcluster.testbed.masters import api_token, api_url

pytestmark = pytest.mark.netns


def cli(*args: str, netns: str | None = None, token: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [str(Path(sys.executable).with_name("fwcluster")), *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    env = {k: v for k, v in os.environ.items() if k != "FWCLUSTER_TOKEN"}
    if token:
        env["FWCLUSTER_TOKEN"] = token
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)


def members(state: TestbedState) -> dict[str, str]:
    """The membership the leader keeps in the store (instance id -> role)."""
    argv = [*store_client_argv(state=state), "HGETALL", "fwc:members"]
    words = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout.split()
    return dict(zip(words[::2], words[1::2], strict=True))


def one_line_error(p: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_drain_and_stop_an_instance(testbed: Builder, tmp_path: Path) -> None:
    state = testbed(3, config(tmp_path, "established", "dirty", "async"), start_instances=True)
    before = steer_table()
    p = cli("instance", "drain", "fw2")
    assert p.returncode == 0, p.stderr
    after = steer_table()
    assert "fw2" not in after["forward"].values() and "fw2" not in after["reverse"].values()
    for d in before:  # only fw2's buckets moved
        assert all(after[d][b] == o for b, o in before[d].items() if o != "fw2")
    status = json.loads(cli("status", "--json").stdout)
    roles = {i["id"]: i["role"] for i in status["instances"]}
    assert roles == {"fw1": "active", "fw2": "ready", "fw3": "active"}
    assert members(state)["fw2"] == "ready"
    time.sleep(1.0)  # a drained instance keeps beating: it is not failed over
    p = cli("instance", "stop", "fw2")
    assert p.returncode == 0, p.stderr
    status = json.loads(cli("status", "--json").stdout)
    assert [i["id"] for i in status["instances"]] == ["fw1", "fw3"]
    assert "fw2" not in members(state)
    assert not [e for e in wait_for(state, "instance-stopped") if e.get("instance") != "fw2"]


def test_bad_calls_get_one_line_errors_and_change_nothing(testbed: Builder, tmp_path: Path) -> None:
    state = testbed(2, config(tmp_path, "established", "dirty", "async"), start_instances=True)
    before = steer_table()
    one_line_error(cli("instance", "drain", "fw9"), 2, "unknown instance 'fw9'")
    one_line_error(cli("instance", "stop", "fw9"), 2, "unknown instance")
    one_line_error(cli("scale", "0"), 2, "out of range")
    assert cli("instance", "drain", "fw2").returncode == 0
    one_line_error(cli("instance", "drain", "fw1"), 2, "no active instance")
    # The network API wants the token; without it (or with a wrong one) nothing happens.
    lead = leader(state)
    assert lead is not None
    url = api_url(lead)
    one_line_error(cli("--api", url, "scale", "3", netns=state.mgmt_netns), 2, "token")
    one_line_error(cli("--api", url, "scale", "3", netns=state.mgmt_netns, token="x" * 32), 2, "token")
    one_line_error(cli("--api", "ftp://nowhere", "scale", "3"), 2, "http://")
    token = api_token(Path(state.run_dir))
    follower = next(m.id for m in state.masters if m.id != lead)
    p = cli("--api", api_url(follower), "scale", "3", netns=state.mgmt_netns, token=token)
    one_line_error(p, 2, "does not lead", f"master {lead} leads")
    raw = subprocess.run(
        ["ip", "netns", "exec", state.mgmt_netns, "curl", "-s", "-X", "POST",
         "-H", f"Authorization: Bearer {token}", "-d", '{"active": 0}', f"{url}/v1/scale"],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    assert "at least one active instance" in json.loads(raw.stdout)["error"]
    after = steer_table()
    assert after["forward"] == {b: "fw1" for b in before["forward"]}  # only the one good drain moved
    # With the token it works over the network too.
    p = cli("--api", url, "status", netns=state.mgmt_netns, token=token)
    assert p.returncode == 0 and json.loads(p.stdout)["leader"] is True


def test_scale_out_promotes_a_ready_standby_then_refills_the_pool(testbed: Builder, tmp_path: Path) -> None:
    cfg = config(tmp_path, "full", "clean", "async")
    cfg.write_text(cfg.read_text() + "[cluster]\nstandby = 1\n")
    state = testbed(3, cfg, start_instances=True)
    deadline = time.monotonic() + 15  # the leader publishes the membership once it leads
    while members(state).get("fw4") != "standby" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert members(state).get("fw4") == "standby"
    p = cli("scale", "4", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["promoted"] == ["fw4"] and doc["added"] == ["fw4"]
    assert "fw4" in steer_table()["forward"].values()
    (refilled,) = wait_for(state, "standby-refilled", timeout=30.0)
    assert refilled["added"] == ["fw5"]
    deadline = time.monotonic() + 5
    while members(state).get("fw5") != "standby" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert members(state) == {
        "fw1": "active",
        "fw2": "active",
        "fw3": "active",
        "fw4": "active",
        "fw5": "standby",
    }
    assert "fw5" not in steer_table()["forward"].values()
    p = cli("scale", "3", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["removed"] == ["fw4"], p.stderr
