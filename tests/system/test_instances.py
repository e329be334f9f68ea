"""Real packets through real firewall instances (NFQUEUE) in the namespace testbed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from netns_helpers import (
    Capture,
    curl,
    probe_connections,
    send_raw,
    url,
)
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw, raw

from fwcluster.instance.control import query
from fwcluster.testbed import TestbedState, down, netns_exec, up

pytestmark = pytest.mark.netns

POLICY = """\
[policy]
default = "drop"

[[rules]]
action = "accept"
proto = "tcp"
dst = ["198.19.0.0/24", "2001:2:0:300::/64"]
dport = 80

[[rules]]
action = "reject"
proto = "tcp"
dport = 8080
"""

ICMP_RULES = """
[[rules]]
action = "accept"
proto = "icmp"

[[rules]]
action = "accept"
proto = "icmpv6"
"""


def _fwcluster(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "fwcluster", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _stats(state: TestbedState) -> dict[str, dict[str, object]]:
    return {i.id: query(i.control_socket, {"cmd": "stats"}) for i in state.instances}


def _total(state: TestbedState, field: str) -> int:
    return sum(int(s[field]) for s in _stats(state).values())  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def bed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestbedState]:
    """Two instances, the policy above; shared by the tests of this module."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    request.getfixturevalue("_safety_net")
    config = tmp_path_factory.mktemp("cfg") / "policy.toml"
    config.write_text(POLICY)
    state = up(2, str(config))
    try:
        yield state
    finally:
        down()


@pytest.mark.parametrize("family", [4, 6])
def test_curl_gets_the_one_byte_body_through_an_instance(bed: TestbedState, family: int) -> None:
    before = _total(bed, "packets")
    r = curl(bed.client_netns, url(bed, family))
    assert r.ok and r.body == b"x"
    assert _total(bed, "packets") >= before + 5  # the handshake, request, answer went through NFQUEUE


@pytest.mark.parametrize("family", [4, 6])
def test_port_the_rules_do_not_allow_gets_no_answer(bed: TestbedState, family: int) -> None:
    t0 = time.monotonic()
    r = curl(bed.client_netns, url(bed, family, "/", port=22), timeout=1.5)
    assert r.returncode == 28  # timed out: dropped, no answer at all
    assert time.monotonic() - t0 >= 1.4


@pytest.mark.parametrize("family", [4, 6])
def test_reject_rule_answers_with_a_rst(bed: TestbedState, family: int) -> None:
    before = _total(bed, "replies_sent")
    t0 = time.monotonic()
    r = curl(bed.client_netns, url(bed, family, "/", port=8080))
    assert r.returncode == 7  # connection refused: the instance's RST
    assert time.monotonic() - t0 < 1.0
    assert _total(bed, "replies_sent") == before + 1


def test_stray_syn_ack_and_bare_ack_never_reach_the_server(bed: TestbedState, tmp_path: Path) -> None:
    c4, s4 = bed.client_addr, bed.server_addr
    c6, s6 = bed.client_addr6, bed.server_addr6
    stray = [
        raw(IP(src=c4, dst=s4) / TCP(sport=40001, dport=80, flags="SA", seq=1, ack=1)),
        raw(IP(src=c4, dst=s4) / TCP(sport=40002, dport=80, flags="A", seq=1, ack=1)),
        raw(IPv6(src=c6, dst=s6) / TCP(sport=40003, dport=80, flags="SA", seq=1, ack=1)),
        raw(IPv6(src=c6, dst=s6) / TCP(sport=40004, dport=80, flags="A", seq=1, ack=1)),
    ]
    control = raw(IP(src=c4, dst=s4) / TCP(sport=40009, dport=80, flags="S", seq=1))  # must arrive
    invalid_before = _total(bed, "invalid")
    cap = Capture(bed.server_netns, "tcp and portrange 40001-40009", str(tmp_path / "server.pcap"))
    try:
        send_raw(bed.client_netns, [*stray, control])
        time.sleep(0.5)
    finally:
        seen = cap.stop()
    assert not [line for line in seen if ".4000" in line and ".40009" not in line], seen
    assert any(".40009 > " in line and "Flags [S]" in line for line in seen), "the control SYN got lost"
    assert _total(bed, "invalid") == invalid_before + 4


