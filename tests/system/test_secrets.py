"""Secrets stay out of sight on the real testbed (issue 10, finding 2): no process's command line
holds the store password or the admin API token, while the testbed starts, scales out and in,
restarts an instance and runs redis-cli; the run dir is 0700 and every file in it holding a secret
0600; nginx still serves from a docroot that holds none."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from netns_helpers import Builder, curl, url
from test_shared_state import config

from fwcluster.testbed import TestbedState, load_state, restart_instance, store_client_argv, store_password
from fwcluster.testbed.masters import TOKEN_FILE, api_token, api_url
from fwcluster.testbed.processes import all_pids
from fwcluster.testbed.rundir import STORE_URL_SUFFIX, www_dir

pytestmark = pytest.mark.netns


def secrets_of(state: TestbedState) -> set[str]:
    """Every password and token of the testbed: the store's admin password, each process's store
    password (from its URL file), the admin API token."""
    run = Path(state.run_dir)
    found = {store_password(state), api_token(run)}
    found |= {f.read_text().strip() for f in run.glob("*.pass")}  # master, replication, sentinel users
    for f in run.glob(f"*{STORE_URL_SUFFIX}"):
        password = urlsplit(f.read_text().strip()).password
        assert password, f
        found.add(unquote(password))
    return found


class CmdlineWatch:
    """Read /proc/*/cmdline of every process, over and over, in a thread; remember any that holds
    one of the secrets (each process once)."""

    def __init__(self, secrets: set[str]) -> None:
        self.secrets = {s.encode() for s in secrets}
        self.leaks: dict[int, str] = {}
        self.scans = 0
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, secrets: set[str]) -> None:
        self.secrets |= {s.encode() for s in secrets}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.scan()
            time.sleep(0.005)

    def scan(self) -> None:
        for pid in all_pids():
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            self.seen.add(raw.replace(b"\0", b" ").decode(errors="replace")[:200])
            if any(s in raw for s in self.secrets):
                self.leaks[pid] = raw.replace(b"\0", b" ").decode(errors="replace")
        self.scans += 1

    def __enter__(self) -> CmdlineWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _admin_cli(state: TestbedState, *args: str) -> subprocess.CompletedProcess[str]:
    """``fwcluster --api ... --token-file ... ARGS`` from fwc-mgmt, to whichever master leads."""
    token_file = Path(state.run_dir) / TOKEN_FILE
    fwcluster = str(Path(sys.executable).with_name("fwcluster"))
    for m in state.masters:
        argv = ["ip", "netns", "exec", state.mgmt_netns, fwcluster, "--api", api_url(m.id)]
        argv += ["--token-file", str(token_file), *args]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if p.returncode == 0:
            return p
    raise AssertionError(f"no master did {args}: {p.stderr}")


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_no_secret_on_any_command_line_or_in_a_readable_file(testbed: Builder, tmp_path: Path) -> None:
    cfg = config(tmp_path, "established", "dirty", "async")
    with CmdlineWatch(set()) as watch:  # from the first process on: secrets are added as they exist
        state = testbed(2, cfg, start_instances=True)
        run = Path(state.run_dir)
        watch.add(secrets_of(state))
        watch.scan()
        # redis-cli, a blocking command so that it is surely seen running
        blpop = subprocess.Popen(
            [*store_client_argv(state=state), "BLPOP", "fwc:test:nothing", "1"], stdout=subprocess.DEVNULL
        )
        time.sleep(0.3)
        watch.scan()
        assert blpop.wait(10) == 0
        restart_instance("fw1")
        # Scale out and in through the leader: the provisioning agent's worker builds fw3, which
        # gets a URL file of its own.
        for n in (3, 2):
            assert _admin_cli(state, "scale", str(n)).returncode == 0
            watch.add(secrets_of(state))
        # A removed instance's store user is revoked and its URL file gone: the users left are
        # those of the instances the testbed still has.
        deadline = time.monotonic() + 30
        while True:
            users = subprocess.run(
                [*store_client_argv(state=state), "ACL", "USERS"],
                capture_output=True, text=True, timeout=10, check=False,
            ).stdout.split()  # fmt: skip
            have = {i.id for i in load_state().instances}
            if {u.removeprefix("inst-") for u in users if u.startswith("inst-")} == have:
                break
            assert time.monotonic() < deadline, (users, have)
            time.sleep(0.5)
        assert {f.name.removesuffix(STORE_URL_SUFFIX) for f in run.glob(f"fw*{STORE_URL_SUFFIX}")} == have
    assert watch.scans > 50
    for name in (
        "redis-server",
        "redis-sentinel",
        "nginx: worker",
        "redis-cli",
        "fwcluster instance run",
        "fwcluster master run",
    ):
        assert any(name in s for s in watch.seen), (name, sorted(watch.seen))
    assert any("fwcluster.testbed.agent" in s and "--worker" in s for s in watch.seen)
    assert not watch.leaks, watch.leaks

    # Files: the run dir is 0700, every file in it that holds a secret 0600.
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert _private(run / "testbed.json") and _private(run / "config.toml")
    secrets = [s.encode() for s in secrets_of(state)]
    holders = []
    for f in run.rglob("*"):
        if f.is_file() and not f.is_symlink() and any(s in f.read_bytes() for s in secrets):
            holders.append(f.name)
            assert _private(f), f
    assert "testbed.json" in holders and TOKEN_FILE in holders
    # nginx's workers read their docroot beside the run dir; it holds no secret.
    www = www_dir(run)
    assert stat.S_IMODE(www.stat().st_mode) == 0o755
    for f in www.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert not any(s in data for s in secrets), f
    assert curl(state.client_netns, url(state, 4)).body == b"x"


def test_the_cli_takes_the_token_from_a_file_or_the_environment_never_argv(
    testbed: Builder, tmp_path: Path
) -> None:
    state = testbed(1, config(tmp_path, "established", "dirty", "async"), start_instances=True)
    run = Path(state.run_dir)
    fwcluster = str(Path(sys.executable).with_name("fwcluster"))
    env = {k: v for k, v in os.environ.items() if k != "FWCLUSTER_TOKEN"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = ["ip", "netns", "exec", state.mgmt_netns, fwcluster, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)

    oks = [cli("--api", api_url(m), "--token-file", str(run / TOKEN_FILE), "status") for m in ("m1", "m2")]
    assert all(p.returncode == 0 for p in oks), [p.stderr for p in oks]
    p = cli("--api", api_url("m1"), "--token", api_token(run), "status")
    assert p.returncode == 2 and "--token-file" in p.stderr and api_token(run) not in p.stderr
    loose = tmp_path / "token"
    loose.write_text(api_token(run))
    loose.chmod(0o644)
    p = cli("--api", api_url("m1"), "--token-file", str(loose), "status")
    assert p.returncode == 2 and "chmod 600" in p.stderr, p.stderr
