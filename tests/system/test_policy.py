"""The live cluster-wide policy on the real testbed (issue 12, point 3): under load on port 80,
``fwcluster policy apply`` closes port 8081, which was open: no request on port 80 fails, the
downloads already running on 8081 finish intact (tracked flows keep passing), and 1 s after the
apply returned, new connections to 8081 are refused by every instance. A bad file, a wrong token
change nothing; an instance that starts later applies the stored policy; a store restarted
without its data gets the record back from whichever master leads next."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from downloads import finish, start_downloads, wait_established
from netns_helpers import Builder
from test_admin_api import cli, one_line_error
from test_masters import leader, wait_for
from test_shared_state import stats

from fwcluster.bench.datapath import loadgen
from fwcluster.testbed import TestbedState, store_start, store_stop
from fwcluster.testbed.addressing import HTTP_PORT2
from fwcluster.testbed.masters import api_token, api_url

pytestmark = pytest.mark.netns

SERVER = 'dst = ["198.19.0.0/24", "2001:2:0:300::/64"]'
OPEN = f"""
[sync]
level = "established"
access = "dirty"
confirm = "async"

[policy]
default = "drop"

[[rules]]
action = "accept"
proto = "tcp"
{SERVER}
dport = [80, {HTTP_PORT2}]
"""
CLOSED = f"""
[policy]
default = "drop"

[[rules]]
action = "accept"
proto = "tcp"
{SERVER}
dport = 80

