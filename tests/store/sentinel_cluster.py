"""A real Sentinel-managed Redis for the store tests: a primary, two replicas and three sentinels
on 127.0.0.1 (free ports), one password for all (``requirepass``/``masterauth`` on the data
nodes, ``requirepass``/``auth-pass``/``sentinel-pass`` on the sentinels), in 0600 configs in a
0700 temporary dir: no password on a command line. Every process is killed on the way out,
whatever happened (each by its pid); ``kill_primary`` SIGKILLs the primary of the moment.
The sentinel timings are the testbed's (testbed/store.py).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from fwcluster.bench.store import free_port
from fwcluster.credentials import write_secret
from fwcluster.storeurl import sentinel_url
from fwcluster.testbed.store import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS

SERVICE = "svc"
HOST = "127.0.0.1"


@dataclass
class Cluster:
    workdir: Path
    password: str
    data_ports: list[int]
    sentinel_ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return sentinel_url([(HOST, p) for p in self.sentinel_ports], SERVICE, None, self.password, 0)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host=HOST, port=port, password=self.password, socket_timeout=2.0)

    def node_url(self, port: int) -> str:
        return f"redis://:{self.password}@{HOST}:{port}/0"

    def primary_port(self) -> int | None:
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError, OSError):
                r = self.node(port)
                try:
                    addr = r.sentinel_get_master_addr_by_name(SERVICE)
                finally:
                    r.close()
                if addr:
                    return int(addr[1])
        return None

    def ready(self) -> bool:
        primary = self.primary_port()
        if primary is None:
            return False
        r = self.node(primary)
        try:
            info = r.info("replication")
        finally:
            r.close()
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        if info.get("role") != "master" or sum(v.get("state") == "online" for v in online) < 2:
            return False
        for port in self.sentinel_ports:
            s = self.node(port)
            try:
                view = s.sentinel_master(SERVICE)
            finally:
                s.close()
            if int(view["num-other-sentinels"]) < 2 or int(view["num-slaves"]) < 2:
                return False
        return True

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError, KeyError):
                if self.ready():
                    return
            time.sleep(0.1)
        raise AssertionError("the sentinels never became ready")

    def kill_primary(self) -> int:
        """SIGKILL the primary (once a failover can happen); its port."""
        self.wait_ready()
        port = self.primary_port()
        assert port is not None
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        return port

    def wait_new_primary(self, old: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.primary_port()
            if port is not None and port != old:
                return port
            time.sleep(0.05)
        raise AssertionError("no failover within the bound")


def _start(binary: str, conf: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [binary, str(conf)], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, umask=0o077
        )


def _answers(port: int, password: str) -> bool:
    r = redis.Redis(host=HOST, port=port, password=password, socket_timeout=0.5)
    try:
        return bool(r.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        r.close()


@contextlib.contextmanager
def sentinel_cluster() -> Iterator[Cluster]:
    if shutil.which("redis-sentinel") is None:
        pytest.skip("redis-sentinel not installed (scripts/install-system.sh)")
    workdir = Path(tempfile.mkdtemp(prefix="fwc-sentinel-"))
    cluster = Cluster(workdir, secrets.token_hex(16), [free_port() for _ in range(3)], [])
    cluster.sentinel_ports = [free_port() for _ in range(3)]
    pw = cluster.password
    try:
        primary = cluster.data_ports[0]
        for port in cluster.data_ports:
            conf = workdir / f"redis-{port}.conf"
            text = (
                f'bind {HOST}\nport {port}\nsave ""\nappendonly no\ndaemonize no\n'
                f"dir {workdir}\ndbfilename {port}.rdb\nrequirepass {pw}\nmasterauth {pw}\n"
                "repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n"
            )
            if port != primary:
                text += f"replicaof {HOST} {primary}\n"
            write_secret(conf, text)
            cluster.procs[port] = _start("redis-server", conf, workdir / f"redis-{port}.log")
        for port in cluster.sentinel_ports:
            conf = workdir / f"sentinel-{port}.conf"
            write_secret(
                conf,
                f"bind {HOST}\nport {port}\ndaemonize no\ndir {workdir}\nrequirepass {pw}\n"
                f"sentinel sentinel-pass {pw}\n"
                f"sentinel monitor {SERVICE} {HOST} {primary} 2\nsentinel auth-pass {SERVICE} {pw}\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n",
            )
            cluster.procs[port] = _start("redis-sentinel", conf, workdir / f"sentinel-{port}.log")
        deadline = time.monotonic() + 15
        while not all(_answers(p, pw) for p in cluster.procs):
            assert time.monotonic() < deadline, "the store's nodes did not start"
            time.sleep(0.05)
        cluster.wait_ready()
        yield cluster
    finally:
        for proc in cluster.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
