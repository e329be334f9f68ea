"""The testbed's own redis in fwc-mgmt: reachable from the instances' namespaces, from nowhere else."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from netns_helpers import Builder

from fwcluster.cli.status_cmd import collect
from fwcluster.statetable.discovery import sync_client
from fwcluster.steering.netns import inside
from fwcluster.testbed import (
    TestbedError,
    load_state,
    restart_instance,
    store_client_argv,
    store_password,
    store_ping,
    store_start,
    store_stop,
)
from fwcluster.testbed.processes import alive, pids_in_netns

pytestmark = pytest.mark.netns


def _cli(netns: str, *command: str) -> subprocess.CompletedProcess[str]:
    argv = [*store_client_argv(netns), *command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)


def test_redis_runs_in_mgmt_with_a_password_and_answers_the_instances(testbed: Builder) -> None:
    state = testbed(2)
    password = store_password(state)
    assert len(password) >= 32
    assert state.store_backend == "redis"
    sentinels = ",".join(f"198.18.255.1:{p}" for p in (26379, 26380, 26381))
    assert state.store_url == f"redis+sentinel://admin:{password}@{sentinels}/fwc/0"
    assert state.store_ha == "sentinel" and len(state.store_nodes) == 6
    assert state.store_pid is not None and state.store_pid in pids_in_netns(state.mgmt_netns)
    assert all(n.pid in pids_in_netns(state.mgmt_netns) for n in state.store_nodes)
    run = Path(state.run_dir)
    for f in [*run.glob("redis*.conf"), *run.glob("sentinel*.conf"), *run.glob("*.acl"), *run.glob("*.pass")]:
        assert f.stat().st_mode & 0o077 == 0, f  # no password is world-readable
    # `fwcluster status --json`: which node is primary, with the pids the testbed runs
    doc = collect()["store"]
    assert doc["ha"] == "sentinel"
    roles = sorted(n["role"] for n in doc["nodes"])
    assert roles == ["primary", "replica", "replica", "sentinel", "sentinel", "sentinel"]
    primary = next(n for n in doc["nodes"] if n["role"] == "primary")
    assert primary == {"addr": "198.18.255.1:6379", "pid": state.store_pid, "role": "primary"}
    secrets = [p.read_text().strip() for p in run.glob("*.pass")]
    for n in state.store_nodes:
        cmdline = Path(f"/proc/{n.pid}/cmdline").read_bytes().decode()
        assert not any(x in cmdline for x in secrets)  # none on a command line
    for inst in state.instances:
        assert _cli(inst.netns, "ping").stdout.strip() == "PONG"
    assert _cli(state.instances[0].netns, "set", "k", "v").stdout.strip() == "OK"
    assert _cli(state.instances[1].netns, "get", "k").stdout.strip() == "v"
    # without the password: refused
    bare = ["ip", "netns", "exec", "fwc-fw1", "redis-cli", "-h", state.mgmt_addr, "ping"]
    assert "NOAUTH" in subprocess.run(bare, capture_output=True, text=True, timeout=5, check=False).stdout
    # persistence is off
    assert _cli(state.mgmt_netns, "config", "get", "save").stdout.split() == ["save"]
    assert _cli(state.mgmt_netns, "config", "get", "appendonly").stdout.split() == ["appendonly", "no"]
    # bounded, and refusing writes rather than evicting flows
    assert _cli(state.mgmt_netns, "config", "get", "maxmemory").stdout.split() == [
        "maxmemory",
        str(256 << 20),
    ]
    policy = _cli(state.mgmt_netns, "config", "get", "maxmemory-policy").stdout.split()
    assert policy == ["maxmemory-policy", "noeviction"]


def test_ha_none_runs_one_server_without_sentinels(testbed: Builder, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[store]\nha = "none"\n')
    state = testbed(1, cfg)
    password = store_password(state)
    assert state.store_url == f"redis://admin:{password}@198.18.255.1:6379/0"
    assert (state.store_ha, state.store_nodes) == ("none", [])
    assert pids_in_netns(state.mgmt_netns) == [state.store_pid]
    assert _cli("fwc-fw1", "ping").stdout.strip() == "PONG"


def test_the_store_s_memory_bound_comes_from_the_config(testbed: Builder, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[store]\nmaxmemory_mb = 16\n")
    state = testbed(1, cfg)
    assert _cli(state.mgmt_netns, "config", "get", "maxmemory").stdout.split() == ["maxmemory", str(16 << 20)]
    # Past the bound a write is refused (OOM), nothing evicted: what the instance counts.
    replies = [
        _cli(state.mgmt_netns, "setrange", f"fwc:test:{i}", str((1 << 20) - 1), "x") for i in range(24)
    ]
    out = [r.stdout.strip() for r in replies]
    assert out[0] == str(1 << 20) and any(r.startswith("OOM") for r in out), out
    assert _cli(state.mgmt_netns, "strlen", "fwc:test:0").stdout.strip() == str(1 << 20)  # not evicted


def test_client_and_server_cannot_reach_the_management_network(testbed: Builder) -> None:
    state = testbed(1)
    assert store_ping(state.instances[0].netns)
    for netns in (state.client_netns, state.server_netns):
        assert not store_ping(netns)
        ping = ["ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "1", state.mgmt_addr]
        assert subprocess.run(ping, capture_output=True, timeout=5, check=False).returncode != 0


def test_store_stop_and_start_keep_address_and_password(testbed: Builder) -> None:
    state = testbed(1)
    assert _cli("fwc-fw1", "set", "k", "v").stdout.strip() == "OK"
    old_pid = state.store_pid
    assert old_pid is not None
    stopped = store_stop()
    assert stopped.store_pid is None and not alive(old_pid)
    assert not store_ping("fwc-fw1")
    store_stop()  # idempotent
    started = store_start()
    assert started.store_pid is not None and started.store_pid != old_pid
    assert started.store_url == state.store_url
    assert store_ping("fwc-fw1")
    assert _cli("fwc-fw1", "get", "k").stdout.strip() == ""  # no persistence: it starts empty
    assert store_start().store_pid == started.store_pid  # idempotent


def test_a_configured_url_is_passed_through_and_no_redis_runs(testbed: Builder, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[store]\nurl = "redis://:secret@198.18.255.1:6380/2"\n')
    state = testbed(1, cfg)
    assert state.store_url == "redis://:secret@198.18.255.1:6380/2"
    assert state.store_pid is None and state.store_conf == ""
    assert pids_in_netns(state.mgmt_netns) == []
    with pytest.raises(TestbedError, match="no redis of its own"):
        store_stop()


def test_memory_backend_has_no_store(testbed: Builder, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[store]\nbackend = "memory"\n')
    state = testbed(1, cfg)
    assert (state.store_backend, state.store_url, state.store_pid) == ("memory", "", None)
    assert load_state() == state


def test_every_instance_and_master_has_a_user_of_its_own(testbed: Builder, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[sync]\nlevel = "established"\n')
    state = testbed(2, cfg, start_instances=True)
    run = Path(state.run_dir)
    urls = {f.name.split(".")[0]: f.read_text().strip() for f in run.glob("*.store-url")}
    assert sorted(urls) == ["fw1", "fw2", "m1", "m2"]
    assert [urlsplit(urls[k]).username for k in sorted(urls)] == ["inst-fw1", "inst-fw2", "master", "master"]
    users = _cli(state.mgmt_netns, "acl", "users").stdout.split()
    assert sorted(users) == ["admin", "default", "inst-fw1", "inst-fw2", "master", "repl", "sentinel"]
    assert "off" in _cli(state.mgmt_netns, "acl", "getuser", "default").stdout.split()
    # ACLs are not replicated: every node (replicas, sentinels) has every user
    for n in state.store_nodes:
        argv = [*store_client_argv(state.mgmt_netns)[:-1], str(n.port), "acl", "users"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False).stdout.split()
        assert {"inst-fw1", "inst-fw2", "master"} <= set(out), (n.port, out)
    with inside(state.mgmt_netns):
        fw1 = sync_client(urls["fw1"], 5)
        try:
            assert fw1.set("fwc:hb:fw1", "1:1", px=1000)
            for key in ("fwc:leader", "fwc:hb:fw2", "fwc:reg:fw2"):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    fw1.set(key, "1:1", px=1000)
        finally:
            fw1.close()
        m1 = sync_client(urls["m1"], 5)
        try:
            with pytest.raises(redis.exceptions.NoPermissionError):
                m1.set("fwc:f:x", "x")
        finally:
            m1.close()
    # A restarted store knows every user (its ACL file), a restarted instance gets a new password.
    store_stop()
    store_start()
    assert sorted(_cli(state.mgmt_netns, "acl", "users").stdout.split()) == sorted(users)
    restart_instance("fw1")
    assert (run / "fw1.store-url").read_text().strip() != urls["fw1"]
