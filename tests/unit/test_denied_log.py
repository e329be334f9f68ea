"""Denied new connections, from the engine to the log line: the engine keeps a bounded list of
the denied packets of a batch (nothing for an accepted one), the instance's DeniedLog names the
5-tuple and the rule or reason, lets ``[log] denied_per_second`` lines through a token bucket
(fake clock) and counts and sums up the rest."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from fwcluster import eventlog
from fwcluster.config import ConfigError, parse_config
from fwcluster.engine.engine import Engine, EnginePolicy
from fwcluster.instance.denied import DeniedLog
from fwcluster.instance.metrics import InstanceMetrics
from fwcluster.instance.process import Instance

from .builders import ACK, SYN, T0, echo, firewall, tcp, udp
from .test_metrics import scrape

RULES = """
[policy]
default = "drop"
[[rules]]
action = "accept"
proto = "tcp"
dport = 80
[[rules]]
action = "reject"
proto = "tcp"
dport = 8080
[[rules]]
action = "drop"
proto = "udp"
dport = 53
"""


def setup(rate: int) -> tuple[Engine, DeniedLog]:
    engine = Engine(firewall(RULES), EnginePolicy(), now=T0)
    return engine, DeniedLog(engine, rate, T0)


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The captured records as the JSON lines the instance writes."""
    fmt = eventlog.JsonFormatter()
    docs = [json.loads(fmt.format(r)) for r in caplog.records if r.name == "fwcluster.instance.denied"]
    caplog.clear()
    return docs


def test_each_denied_new_connection_is_one_line_with_the_five_tuple_and_the_rule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    engine, denied = setup(10)
    packets = [
        tcp(SYN, sport=80),  # accepted: nothing kept
        tcp(ACK, sport=80, reply=True, cport=1234),  # invalid (no flow), not a new connection
        tcp(SYN, sport=22),  # the default policy
        tcp(SYN, sport=8080, v6=True),  # rule 2: reject
        udp(sport=53),  # rule 3: drop
        echo(),  # the default policy, ICMP
    ]
    for pid, buf in enumerate(packets):
        engine.packet(pid, buf, T0)
    assert len(engine.denied) == 4 and engine.denied_skipped == 0
    denied.drain(T0)
    assert engine.denied == []
    default, reject, rule, ping = lines(caplog)
    assert default["event"] == "denied" and default["level"] == "info"
    assert {k: default[k] for k in ("proto", "src", "sport", "dst", "dport")} == {
        "proto": "tcp", "src": "192.0.2.1", "sport": 40000, "dst": "198.51.100.2", "dport": 22,
    }  # fmt: skip
    assert (default["reason"], default["rule"], default["verdict"]) == ("default", None, "drop")
    assert (reject["reason"], reject["rule"], reject["verdict"]) == ("rule", 2, "reject")
    assert reject["src"] == "2001:db8::1" and reject["dport"] == 8080
    assert (rule["proto"], rule["dport"], rule["rule"], rule["verdict"]) == ("udp", 53, 3, "drop")
    assert (ping["proto"], ping["icmp_type"], ping["icmp_code"], ping["reason"]) == ("icmp", 8, 0, "default")
    assert "sport" not in ping
    assert denied.logged == 4 and denied.suppressed == 0


def test_the_accept_path_keeps_nothing_and_off_means_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    engine, denied = setup(0)
    assert not engine.log_denied
    for pid in range(50):
        engine.packet(pid, tcp(SYN, sport=22, cport=10000 + pid), T0)
    assert engine.denied == [] and engine.denied_skipped == 0
    denied.drain(T0)
    denied.flush(T0 + 5)
    assert lines(caplog) == [] and denied.suppressed == 0
    engine, denied = setup(10)
    for pid in range(50):
        engine.packet(pid, tcp(SYN, sport=80, cport=10000 + pid), T0)
    assert engine.denied == [] and engine.denied_skipped == 0


def test_a_flood_is_rate_limited_counted_and_summed_up_once_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    engine, denied = setup(3)
    pid = 0

    def flood(n: int, now: float) -> None:
        nonlocal pid
        for _ in range(n):
            engine.packet(pid, tcp(SYN, sport=22, cport=20000 + pid % 1000), now)
            pid += 1
        denied.drain(now)

    flood(100, T0)  # the burst: 3 lines; the engine kept only 3 (its room), counted the rest
    docs = lines(caplog)
    assert [d["event"] for d in docs] == ["denied"] * 3 + ["denied-suppressed"]
    assert docs[-1]["count"] == 97 and docs[-1]["level"] == "warning" and docs[-1]["limit"] == 3
    assert len(engine.denied) == 0 and engine.denied_room == 1  # the bucket is empty: one kept per batch
    flood(100, T0 + 0.5)  # 1.5 tokens: one line; the summary waits for its second
    assert [d["event"] for d in lines(caplog)] == ["denied"]
    denied.flush(T0 + 0.9)
    assert lines(caplog) == []
    denied.flush(T0 + 1.0)  # the sweeper's flush, once the second is over
    (summary,) = lines(caplog)
    assert summary["event"] == "denied-suppressed" and summary["count"] == 99
    denied.flush(T0 + 5)
    assert lines(caplog) == []  # nothing more was suppressed
    flood(1, T0 + 10)  # a quiet spell refilled the bucket: the first denial after it is logged
    assert [d["event"] for d in lines(caplog)] == ["denied"]
    assert (denied.logged, denied.suppressed) == (5, 196)
    assert engine.denied_room == 2  # the tokens left


def test_the_instance_logs_counts_and_exports_suppressed_lines(tmp_path: Path) -> None:
    config = parse_config(
        {"policy": {"default": "drop"}, "log": {"denied_per_second": 2}, "store": {"backend": "memory"}}, "t"
    )
    inst = Instance("fw7", config, 0, tmp_path)
    assert inst.engine.log_denied
    for pid in range(10):
        inst.engine.packet(pid, tcp(SYN, cport=30000 + pid), T0)
    inst.denied.drain(T0)
    assert inst.stats()["log"] == {"denied_logged": 2, "denied_suppressed": 8}
    s = scrape(InstanceMetrics(inst).registry)
    assert s[("fwcluster_log_suppressed_total", ())] == 8
    assert s[("fwcluster_log_denied_total", ())] == 2


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        (
            {"denied_per_second": -1},
            "log.denied_per_second: -1 is not allowed (allowed: an integer 0..10000)",
        ),
        ({"denied_per_second": True}, "log.denied_per_second: True is not allowed"),
        ({"denied_per_second": "10"}, "log.denied_per_second: '10' is not allowed"),
        ({"denied_per_second": 10_001}, "allowed: an integer 0..10000"),
        ({"per_second": 1}, "unknown field 'log.per_second' (allowed: denied_per_second)"),
    ],
)
def test_a_bad_log_section_is_one_line(table: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse_config({"log": table}, "f.toml")


def test_the_log_section_defaults_to_ten_a_second() -> None:
    assert parse_config({}, "t").log.denied_per_second == 10
    assert parse_config({"log": {"denied_per_second": 0}}, "t").log.denied_per_second == 0
