"""Instances with their own testbeds: ICMP policy, failing closed, the command line's life cycle."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns_helpers import Builder, curl, send_raw, url
from scapy.layers.inet import ICMP, IP, TCP
from scapy.packet import Raw, raw
from test_instances import ICMP_RULES, POLICY

from fwcluster.instance.control import query
from fwcluster.steering.netns import inside
from fwcluster.testbed import TestbedState, netns_exec

pytestmark = pytest.mark.netns


def _fwcluster(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "fwcluster", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _related(state: TestbedState) -> int:
    reasons = query(state.instances[0].control_socket, {"cmd": "stats"})["reasons"]
    return int(reasons.get("related", 0))


def test_icmp_rules_let_ping_through_and_errors_about_a_flow_pass_as_related(
    testbed: Builder, tmp_path: Path
) -> None:
    config = tmp_path / "icmp.toml"
    # The instance itself judges the error here: on the fast path an error about a marked flow
    # would be forwarded by the kernel (whose conntrack checks it the same way).
    config.write_text(POLICY + ICMP_RULES + "[datapath]\nfast_path = false\n")
    state = testbed(1, config, start_instances=True)
    for cmd in (
        ["ping", "-c", "2", "-i", "0.2", "-W", "1", state.server_addr],
        ["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", state.server_addr6],
    ):
        assert netns_exec(state.client_netns, cmd).returncode == 0, cmd
    reasons = query(state.instances[0].control_socket, {"cmd": "stats"})["reasons"]
    assert reasons["rule_accept"] >= 2 and reasons["tracked"] >= 2
    # Path MTU discovery must keep working: "fragmentation needed" about a live flow is related.
    c4, s4 = state.client_addr, state.server_addr
    with inside(state.client_netns):
        sock = socket.create_connection((s4, 80), timeout=2)
    try:
        sport = sock.getsockname()[1]
        quoted = raw(IP(src=c4, dst=s4) / TCP(sport=sport, dport=80, flags="A"))[:28]
        before = _related(state)
        send_raw(
            state.server_netns,
            [raw(IP(src=s4, dst=c4) / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(quoted))],
        )
        time.sleep(0.3)
        assert _related(state) == before + 1
    finally:
        sock.close()


def test_fails_closed_when_the_instance_dies(testbed: Builder) -> None:
    state = testbed(1, None, start_instances=True)
    assert curl(state.client_netns, url(state, 4)).body == b"x"
    pid = state.instances[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    for family in (4, 6):
        assert curl(state.client_netns, url(state, family), timeout=1.0).returncode == 28


def test_broken_config_is_one_line_and_builds_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[sync]\nlevel = "most"\n')
    p = _fwcluster("testbed", "up", "--config", str(bad))
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "sync.level" in p.stderr and "Traceback" not in p.stderr
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "fwc-" not in names


def test_cli_up_status_down(tmp_path: Path) -> None:
    try:
        p = _fwcluster("testbed", "up", "--instances", "2")
        assert p.returncode == 0, p.stderr
        again = _fwcluster("testbed", "up")
        assert again.returncode == 1 and again.stderr.count("\n") == 1, again.stderr
        doc = json.loads(_fwcluster("status", "--json").stdout)
        assert [i["health"] for i in doc["instances"]] == ["ok", "ok"]
    finally:
        assert _fwcluster("testbed", "down").returncode == 0
    assert _fwcluster("testbed", "down").returncode == 0  # idempotent
    gone = _fwcluster("status", "--json")
    assert gone.returncode == 1 and "not up" in gone.stderr and gone.stderr.count("\n") == 1
