"""Hostile config files (issue 10, finding 9): each is one line naming the field and exit 2 from
``fwcluster check-config``, never a traceback, never a config that passes and breaks later."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fwcluster.config import (
    ECMP_MAX_BUCKETS,
    MIN_MISSES,
    ConfigError,
    check_store_url,
    load_config,
    parse_config,
)
from fwcluster.steering.ecmp import MAX_BUCKETS as ECMP_DRIVER_MAX

# (file text, what the one line must name)
HOSTILE: dict[str, tuple[str, list[str]]] = {
    "900-deep arrays": ("x = " + "[" * 900 + "]" * 900 + "\n", ["not valid TOML", "nested too deeply"]),
    "900-deep inline tables": ("x = " + "{a = " * 900 + "1" + "}" * 900 + "\n", ["nested too deeply"]),
    "store port 99999": ('[store]\nurl = "redis://:pw@198.18.255.1:99999/0"\n', ["store.url", "99999"]),
    "store port 0": ('[store]\nurl = "redis://198.18.255.1:0/0"\n', ["store.url", "1..65535"]),
    "store port not a number": ('[store]\nurl = "redis://h:+1/0"\n', ["store.url", "port"]),
    "store url with no host": ('[store]\nurl = "redis://:pw@:6379/0"\n', ["store.url", "no host"]),
    "store host not a name": ('[store]\nurl = "redis://a_b!:6379/0"\n', ["store.url", "DNS name"]),
    "store host a bad IPv4": ('[store]\nurl = "redis://300.1.2.3:6379/0"\n', ["store.url", "IP address"]),
    "store IPv6 unbracketed": ('[store]\nurl = "redis://2001:2::1:6379/0"\n', ["store.url", "brackets"]),
    "store IPv6 with a zone": (
        '[store]\nurl = "redis://[fe80::1%25eth0]:6379/0"\n',
        ["store.url", "zone"],
    ),
    "store database not a number": ('[store]\nurl = "redis://h:6379/x"\n', ["store.url", "database"]),
    "store url with a query": ('[store]\nurl = "redis://h:6379/0?db=3"\n', ["store.url", "query"]),
    "store url with spaces": ('[store]\nurl = "redis://h :6379/0"\n', ["store.url", "spaces"]),
    "store unix without a path": ('[store]\nurl = "unix://"\n', ["store.url", "socket path"]),
    "store bad scheme": ('[store]\nurl = "http://h:6379"\n', ["store.url", "redis://"]),
    "store url not a string": ("[store]\nurl = 5\n", ["store.url", "string"]),
    "ecmp with 4096 buckets": (
        '[steering]\nkind = "ecmp"\nbuckets = 4096\n',
        ["steering.buckets", f"1..{ECMP_MAX_BUCKETS}"],
    ),
    "ecmp with 121 buckets": ('[steering]\nkind = "ecmp"\nbuckets = 121\n', ["steering.buckets", "1..120"]),
    "symmetric with 4097 buckets": ("[steering]\nbuckets = 4097\n", ["steering.buckets", "1..4096"]),
    "a timeout of 1e-9 s": ("[conntrack.timeouts]\ntcp_established = 1e-9\n", ["tcp_established", "0.001"]),
    "a timeout of 0.0009 s": ("[conntrack.timeouts]\nudp = 0.0009\n", ["conntrack.timeouts.udp", "0.001"]),
    "misses = 1": ("[cluster]\nmisses = 1\n", ["cluster.misses", f"{MIN_MISSES}..100"]),
    "misses = 0": ("[cluster]\nmisses = 0\n", ["cluster.misses"]),
    "a source with a zone id": (
        '[[rules]]\naction = "drop"\nsrc = "fe80::1%eth0"\n',
        ["rules[0].src", "zone"],
    ),
    "a network with a zone id": (
        '[[rules]]\naction = "drop"\ndst = ["2001:2::/48", "fe80::%lo/64"]\n',
        ["rules[0].dst", "zone"],
    ),
}


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fwcluster", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("text", "needles"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_files_are_one_line_and_exit_2(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = tmp_path / "hostile.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    for needle in needles:
        assert needle in message, (needle, message)
    p = _check_config(path)
    assert (p.returncode, p.stdout) == (2, ""), p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("fwcluster: config error: ")


def test_a_store_url_error_never_repeats_the_password(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[store]\nurl = "redis://:hunter2-secret@198.18.255.1:99999/0"\n')
    p = _check_config(path)
    assert p.returncode == 2 and "hunter2" not in p.stderr, p.stderr


@pytest.mark.parametrize(
    "url",
    [
        "redis://198.18.255.1",
        "redis://:pw@198.18.255.1:6379/0",
        "redis://inst-fw1:pw%2Fx@198.18.255.1:6379/15",
        "rediss://store.example.net:6380/",
        "redis://[2001:2:0:fff::1]:6379/0",
        "redis://localhost:65535",
        "unix:///run/redis/redis.sock",
        "unix://:pw@/run/redis/redis.sock",
    ],
)
def test_good_store_urls_pass(url: str) -> None:
    check_store_url(url)
    c = parse_config(tomllib.loads(f'[store]\nurl = "{url}"\n'), "c.toml")
    assert c.store.url == url


def test_the_limits_that_stay_allowed() -> None:
    text = '[steering]\nkind = "ecmp"\nbuckets = 120\n[cluster]\nmisses = 2\n'
    text += "[conntrack.timeouts]\nudp = 0.001\n"
    c = parse_config(tomllib.loads(text), "c.toml")
    assert (c.steering.buckets, c.cluster.misses, c.conntrack.timeouts.udp) == (120, 2, 0.001)
    deep = "x = " + "[" * 50 + "]" * 50
    with pytest.raises(ConfigError, match="unknown field 'x'"):  # parses; only the field is wrong
        parse_config(tomllib.loads(deep), "c.toml")


def test_the_ecmp_limit_is_the_driver_s() -> None:
    assert ECMP_MAX_BUCKETS == ECMP_DRIVER_MAX
