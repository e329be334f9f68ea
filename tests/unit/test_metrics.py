"""Prometheus metrics: the names, labels and values an instance and a master expose, the HTTP
endpoint, and the ``--metrics`` flag. Real objects throughout (an Instance with a memory store, a
Master with a steering description); no root, no namespaces, no NFQUEUE, no Redis."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from fwcluster.cli.main import main as cli_main
from fwcluster.config import Config, parse_config
from fwcluster.control.master import Master
from fwcluster.core.decision import Reason
from fwcluster.instance.metrics import (
    InstanceMetrics,
    ListenAddr,
    MetricsServer,
    collect_stats,
    parse_listen,
)
from fwcluster.instance.process import Instance
from fwcluster.steering import Balancer, NextHop, Target
from fwcluster.steering.spec import dump_spec

from .builders import ACK, SYN, tcp

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: bytes | str) -> Samples:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(registry: CollectorRegistry) -> Samples:
    return samples(generate_latest(registry))


def config(level: str = "full", access: str = "clean", confirm: str = "async") -> Config:
    text = f"""
[sync]
level = "{level}"
access = "{access}"
confirm = "{confirm}"
[policy]
default = "accept"
[store]
backend = "memory"
"""
    return parse_config(tomllib.loads(text), "<test>")


def instance(tmp_path: Path, **knobs: str) -> Instance:
    return Instance("fw7", config(**knobs), 0, tmp_path)


# ---------------------------------------------------------------- the --metrics flag
@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("198.18.255.11:9100", "198.18.255.11", 9100),
        ("127.0.0.1:1", "127.0.0.1", 1),
        ("[2001:2:0:fff::b]:9100", "2001:2:0:fff::b", 9100),
        ("[::1]:65535", "::1", 65535),
    ],
)
def test_listen_address_parses(text: str, host: str, port: int) -> None:
    addr = parse_listen(text)
    assert addr == ListenAddr(host, port)
    assert str(addr) == text


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("9100", "not ADDR:PORT"),
        (":9100", "not ADDR:PORT"),
        ("198.18.255.11", "not ADDR:PORT"),
        ("localhost:9100", "not an IP address"),
        ("198.18.255.300:9100", "not an IP address"),
        ("198.18.255.11:0", "not in 1..65535"),
        ("198.18.255.11:65536", "not in 1..65535"),
        ("198.18.255.11:http", "not in 1..65535"),
        ("198.18.255.11:", "not in 1..65535"),
        ("2001:2::1:9100", "brackets"),
        ("[198.18.255.11]:9100", "only IPv6"),
    ],
)
def test_bad_listen_address_is_refused(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_listen(text)


@pytest.mark.parametrize("value", ["nope", "198.18.255.11:99999", "2001:2::1:9100"])
def test_bad_metrics_flag_is_one_line_exit_2(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[store]\nurl = "redis://127.0.0.1:1"\n')
    (tmp_path / "steering.json").write_text("{}")
    common = ["--config", str(config), "--run-dir", str(tmp_path), "--metrics", value]
    for argv, who in (
        (["instance", "run", "--id", "fw1", *common], "fwcluster instance run"),
        (["master", "run", "--id", "m1", *common], "fwcluster master run"),
    ):
        assert cli_main(argv) == 2
        out, err = capsys.readouterr()
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"{who}: {config}: ") and ".metrics: " in lines[0], lines[0]
        assert "Traceback" not in err


# ---------------------------------------------------------------- instance metrics
def test_instance_counters_render(tmp_path: Path) -> None:
    inst = instance(tmp_path, level="established", access="dirty", confirm="sync")
    c = inst.counters
    c.by_reason[Reason.TRACKED] = 5
    c.by_reason[Reason.RULE_ACCEPT] = 2
    c.by_reason[Reason.RULE_DROP] = 3
    c.by_reason[Reason.RULE_REJECT] = 1
    c.by_reason[Reason.TRUNCATED] = 4
    c.by_reason[Reason.NO_FLOW] = 6
    c.errors = 1
    c.state_changes = 9
    c.held = 8
    c.hold_timeouts = 2
    c.refused_in_outage = 1
    c.resolved_by_store = 3
    inst.expired = 7
    inst.firewall.decide(tcp(SYN), 1000.0)  # one flow in the table
    registry = inst_registry(inst)
    s = scrape(registry)

    assert s[("fwcluster_packets_total", ())] == 22
    assert s[("fwcluster_verdicts_total", (("verdict", "accept"),))] == 7
    assert s[("fwcluster_verdicts_total", (("verdict", "drop"),))] == 14  # policy, invalid, errors
    assert s[("fwcluster_verdicts_total", (("verdict", "reject"),))] == 1
    assert s[("fwcluster_packets_by_reason_total", (("reason", "tracked"),))] == 5
    assert s[("fwcluster_packets_by_reason_total", (("reason", "no_flow"),))] == 6
    assert s[("fwcluster_packets_by_reason_total", (("reason", "fragment"),))] == 0  # every reason, from 0
    assert len([k for k in s if k[0] == "fwcluster_packets_by_reason_total"]) == len(Reason)
    assert s[("fwcluster_invalid_packets_total", ())] == 10
    assert s[("fwcluster_malformed_packets_total", ())] == 4
    assert s[("fwcluster_packet_errors_total", ())] == 1
    assert s[("fwcluster_flows", ())] == 1
    assert s[("fwcluster_flows_max", ())] == inst.firewall.table.max_flows
    assert s[("fwcluster_flows_expired_total", ())] == 7
    assert s[("fwcluster_state_changes_total", ())] == 9
    assert s[("fwcluster_held_packets_total", ())] == 8
    assert s[("fwcluster_held_packets", ())] == 0
    assert s[("fwcluster_hold_timeouts_total", ())] == 2
    assert s[("fwcluster_refused_in_outage_total", ())] == 1
    assert s[("fwcluster_resolved_by_store_total", ())] == 3
    assert s[("fwcluster_instance_info", (("id", "fw7"),))] == 1
    sync = (("access", "dirty"), ("confirm", "sync"), ("level", "established"))
    assert s[("fwcluster_sync_info", sync)] == 1
    # the level publishes these states; none was published yet, all appear at 0
    assert s[("fwcluster_published_changes_total", (("state", "established"),))] == 0
    assert ("fwcluster_published_changes_total", (("state", "syn_sent"),)) not in s
    assert s[("fwcluster_store_up", ())] == 1
    assert s[("fwcluster_store_errors_total", ())] == 0
    assert s[("fwcluster_store_write_batch_seconds_count", ())] == 0
    assert ("process_cpu_seconds_total", ()) in s  # the process collector is on
    assert ("fwcluster_heartbeats_sent_total", ()) not in s  # no store URL: no heartbeats


def inst_registry(inst: Instance) -> CollectorRegistry:
    return InstanceMetrics(inst).registry


def test_store_metrics_follow_the_shared_table(tmp_path: Path) -> None:
    """A real SharedTable over a MemoryStore: publish, let the writer write, scrape."""
    inst = instance(tmp_path, level="full", access="clean", confirm="async")
    registry = inst_registry(inst)

    async def go() -> Samples:
        await inst.table.start()
        try:
            t = 1000.0
            for pid, buf in enumerate(
                (tcp(SYN), tcp(SYN | ACK, reply=True, ack=1001), tcp(ACK, seq=1001, ack=1))
            ):
                inst.engine.packet(pid, buf, t)
                # async: accepted at once (the ACK with the fast-path mark), the write queued
                assert inst.engine.accepts + inst.engine.marks == [pid]
                inst.engine.accepts.clear()
                inst.engine.marks.clear()
                inst.table.submit()
                t += 0.001
            for _ in range(200):
                if inst.table.counters.writes == 3:
                    break
                await asyncio.sleep(0.005)
            inst.engine.gate.rate_limited = 4  # as the engine's look-up gate would count them
            return scrape(registry)
        finally:
            await inst.table.stop()

    s = asyncio.run(go())
    assert s[("fwcluster_store_writes_total", ())] == 3
    batches = s[("fwcluster_store_write_batches_total", ())]
    assert 1 <= batches <= 3
    assert s[("fwcluster_store_write_batch_seconds_count", ())] == batches  # one observe per batch
    assert s[("fwcluster_store_write_batch_seconds_bucket", (("le", "+Inf"),))] == batches
    assert s[("fwcluster_store_write_batch_seconds_sum", ())] > 0
    assert s[("fwcluster_published_changes_total", (("state", "syn_sent"),))] == 1
    assert s[("fwcluster_published_changes_total", (("state", "syn_recv"),))] == 1
    assert s[("fwcluster_published_changes_total", (("state", "established"),))] == 1
    assert s[("fwcluster_published_changes_total", (("state", "time_wait"),))] == 0
    assert s[("fwcluster_store_conflicts_total", ())] == 0
    assert s[("fwcluster_store_lookup_rate_limited_total", ())] == 4
    assert s[("fwcluster_store_pending_writes", ())] == 0
    for name in ("outages", "reconnects", "lookups", "lookup_hits", "lookup_misses", "errors"):
        assert s[(f"fwcluster_store_{name}_total", ())] == 0
    sync = (("access", "clean"), ("confirm", "async"), ("level", "full"))
    assert s[("fwcluster_sync_info", sync)] == 1
    assert s[("fwcluster_flows", ())] == 1


def test_sync_level_none_has_no_store_metrics(tmp_path: Path) -> None:
    inst = instance(tmp_path, level="none")
    s = scrape(inst_registry(inst))
    assert not [k for k in s if k[0].startswith("fwcluster_store_")]
    assert not [k for k in s if k[0] == "fwcluster_published_changes_total"]
    sync = (("access", "clean"), ("confirm", "async"), ("level", "none"))
    assert s[("fwcluster_sync_info", sync)] == 1
    assert s[("fwcluster_packets_total", ())] == 0


def test_heartbeat_counters_render() -> None:
    """The collector over a stats-shaped mapping: heartbeats appear once an instance beats."""
    stats: dict[str, Any] = {
        "id": "fw1",
        "sync": {"level": "none", "access": "dirty", "confirm": "async"},
        "packets": 0,
        "verdicts": {"accept": 0, "drop": 0, "reject": 0},
        "reasons": {},
        "invalid": 0,
        "malformed": 0,
        "errors": 0,
        "replies_sent": 0,
        "replies_failed": 0,
        "flows": 0,
        "max_flows": 10,
        "expired": 0,
        "state_changes": 0,
        "held": 0,
        "held_now": 0,
        "hold_timeouts": 0,
        "refused_in_outage": 0,
        "resolved_by_store": 0,
        "picked_up": 0,
        "write_refused": 0,
        "user_space_packets": 0,
        "queue_overruns": 0,
        "verdict_errors": 0,
        "fast_path": {
            "enabled": True,
            "marked": 0,
            "flows": None,
            "kernel_tracking": False,
            "kernel_marked": 0,
            "conntrack_entries": None,
        },
        "heartbeats": 12,
        "heartbeats_failed": 2,
        "store": None,
    }
    registry = CollectorRegistry()

    class Source:
        def collect(self) -> Iterator[Metric]:
            return collect_stats(stats)

    registry.register(Source())
    s = scrape(registry)
    assert s[("fwcluster_heartbeats_sent_total", ())] == 12
    assert s[("fwcluster_heartbeat_failures_total", ())] == 2


def test_instance_endpoint_serves_metrics_from_the_loop(tmp_path: Path) -> None:
    """``serve`` on a running loop; a scrape from another thread reads the counters on the loop."""
    inst = instance(tmp_path)
    inst.counters.by_reason[Reason.TRACKED] = 3

    async def go() -> str:
        metrics = InstanceMetrics(inst)
        server = metrics.serve(ListenAddr("127.0.0.1", 0))
        try:
            assert server.port > 0
            url = f"http://127.0.0.1:{server.port}/metrics"

            def get() -> str:
                with urllib.request.urlopen(url, timeout=10) as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("text/plain")
                    return str(r.read().decode())

            return await asyncio.to_thread(get)
        finally:
            await asyncio.to_thread(metrics.close)
            assert inst.table.observe_write is None

    s = samples(asyncio.run(go()))
    assert s[("fwcluster_packets_total", ())] == 3
    assert s[("fwcluster_instance_info", (("id", "fw7"),))] == 1


def test_endpoint_on_a_busy_address_is_an_oserror() -> None:
    registry = CollectorRegistry()
    first = MetricsServer(ListenAddr("127.0.0.1", 0), registry)
    try:
        with pytest.raises(OSError, match=r"cannot serve metrics on 127\.0\.0\.1:"):
            MetricsServer(ListenAddr("127.0.0.1", first.port), registry)
    finally:
        first.close()


# ---------------------------------------------------------------- master metrics
def master(tmp_path: Path) -> Master:
    hop = NextHop(dev="fw1", via4="198.18.1.2", via6="2001:2:0:101::2")
    targets = [Target(id=f"fw{k}", mark=0x100 + k, table=100 + k, hops=(("fwc-lb", hop),)) for k in (1, 2)]
    spec = dump_spec("symmetric", [Balancer("fwc-lb", "client")], 8, targets)
    (tmp_path / "steering.json").write_text(json.dumps(spec))
    return Master("m2", config(), tmp_path, "redis://127.0.0.1:1")  # never connects here


def test_master_metrics(tmp_path: Path) -> None:
    m = master(tmp_path)
    s = scrape(m.metrics.registry)
    assert s[("fwcluster_master_info", (("id", "m2"),))] == 1
    assert s[("fwcluster_master_leader", ())] == 0
    assert s[("fwcluster_master_epoch", ())] == 0
    assert s[("fwcluster_master_instances_failed", ())] == 0
    for reason in ("heartbeat", "process-gone"):  # every series from the start, at 0
        assert s[("fwcluster_master_failovers_total", (("reason", reason),))] == 0
    assert s[("fwcluster_master_leader_changes_total", (("to", "leader"),))] == 0

    # what _lead and _fail_over record
    m.epoch = 4
    m.metrics.leadership(True)
    m.failed = {"fw1", "fw2"}
    m.metrics.failover("process-gone")
    m.metrics.failover("process-gone")
    m.metrics.failover("heartbeat")
    m.metrics.failover_error("heartbeat", "no-healthy-instance")
    s = scrape(m.metrics.registry)
    assert s[("fwcluster_master_leader", ())] == 1
    assert s[("fwcluster_master_epoch", ())] == 4
    assert s[("fwcluster_master_instances_failed", ())] == 2
    assert s[("fwcluster_master_failovers_total", (("reason", "process-gone"),))] == 2
    assert s[("fwcluster_master_failovers_total", (("reason", "heartbeat"),))] == 1
    err = (("error", "no-healthy-instance"), ("reason", "heartbeat"))
    assert s[("fwcluster_master_failover_errors_total", err)] == 1
    assert s[("fwcluster_master_leader_changes_total", (("to", "leader"),))] == 1

    m.epoch = None  # lost the lease
    m.metrics.leadership(False)
    s = scrape(m.metrics.registry)
    assert s[("fwcluster_master_leader", ())] == 0
    assert s[("fwcluster_master_epoch", ())] == 0
    assert s[("fwcluster_master_instances_failed", ())] == 0  # only the leader reports them
    assert s[("fwcluster_master_leader_changes_total", (("to", "follower"),))] == 1


def test_master_endpoint(tmp_path: Path) -> None:
    m = master(tmp_path)
    m.epoch = 9
    server = MetricsServer(ListenAddr("127.0.0.1", 0), m.metrics.registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            s = samples(r.read())
    finally:
        server.close()
    assert s[("fwcluster_master_epoch", ())] == 9
    assert s[("fwcluster_master_leader", ())] == 1


def test_registries_are_private(tmp_path: Path) -> None:
    """Two instances and two masters in one process: no name clashes, nothing in the global registry."""
    a, b = instance(tmp_path), instance(tmp_path)
    ra, rb = inst_registry(a), inst_registry(b)
    a.counters.errors = 1
    assert scrape(ra)[("fwcluster_packets_total", ())] == 1
    assert scrape(rb)[("fwcluster_packets_total", ())] == 0
    m1, m2 = master(tmp_path), master(tmp_path)
    assert m1.metrics.registry is not m2.metrics.registry
    assert not [k for k in scrape(REGISTRY) if k[0].startswith("fwcluster_")]


def test_master_cli_serves_metrics(tmp_path: Path) -> None:
    """``fwcluster master run --metrics``: the endpoint is up while the master runs (its store
    is unreachable here, so it never leads and never touches steering)."""
    master(tmp_path)  # writes the steering description
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "c.toml"
    config.write_text('[store]\nurl = "redis://127.0.0.1:1"\n')
    argv = [sys.executable, "-m", "fwcluster", "master", "run", "--config", str(config), "--id", "m3"]
    argv += ["--run-dir", str(tmp_path), "--metrics", f"127.0.0.1:{port}"]
    log = tmp_path / "m3.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    s = samples(r.read())
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "no metrics endpoint"
                time.sleep(0.05)
        assert s[("fwcluster_master_info", (("id", "m3"),))] == 1
        assert s[("fwcluster_master_leader", ())] == 0
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
