"""The README stays true to the code, and the command line answers mistakes in one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fwcluster.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _fwcluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fwcluster", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_readme_config_example_is_valid(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.S)
    assert blocks, "README has no TOML example"
    for block in blocks:
        f = tmp_path / "example.toml"
        f.write_text(block)
        config = load_config(f)
        assert config.ruleset.rules


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    head = readme[: readme.index("## What the demo shows")]
    assert "make demo" in head and "make test" in head


def test_check_config_ok(tmp_path: Path) -> None:
    f = tmp_path / "ok.toml"
    f.write_text('[sync]\nlevel = "full"\n')
    p = _fwcluster("check-config", str(f))
    assert p.returncode == 0, p.stderr
    assert "ok" in p.stdout


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[sync]\nlevel = "most"\n', "sync.level"),
        ("[sync]\nspeed = 1\n", "sync.speed"),
        ('[[rules]]\naction = "accept"\ndport = 70000\n', "rules[0].dport"),
        ('[[rules]]\naction = "allow"\n', "rules[0].action"),
        ("[sync\n", "not valid TOML"),
        ('[conntrack]\nmax_flows = "many"\n', "conntrack.max_flows"),
    ],
)
def test_broken_config_is_one_line_exit_2(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    p = _fwcluster("check-config", str(f))
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert needle in lines[0]
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["bogus"],
        ["testbed", "up", "--instances", "0"],
        ["testbed", "up", "--instances", "many"],
        ["bench", "core", "--flows", "5"],
        ["status", "--colour"],
        ["instance", "pause", "fw1"],
        ["instance", "drain"],
        ["bench", "study", "--sizes", "6,9"],
        ["bench", "study", "--loads", "25,x"],
        ["bench", "failover", "--level", "most"],
        ["policy", "apply", "p.toml", "--wait", "--timeout", "0"],
        ["policy", "apply", "p.toml", "--timeout", "soon"],
    ],
)
def test_bad_arguments_are_one_line_exit_2(args: list[str]) -> None:
    p = _fwcluster(*args)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "error" in lines[0]


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    p = _fwcluster("check-config", str(tmp_path / "nope.toml"))
    assert p.returncode == 2
    assert "no such config file" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_help_lists_every_command() -> None:
    p = _fwcluster("--help")
    assert p.returncode == 0
    for cmd in ("testbed", "status", "scale", "instance", "check-config", "bench", "demo"):
        assert cmd in p.stdout


def test_bench_core_json_has_the_figures() -> None:
    p = _fwcluster("bench", "core", "--json", "--connections", "200", "--rounds", "1", "--flows", "1000")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["packets_per_second"] > 0 and doc["bytes_per_flow"] >= 0  # RSS moves in pages


def test_a_bad_api_url_is_one_line_exit_2() -> None:
    p = _fwcluster("--api", "ftp://198.18.255.1:9301", "instance", "drain", "fw1")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "http://ADDR:PORT" in p.stderr


def test_an_unreachable_api_is_one_line_exit_1() -> None:
    p = _fwcluster("--api", "/nonexistent/m1.api.sock", "scale", "2")
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "cannot reach the admin API" in p.stderr