[[rules]]
action = "reject"
proto = "tcp"
dport = {HTTP_PORT2}
comment = "closed at run time"
"""
BOUND = 1.0  # the bound: every instance refuses new connections this long after the apply
PROBES = 48  # new connections to the closed port: with 64 buckets over 3 instances each one gets some


def _rejects(state: TestbedState) -> dict[str, int]:
    return {i: int(s.get("reasons", {}).get("rule_reject", 0)) for i, s in stats(state).items()}  # type: ignore[union-attr]


def _probe(state: TestbedState, port: int, count: int, timeout: float = 3.0) -> dict[str, Any]:
    return loadgen(
        state.client_netns, state.server_addr, count, count, timeout=timeout, duration=10, port=port
    )


def test_a_policy_applied_under_load_closes_a_port_on_every_instance(
    testbed: Builder, tmp_path: Path
) -> None:
    cfg = tmp_path / "open.toml"
    cfg.write_text(OPEN)
    state = testbed(3, cfg, start_instances=True)
    assert leader(state) is not None or wait_for(state, "leader", timeout=10)
    closed = tmp_path / "closed.toml"
    closed.write_text(CLOSED)

    # Nothing stored yet: version 0, the config's rules; the port is open.
    p = cli("policy", "show", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["version"] == 0
    before = _probe(state, HTTP_PORT2, 8)
    assert before["completed"] == 8 and before["failed"] == 0, before

    # diff changes nothing
    p = cli("policy", "diff", str(closed))
    assert p.returncode == 0, p.stderr
    assert f"+ [1] reject tcp dport={HTTP_PORT2} # closed at run time" in p.stdout
    assert json.loads(cli("policy", "show", "--json").stdout)["version"] == 0

    # Bad input: one line, non-zero, nothing changes.
    bad = tmp_path / "bad.toml"
    bad.write_text('[policy]\ndefault = "drop"\n[[rules]]\naction = "accept"\nproto = "tcp"\ndport = 99999\n')
    one_line_error(cli("policy", "apply", str(bad)), 2, "rules[0].dport")
    extra = tmp_path / "extra.toml"
    extra.write_text(OPEN)  # a whole config: [sync] is no part of a policy
    one_line_error(cli("policy", "apply", str(extra)), 2, "unknown field 'sync'")
    one_line_error(cli("policy", "apply", str(tmp_path / "none.toml")), 2, "no such policy file")
    lead = leader(state)
    assert lead is not None
    one_line_error(
        cli("--api", api_url(lead), "policy", "apply", str(closed), netns=state.mgmt_netns, token="x" * 32),
        2,
        "token",
    )
    assert json.loads(cli("policy", "show", "--json").stdout)["version"] == 0

    # Under load: short downloads on port 80, and long ones on 8081 opened before the change.
    long_ones = start_downloads(state, 3, tmp_path / "long", url_path=f":{HTTP_PORT2}/slow/1M.bin")
    wait_established(state, 3)
    load: dict[str, Any] = {}

    def run_load() -> None:
        load.update(
            loadgen(state.client_netns, state.server_addr, 100, 10**6, timeout=10.0, duration=6.0, rate=80.0)
        )

    t = threading.Thread(target=run_load)
    t.start()
    try:
        time.sleep(1.5)
        rejects_before = _rejects(state)
        p = cli("policy", "apply", str(closed))
        applied_at = time.monotonic()
        assert p.returncode == 0, p.stderr
        assert "policy version 1 stored" in p.stdout
        time.sleep(max(0.0, applied_at + BOUND - time.monotonic()))
        probe = _probe(state, HTTP_PORT2, PROBES)
    finally:
        t.join(60)
    assert probe["completed"] == 0 and probe["failed"] == PROBES, probe
    assert probe["errors"] == {"ECONNREFUSED": PROBES}, probe["errors"]  # the instances' RSTs
    rejects_after = _rejects(state)
    for i in rejects_before:  # every instance refused some of them: each applied the policy
        assert rejects_after[i] > rejects_before[i], (i, rejects_before, rejects_after)
    assert load["failed"] == 0 and load["completed"] > 0, (load["failed"], load["errors"])
    intact, problems = finish(long_ones, state.files["/slow/1M.bin"])
    assert intact == 3, problems  # tracked flows on the closed port kept passing

    # The version everywhere: the master's event, status, show.
    (ev,) = wait_for(state, "policy-applied")
    assert ev["version"] == 1 and ev["rules"] == 2
    doc = json.loads(cli("status", "--json").stdout)
    assert doc["policy"]["version"] == 1
    assert [(i["id"], i["policy_version"], i["policy_lag"]) for i in doc["instances"]] == [
        (f"fw{k}", 1, False) for k in (1, 2, 3)
    ]
    shown = json.loads(cli("policy", "show", "--json").stdout)
    assert (
        shown["version"] == 1 and shown["rules"][1] == f"reject tcp dport={HTTP_PORT2} # closed at run time"
    )
    again = cli("policy", "apply", str(closed))
    assert again.returncode == 0 and "unchanged" in again.stdout  # no change, no new version
    waited = cli("policy", "apply", "--wait", "--json", str(closed))  # every instance reports it
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["applied"]["instances"] == ["fw1", "fw2", "fw3"], waited.stdout
    token = api_token(Path(state.run_dir))
    p = cli("--api", api_url(lead), "policy", "show", "--json", netns=state.mgmt_netns, token=token)
    assert p.returncode == 0 and json.loads(p.stdout)["version"] == 1, p.stderr

    # An instance started later applies the stored policy before it reads its queue.
    p = cli("scale", "4")
    assert p.returncode == 0, p.stderr
    doc = json.loads(cli("status", "--json").stdout)
    fw4 = next(i for i in doc["instances"] if i["id"] == "fw4")
    assert fw4["policy_version"] == 1 and not fw4["policy_lag"]

    # A store restarted without its data gets the record back from whichever master leads next:
    # the leader is paused across the restart, so the one that never stored it must restore it.
    paused = next(m for m in state.masters if m.id == leader(state))
    os.kill(paused.pid, signal.SIGSTOP)
    try:
        store_stop()
        store_start()
        deadline = time.monotonic() + 30
        shown = {}
        while time.monotonic() < deadline:
            p = cli("policy", "show", "--json")
            shown = json.loads(p.stdout) if p.returncode == 0 else {}
            if shown.get("version") == 1:
                break
            time.sleep(0.5)
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    assert shown.get("version") == 1, shown
    (restored,) = wait_for(state, "policy-restored", timeout=5)
    assert restored["master"] != paused.id and restored["version"] == 1