def test_malformed_packets_are_dropped_counted_and_harmless(bed: TestbedState, tmp_path: Path) -> None:
    c4, s4, c6, s6 = bed.client_addr, bed.server_addr, bed.client_addr6, bed.server_addr6
    bad_doff = bytearray(raw(IP(src=c4, dst=s4) / TCP(sport=40011, dport=80, flags="S")))
    bad_doff[20 + 12] = 0x20  # TCP data offset 2 (< 5)
    bad_opts = raw(IP(src=c4, dst=s4) / TCP(sport=40012, dport=80, flags="S", options=[(254, b"")]))
    bad_opts = bad_opts[:40] + b"\xfe\x00\x00\x00" + bad_opts[44:]  # option length 0
    fragment = raw(IP(src=c4, dst=s4, frag=100, proto=6) / Raw(b"\x00" * 24))
    gre = raw(IP(src=c4, dst=s4, proto=47) / Raw(b"\x00" * 8))
    v6_fragment = raw(IPv6(src=c6, dst=s6, nh=44) / Raw(bytes([6, 0, 0, 0x81, 0, 0, 0, 1]) + bytes(20)))
    pids = {i.id: i.pid for i in bed.instances}
    malformed_before = _total(bed, "malformed")
    cap = Capture(bed.server_netns, "not arp and not icmp6", str(tmp_path / "server.pcap"))
    try:
        send_raw(bed.client_netns, [bytes(bad_doff), bad_opts, fragment, gre, v6_fragment] * 3)
        time.sleep(0.5)
    finally:
        seen = cap.stop()
    assert seen == []
    assert _total(bed, "malformed") >= malformed_before + 12  # (a few may be dropped by the kernel first)
    stats = _stats(bed)
    assert {i: int(s["pid"]) for i, s in stats.items()} == pids  # nobody crashed  # type: ignore[call-overload]
    assert all(s["errors"] == 0 for s in stats.values())
    assert curl(bed.client_netns, url(bed, 4)).body == b"x"


def test_two_instances_both_directions_of_each_connection_cross_the_same_one(bed: TestbedState) -> None:
    fws = [i.netns for i in bed.instances]
    flows_before = {i: int(s["state_changes"]) for i, s in _stats(bed).items()}  # type: ignore[call-overload]
    ports, seen = probe_connections(bed, 20)
    for fam, fam_ports in ports.items():
        for port in fam_ports:
            out = [ns for ns in fws if port in seen[ns][f"c2s{fam}"]]
            back = [ns for ns in fws if port in seen[ns][f"s2c{fam}"]]
            assert len(out) == 1 and back == out, (fam, port, out, back)
    # Both instances tracked connections through their whole life (both directions seen).
    after = {i: int(s["state_changes"]) for i, s in _stats(bed).items()}  # type: ignore[call-overload]
    assert all(after[i] > flows_before[i] for i in after)


