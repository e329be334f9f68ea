"""Secrets reach processes from a 0600 file or the environment, never the command line (issue 10,
finding 2): instances, masters and the CLI refuse a password or token in argv in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fwcluster import credentials
from fwcluster.credentials import CredentialError, has_password, read_secret, store_url, write_secret

URL = "redis://inst-fw1:s3cret-pw@198.18.255.1:6379/0"


def _run(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FWCLUSTER_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        check=False,
    )


def _one_line(p: subprocess.CompletedProcess[str], *words: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert "s3cret" not in p.stderr
    return lines[0]


def test_write_secret_is_0600_even_over_a_readable_file(tmp_path: Path) -> None:
    f = tmp_path / "url"
    f.write_text("old")
    f.chmod(0o644)
    write_secret(f, URL)
    assert f.stat().st_mode & 0o777 == 0o600
    assert read_secret(f, "--store-url-file") == URL


def test_a_readable_secret_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "url"
    f.write_text(URL + "\n")
    f.chmod(0o640)
    with pytest.raises(CredentialError, match=r"readable by others.*chmod 600"):
        read_secret(f, "--store-url-file")
    link = tmp_path / "link"
    link.symlink_to(f)
    with pytest.raises(CredentialError):
        read_secret(link, "--store-url-file")
    empty = write_secret(tmp_path / "empty", "")
    with pytest.raises(CredentialError, match="empty"):
        read_secret(empty, "--store-url-file")


def test_store_url_sources(tmp_path: Path) -> None:
    f = write_secret(tmp_path / "url", URL)
    assert store_url(None, f, {}) == URL
    assert store_url(None, None, {credentials.STORE_URL_ENV: URL}) == URL
    assert store_url("redis://198.18.255.1:6379/0", None, {}) == "redis://198.18.255.1:6379/0"
    assert store_url(None, None, {}) == ""
    with pytest.raises(CredentialError, match="command line"):
        store_url(URL, None, {})
    with pytest.raises(CredentialError, match="not both"):
        store_url("redis://h", f, {})
    with pytest.raises(CredentialError, match="99999") as err:
        store_url(None, None, {credentials.STORE_URL_ENV: "redis://:s3cret@h:99999/0"})
    assert "s3cret" not in str(err.value)
    assert has_password(URL) and has_password("redis://:pw@h") and not has_password("redis://user@h")


def _instance(tmp_path: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    if config is None:
        config = tmp_path / "empty.toml"
        config.write_text("")
    base = ["instance", "run", "--config", str(config), "--id", "fw1", "--run-dir", str(tmp_path)]
    return _run("fwcluster", *base, *args)


def _master(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "empty.toml"
    config.write_text("")
    (tmp_path / "steering.json").write_text("{}")
    base = ["master", "run", "--config", str(config), "--id", "m1", "--run-dir", str(tmp_path)]
    return _run("fwcluster", *base, *args)


def test_the_instance_refuses_a_password_on_its_command_line(tmp_path: Path) -> None:
    _one_line(_instance(tmp_path, "--store-url", URL), "--store-url-file")
    loose = tmp_path / "url"
    loose.write_text(URL)
    loose.chmod(0o644)
    _one_line(_instance(tmp_path, "--store-url-file", str(loose)), "chmod 600")
    bad = write_secret(tmp_path / "bad", "redis://:s3cret@h:99999/0")
    _one_line(_instance(tmp_path, "--store-url-file", str(bad)), "port")


def test_a_config_with_a_password_must_not_be_readable(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[store]\nurl = "{URL}"\n')
    cfg.chmod(0o644)
    _one_line(_instance(tmp_path, config=cfg), "store.url holds a password")


def test_the_master_takes_its_url_from_a_file_or_the_environment(tmp_path: Path) -> None:
    _one_line(_master(tmp_path, "--store-url", URL), "--store-url-file")
    _one_line(_master(tmp_path), "a store URL is needed")
    token = tmp_path / "token"
    token.write_text("t" * 32)
    token.chmod(0o644)
    f = write_secret(tmp_path / "url", "redis://127.0.0.1:1/0")
    p = _master(tmp_path, "--store-url-file", str(f), "--listen-api", "127.0.0.1:1")
    _one_line(p, "api_token_file")
    p = _master(
        tmp_path, "--store-url-file", str(f), "--listen-api", "127.0.0.1:1", "--api-token-file", str(token)
    )
    _one_line(p, "chmod 600")


def test_the_cli_refuses_a_token_on_its_command_line(tmp_path: Path) -> None:
    line = _one_line(_run("fwcluster", "--api", "http://127.0.0.1:1", "--token", "s3cret" * 4, "status"))
    assert "--token-file" in line and "FWCLUSTER_TOKEN" in line
    loose = tmp_path / "token"
    loose.write_text("s3cret" * 4)
    loose.chmod(0o604)
    _one_line(_run("fwcluster", "--api", "http://127.0.0.1:1", "--token-file", str(loose), "status"), "chmod")


def test_bench_store_takes_a_password_only_from_a_file(tmp_path: Path) -> None:
    line = _one_line(_run("fwcluster", "bench", "store", "--url", "redis://:s3cret@127.0.0.1:1/15"))
    assert "--url-file" in line
    loose = tmp_path / "url"
    loose.write_text("redis://:s3cret@127.0.0.1:1/15\n")
    loose.chmod(0o644)
    _one_line(_run("fwcluster", "bench", "store", "--url-file", str(loose)), "chmod")
