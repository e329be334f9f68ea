"""Smoke test of ``fwcluster bench store`` on tiny sizes: it runs and answers in the documented
shape (no timing asserts), and bad arguments end in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

from fwcluster.bench.store import TCP_WALK, TTL_MS, flow_key, free_port, redact, tcp_changes
from fwcluster.cli.main import main
from fwcluster.core.states import RANK, FlowState
from fwcluster.credentials import write_secret

pytestmark = pytest.mark.timeout(120)

FIELDS = {"access", "confirm", "changes", "us_per_change_p50", "us_per_change_p99", "changes_per_second"}


def _check_shape(doc: dict[str, object], changes: int) -> None:
    configs = doc["configurations"]
    assert isinstance(configs, list)
    assert [(c["access"], c["confirm"]) for c in configs] == [
        ("dirty", "async"),
        ("dirty", "sync"),
        ("clean", "async"),
        ("clean", "sync"),
    ]
    for c in configs:
        assert set(c) >= FIELDS
        assert c["changes"] == changes
        assert isinstance(c["us_per_change_p50"], float | int) and c["us_per_change_p50"] > 0
        assert c["us_per_change_p99"] >= c["us_per_change_p50"]
        assert isinstance(c["changes_per_second"], int) and c["changes_per_second"] > 0
    assert isinstance(doc["redis_version"], str) and doc["redis_version"][0].isdigit()


def test_bench_store_json_with_its_own_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "store", "--changes", "30", "--rounds", "2", "--json"]) == 0
    out = capsys.readouterr().out
    _check_shape(json.loads(out), 60)


def _url_file(tmp_path: Path, url: str) -> str:
    """The URL (it holds the password) in a 0600 file: the only way bench store takes it."""
    return str(write_secret(tmp_path / "store-url", url))


def test_bench_store_against_a_given_url(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "bench",
        "store",
        "--changes",
        "20",
        "--rounds",
        "1",
        "--url-file",
        _url_file(tmp_path, redis_url),
    ]
    assert main([*argv, "--json"]) == 0
    _check_shape(json.loads(capsys.readouterr().out), 20)


def test_bench_store_table(redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "bench",
        "store",
        "--changes",
        "10",
        "--rounds",
        "1",
        "--url-file",
        _url_file(tmp_path, redis_url),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "clean" in out and "sync" in out
    password = redis_url.split("@", 1)[0].rsplit(":", 1)[-1]
    assert password not in out  # never printed


@pytest.mark.parametrize(
    "args",
    [
        ["--changes", "0"],
        ["--changes", "many"],
        ["--rounds", "0"],
        ["--rounds", "1000"],
        ["--url", "http://127.0.0.1:6379"],
        ["--url", "redis://127.0.0.1:notaport"],
        ["--url", "redis://"],
    ],
)
def test_bad_arguments_are_one_line(args: list[str]) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "fwcluster", "bench", "store", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 2
    assert p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "Traceback" not in p.stderr


def test_unreachable_url_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:

    assert main(["bench", "store", "--changes", "10", "--url", f"redis://127.0.0.1:{free_port()}/0"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bench store" in err


def test_workload_is_realistic_tcp() -> None:
    changes = tcp_changes(1000)
    assert len(changes) == 1000
    assert all(len(r.key) == 13 and r.key[0] == 6 for r, _ in changes)
    assert flow_key(0) != flow_key(1)
    per_flow: dict[bytes, list[tuple[FlowState, int]]] = {}
    for r, ttl in changes:
        assert ttl == TTL_MS[r.state]
        per_flow.setdefault(r.key, []).append((r.state, r.version))
    for walk in per_flow.values():
        assert [s for s, _ in walk] == list(TCP_WALK[: len(walk)])
        assert [v for _, v in walk] == list(range(1, len(walk) + 1))
        assert all(RANK[b] >= RANK[a] for (a, _), (b, _) in pairwise(walk))
    assert TTL_MS[FlowState.ESTABLISHED] == 432_000_000  # the kernel's 5 days


def test_redact() -> None:
    assert redact("redis://:secret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
