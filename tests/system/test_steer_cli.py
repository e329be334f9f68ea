"""Steering by hand: ``fwcluster testbed steer`` and the testbed API behind it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from netns_helpers import Builder, curl, url

from fwcluster.testbed import TestbedError, steer_buckets, steer_move, steer_spread, steer_table

pytestmark = pytest.mark.netns


def _steer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fwcluster", "testbed", "steer", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _tables() -> dict[str, dict[str, str]]:
    p = _steer("--json")
    assert p.returncode == 0, p.stderr
    doc: dict[str, dict[str, str]] = json.loads(p.stdout)
    return doc


def test_not_up_is_one_line_exit_1() -> None:
    p = _steer("--show")
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == ["fwcluster: no testbed is up (run `fwcluster testbed up` first)"]


def test_show_move_bucket_spread(testbed: Builder) -> None:
    testbed(3)
    p = _steer("--show")
    assert p.returncode == 0, p.stderr
    assert "forward:" in p.stdout and "reverse:" in p.stdout
    assert "fw1 ( 22): 0 3 6" in p.stdout  # 64 buckets round-robin over 3

    p = _steer("--move", "fw1", "--to", "fw2,fw3")
    assert p.returncode == 0, p.stderr
    tables = _tables()
    for direction in ("forward", "reverse"):
        assert "fw1" not in tables[direction].values()
        assert tables[direction]["0"] == "fw2" and tables[direction]["3"] == "fw3"
        assert tables[direction]["1"] == "fw2" and tables[direction]["2"] == "fw3"  # untouched

    p = _steer("--bucket", "5", "--to", "fw1", "--direction", "reverse")
    assert p.returncode == 0, p.stderr
    tables = _tables()
    assert tables["reverse"]["5"] == "fw1" and tables["forward"]["5"] == "fw3"

    assert _steer("--spread").returncode == 0
    tables = _tables()
    assert tables["forward"] == tables["reverse"] == {str(b): f"fw{b % 3 + 1}" for b in range(64)}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--move", "fw9", "--to", "fw1"], "unknown instance 'fw9'"),
        (["--move", "fw1", "--to", "fw7"], "unknown instance 'fw7'"),
        (["--move", "fw1", "--to", ""], "target list (--to) is empty"),
        (["--move", "fw1", "--to", ","], "target list (--to) is empty"),
        (["--move", "fw1"], "need --to"),
        (["--bucket", "64", "--to", "fw1"], "bucket 64 is out of range 0..63"),
        (["--bucket", "-1", "--to", "fw1"], "out of range"),
        (["--bucket", "x", "--to", "fw1"], "not an integer"),
        (["--move", "fw1", "--to", "fw1"], "itself"),
        (["--move", "fw1", "--bucket", "1", "--to", "fw2"], "not allowed with"),
        (["--bucket", "1", "--to", "fw1", "--direction", "up"], "invalid choice"),
    ],
)
def test_mistakes_are_one_line_exit_2(testbed: Builder, args: list[str], needle: str) -> None:
    testbed(2)
    p = _steer(*args)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert needle in lines[0]


def test_api_moves_buckets_per_direction(testbed: Builder) -> None:
    state = testbed(2)
    moved = steer_move("fw2", ["fw1"], direction="forward")
    assert set(moved) == {"forward"} and len(moved["forward"]) == 32
    tables = steer_table()
    assert set(tables["forward"].values()) == {"fw1"}
    assert tables["reverse"] == {b: f"fw{b % 2 + 1}" for b in range(64)}
    # symmetric steering, directions now split: traffic still passes (direct mode, no instance)
    assert curl(state.client_netns, url(state, 4)).body == b"x"
    steer_buckets({0: "fw2", 1: "fw2"}, direction="both")
    tables = steer_table()
    assert tables["forward"][0] == tables["reverse"][0] == "fw2"
    assert tables["forward"][2] == "fw1"
    assert steer_spread() == {b: f"fw{b % 2 + 1}" for b in range(64)}
    with pytest.raises(TestbedError, match="unknown instance"):
        steer_move("fw1", ["fw3"])
    with pytest.raises(TestbedError, match="empty"):
        steer_move("fw1", [])
    with pytest.raises(TestbedError, match="out of range"):
        steer_buckets({64: "fw1"})
