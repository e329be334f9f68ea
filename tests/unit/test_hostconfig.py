"""The [instance] and [master] sections (hostconfig.py) and the run commands' validation: every
mistake is one line and exit status 2, found before anything is started (no root needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fwcluster.config import ConfigError, load_config
from fwcluster.credentials import write_secret
from fwcluster.hostconfig import load_instance, load_master
from fwcluster.instance.metrics import ListenAddr
from fwcluster.testbed.rundir import load_testbed_config

URL = "redis://inst-fw1:s3cret-pw@198.18.255.1:6379/0"
TOKEN = "t0ken-" * 6


def _files(tmp_path: Path) -> dict[str, Path]:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    (run / "steering.json").write_text("{}")
    return {
        "run": run,
        "url": write_secret(tmp_path / "store-url", URL),
        "token": write_secret(tmp_path / "api.token", TOKEN),
    }


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fwcluster.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def _host_toml(f: dict[str, Path]) -> str:
    return f"""
[sync]
level = "established"

[instance]
id = "fw1"
queue = 3
run_dir = "{f["run"]}"
metrics = "198.18.255.11:9100"
store_url_file = "{f["url"]}"

[master]
id = "m1"
run_dir = "{f["run"]}"
api = "[2001:2:0:fff::1]:9301"
api_token_file = "{f["token"]}"
metrics = "198.18.255.1:9201"
store_url_file = "{f["url"]}"
"""


def test_one_file_serves_an_instance_and_a_master(tmp_path: Path) -> None:
    f = _files(tmp_path)
    path = _config(tmp_path, _host_toml(f))
    load_config(path)  # the cluster config accepts the sections
    config, inst = load_instance(path, {})
    assert config.sync.level.value == "established"
    assert (inst.id, inst.queue, inst.run_dir, inst.store_url) == ("fw1", 3, f["run"], URL)
    assert inst.metrics == ListenAddr("198.18.255.11", 9100)
    _, master = load_master(path, {})
    assert (master.id, master.api, master.api_token) == ("m1", ListenAddr("2001:2:0:fff::1", 9301), TOKEN)
    assert master.steering == f["run"] / "steering.json" and master.store_url == URL
    # flags override the file: a second instance of the same host
    _, second = load_instance(path, {"id": "fw2", "queue": 4, "metrics": None})
    assert (second.id, second.queue, second.metrics) == ("fw2", 4, inst.metrics)


BAD_INSTANCE: list[tuple[dict[str, Any], str]] = [
    ({"id": "fw 1"}, "instance.id"),
    ({"id": ""}, "instance.id"),
    ({"id": "x" * 33}, "instance.id"),
    ({"queue": 65536}, "instance.queue"),
    ({"queue": -1}, "instance.queue"),
    ({"queue": "1"}, "instance.queue"),
    ({"metrics": "198.18.255.11"}, "instance.metrics"),
    ({"metrics": "198.18.255.11:0"}, "instance.metrics"),
    ({"metrics": "2001:2::1:9100"}, "brackets"),
    ({"metrics": "nohost:9100"}, "instance.metrics"),
    ({"run_dir": "relative/run"}, "absolute path"),
    ({"store_url_file": "/nonexistent/url"}, "instance.store_url_file"),
    ({"colour": "blue"}, "unknown field 'instance.colour'"),
]


@pytest.mark.parametrize(("change", "words"), BAD_INSTANCE)
def test_a_bad_instance_field_is_one_line(tmp_path: Path, change: dict[str, Any], words: str) -> None:
    f = _files(tmp_path)
    path = _config(tmp_path, _host_toml(f))
    with pytest.raises(ConfigError, match=None) as err:
        load_instance(path, change)
    line = str(err.value)
    assert "\n" not in line and words in line and str(path) in line, line
    assert "s3cret" not in line


def test_secret_files_and_the_run_dir_are_checked(tmp_path: Path) -> None:
    f = _files(tmp_path)
    path = _config(tmp_path, _host_toml(f))
    f["url"].chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_instance(path, {})
    with pytest.raises(ConfigError, match="chmod 600"):
        load_master(path, {})
    f["url"].chmod(0o600)
    f["token"].chmod(0o640)
    with pytest.raises(ConfigError, match=r"master.api_token_file .*chmod 600"):
        load_master(path, {})
    write_secret(f["token"], "short")
    with pytest.raises(ConfigError, match="at least 16"):
        load_master(path, {})
    f["token"].unlink()
    with pytest.raises(ConfigError, match="No such file"):
        load_master(path, {})
    f["run"].chmod(0o777)
    with pytest.raises(ConfigError, match="writable by others"):
        load_instance(path, {})
    f["run"].chmod(0o700)
    write_secret(f["token"], TOKEN)
    (f["run"] / "steering.json").unlink()
    with pytest.raises(ConfigError, match=r"master\.steering"):
        load_master(path, {})


def test_a_master_needs_a_store_and_a_token_for_its_network_api(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("FWCLUSTER_STORE_URL", raising=False)
    monkeypatch.delenv("FWCLUSTER_TOKEN", raising=False)
    f = _files(tmp_path)
    path = _config(tmp_path, f'[master]\nid = "m1"\nrun_dir = "{f["run"]}"\n')
    with pytest.raises(ConfigError, match="a store URL is needed"):
        load_master(path, {})
    with pytest.raises(ConfigError, match="api_token_file"):
        load_master(path, {"store_url_file": str(f["url"]), "api": "198.18.255.1:9301"})
    _, m = load_master(path, {"store_url_file": str(f["url"])})
    assert m.api is None and m.api_token is None
    with pytest.raises(ConfigError, match=r"master.id: missing"):
        load_master(_config(tmp_path, "[master]\n"), {"store_url_file": str(f["url"])})


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FWCLUSTER_")}
    return subprocess.run(
        [sys.executable, "-m", "fwcluster", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_the_run_commands_refuse_bad_input_in_one_line(tmp_path: Path) -> None:
    """Bad input ends before the kernel is touched: no root is needed to see these errors."""
    f = _files(tmp_path)
    good = _config(tmp_path, _host_toml(f))
    broken = tmp_path / "broken.toml"
    broken.write_text("[instance\n")
    cases = [
        (["instance", "run", "--config", str(tmp_path / "none.toml")], "no such config file"),
        (["instance", "run", "--config", str(broken)], "not valid TOML"),
        (["instance", "run", "--config", str(good), "--id", "bad/id"], "instance.id"),
        (["instance", "run", "--config", str(good), "--queue", "70000"], "instance.queue"),
        (["instance", "run", "--config", str(good), "--store-url", URL], "--store-url-file"),
        (["master", "run", "--config", str(good), "--api-token-file", str(tmp_path / "no")], "No such file"),
        (
            ["master", "run", "--config", str(good), "--steering", str(tmp_path / "no.json")],
            "master.steering",
        ),
    ]
    (tmp_path / "bad-steering.json").write_text(json.dumps({"kind": "symmetric"}))
    cases.append(
        (
            ["master", "run", "--config", str(good), "--steering", str(tmp_path / "bad-steering.json")],
            "steering",
        )
    )
    for argv, words in cases:
        p = _run(*argv)
        assert p.returncode == 2, (argv, p.returncode, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in p.stderr, (argv, p.stderr)
        assert lines[0].startswith(f"fwcluster {argv[0]} run: ") and words in lines[0], lines[0]
        assert "s3cret" not in p.stderr


def test_check_config_checks_the_sections_whole(tmp_path: Path) -> None:
    f = _files(tmp_path)
    good = _config(tmp_path, _host_toml(f))
    p = _run("check-config", str(good))
    assert p.returncode == 0, p.stderr
    assert "instance fw1: queue 3" in p.stdout and "master m1:" in p.stdout
    f["token"].chmod(0o644)
    p = _run("check-config", str(good))
    assert p.returncode == 2 and "chmod 600" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    typo = _config(tmp_path, "[instance]\nqueeu = 1\n")
    p = _run("check-config", str(typo))
    assert p.returncode == 2 and "unknown field 'instance.queeu'" in p.stderr, p.stderr


def test_the_testbed_refuses_a_config_with_process_sections(tmp_path: Path) -> None:
    path = _config(tmp_path, '[instance]\nid = "fw1"\n')
    with pytest.raises(ConfigError, match=r"leave those sections out"):
        load_testbed_config(path)
    assert load_testbed_config(_config(tmp_path, '[sync]\nlevel = "full"\n')).sync.level.value == "full"