def test_status_json_has_the_contract_fields(bed: TestbedState) -> None:
    p = _fwcluster("status", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert [i["id"] for i in doc["instances"]] == ["fw1", "fw2"]
    for inst in doc["instances"]:
        assert {"id", "pid", "netns", "health", "flows"} <= set(inst)
        assert inst["health"] == "ok" and isinstance(inst["flows"], int)
    assert doc["sync"] == {"level": "established", "access": "dirty", "confirm": "async", "follow": "backup"}
    tb = doc["testbed"]
    assert (tb["client_netns"], tb["server_netns"], tb["http_port"]) == ("fwc-client", "fwc-server", 80)
    assert (tb["server_addr"], tb["server_addr6"]) == (bed.server_addr, bed.server_addr6)
    table = _fwcluster("status")
    assert table.returncode == 0 and "fw1" in table.stdout and "fw2" in table.stdout


def test_ping_is_dropped_without_an_icmp_rule(bed: TestbedState) -> None:
    for cmd in (
        ["ping", "-c", "1", "-W", "1", bed.server_addr],
        ["ping", "-6", "-c", "1", "-W", "1", bed.server_addr6],
    ):
        assert netns_exec(bed.client_netns, cmd).returncode != 0


def _log_lines(path: str) -> list[dict[str, object]]:
    """Every line of a process's log as a JSON object (fails on one that is not)."""
    docs = [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
    assert all(
        isinstance(d, dict) and all(k in d for k in ("time", "level", "process", "id", "event")) for d in docs
    )
    return docs


def test_denied_new_connections_are_logged_with_the_rule_and_every_line_is_json(bed: TestbedState) -> None:
    """A rejected (rule 2) and a dropped (default policy) connection each leave a `denied` line
    on the instance that saw them; every line of every instance's and master's log is one JSON
    object with the base keys (docs/logging.md)."""
    t0 = time.time()
    assert curl(bed.client_netns, url(bed, 4, "/", port=8080)).returncode == 7
    assert curl(bed.client_netns, url(bed, 6, "/", port=22), timeout=1.0).returncode == 28

    def denied() -> list[dict[str, object]]:
        return [
            d
            for i in bed.instances
            for d in _log_lines(i.log)
            if d["event"] == "denied" and float(d["time"]) >= t0  # type: ignore[arg-type]
        ]

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and {d.get("dport") for d in denied()} != {8080, 22}:
        time.sleep(0.1)
    lines = denied()
    (reject,) = [d for d in lines if d.get("dport") == 8080]
    assert (reject["reason"], reject["rule"], reject["verdict"], reject["proto"]) == (
        "rule",
        2,
        "reject",
        "tcp",
    )
    assert reject["src"] == bed.client_addr and reject["dst"] == bed.server_addr
    dropped = [d for d in lines if d.get("dport") == 22]
    assert dropped and all(d["reason"] == "default" and d["rule"] is None for d in dropped)
    assert all(d["src"] == bed.client_addr6 and d["process"] == "instance" for d in dropped)
    for inst in bed.instances:
        events = [d["event"] for d in _log_lines(inst.log) if d["id"] == inst.id]
        assert "start" in events and "ready" in events
    for m in bed.masters:
        events = [d["event"] for d in _log_lines(m.log) if d["process"] == "master" and d["id"] == m.id]
        assert "master-started" in events and "master-ready" in events


def test_a_syn_flood_to_a_denied_port_is_a_handful_of_lines_and_the_rest_counted(
    bed: TestbedState, record_property: Callable[[str, object], None]
) -> None:
    """3000 SYNs to port 22 (the default policy drops them): each instance writes at most
    [log] denied_per_second (10) lines a second plus its burst, counts every other denial as
    suppressed, and the denied-suppressed lines sum up exactly what it did not write."""

    def counts() -> dict[str, tuple[int, int, int]]:
        out = {}
        for inst_id, s in _stats(bed).items():
            log = s["log"]
            assert isinstance(log, dict) and isinstance(s["reasons"], dict)
            out[inst_id] = (
                int(s["reasons"].get("rule_drop", 0)),
                log["denied_logged"],
                log["denied_suppressed"],
            )
        return out

    before = counts()
    t0 = time.time()
    syns = [
        raw(IP(src=bed.client_addr, dst=bed.server_addr) / TCP(sport=20000 + i, dport=22, flags="S", seq=1))
        for i in range(3000)
    ]
    send_raw(bed.client_netns, syns)

    def settled() -> bool:  # every denial counted, and the last summary line is out
        now = counts()
        for inst in bed.instances:
            dropped = now[inst.id][0] - before[inst.id][0]
            logged = now[inst.id][1] - before[inst.id][1]
            suppressed = now[inst.id][2] - before[inst.id][2]
            if logged + suppressed != dropped:
                return False
            lines = [d for d in _log_lines(inst.log) if float(d["time"]) >= t0]  # type: ignore[arg-type]
            summed = sum(int(d["count"]) for d in lines if d["event"] == "denied-suppressed")  # type: ignore[call-overload]
            if summed != suppressed:
                return False
        return True

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not settled():
        time.sleep(0.2)
    assert settled()
    elapsed = time.time() - t0
    after = counts()
    total_dropped = sum(after[i][0] - before[i][0] for i in after)
    assert total_dropped > 1000  # most of the flood reached an instance (the rest: queue overruns)
    record_property("denied", total_dropped)
    record_property("lines", sum(after[i][1] - before[i][1] for i in after))
    record_property("suppressed", sum(after[i][2] - before[i][2] for i in after))
    for inst in bed.instances:
        denied = [
            d
            for d in _log_lines(inst.log)
            if d["event"] == "denied" and float(d["time"]) >= t0  # type: ignore[arg-type]
        ]
        assert len(denied) <= 10 + 10 * elapsed + 1, (inst.id, len(denied), elapsed)
        assert all(d["dport"] == 22 and d["reason"] == "default" for d in denied)
