"""``fwcluster bench store``: what one published state change costs against a real redis-server.

Four configurations, side by side in one run: access ``dirty`` or ``clean`` (blind SET + XADD, or
the server-side conditional write) times confirm ``async`` or ``sync``, modelled the way the shared
state table uses them:

- ``async``: changes leave in pipelined batches (``batch`` per round trip) and nobody waits per
  change; the cost of one change is the batch's round-trip time divided by its size;
- ``sync``: every change is written and awaited on its own before the next (the latency a held
  packet sees).

Every change is a realistic TCP flow write: a 13-byte IPv4 flow key, the flow walking SYN_SENT ->
SYN_RECV -> ESTABLISHED -> FIN_WAIT -> CLOSE_WAIT -> LAST_ACK -> TIME_WAIT with its version counting
up and the kernel's timeout of each state as the TTL. Configurations are interleaved in rounds, in a
rotating order, on a cleared store each time, so drift on a noisy machine hits them all alike.

By default the bench starts its own redis-server on 127.0.0.1 (free port, no persistence, random
password) and always stops it; :func:`redis_server` is the same launcher the store tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from fwcluster.bench.stats import percentile
from fwcluster.core.packet import KEY4
from fwcluster.core.states import FlowState
from fwcluster.core.timeouts import Timeouts
from fwcluster.credentials import write_secret
from fwcluster.statetable.discovery import async_client
from fwcluster.statetable.record import FlowRecord
from fwcluster.statetable.redis_store import RedisStore
from fwcluster.statetable.store import Store, StoreError

BATCH = 64
ACCESS = ("dirty", "clean")
CONFIRM = ("async", "sync")
CONFIGURATIONS = tuple((a, c) for a in ACCESS for c in CONFIRM)

S = FlowState
# One TCP connection's life as conntrack sees it (client closes first).
TCP_WALK = (S.SYN_SENT, S.SYN_RECV, S.ESTABLISHED, S.FIN_WAIT, S.CLOSE_WAIT, S.LAST_ACK, S.TIME_WAIT)
_T = Timeouts()
TTL_MS: dict[FlowState, int] = {
    S.SYN_SENT: int(_T.tcp_syn_sent * 1000),
    S.SYN_RECV: int(_T.tcp_syn_recv * 1000),
    S.ESTABLISHED: int(_T.tcp_established * 1000),
    S.FIN_WAIT: int(_T.tcp_fin_wait * 1000),
    S.CLOSE_WAIT: int(_T.tcp_close_wait * 1000),
    S.LAST_ACK: int(_T.tcp_last_ack * 1000),
    S.TIME_WAIT: int(_T.tcp_time_wait * 1000),
}
_CLIENT0 = int(IPv4Address("198.18.0.2"))
_SERVER = IPv4Address("198.19.0.2").packed
PROTO_TCP = 6
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ServerStartError(RuntimeError):
    """A local redis-server could not be started (missing, or did not answer in time)."""


# ---------------------------------------------------------------------------------------- server
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(port: int, password: str) -> bool:
    client = redis.Redis(
        host="127.0.0.1", port=port, password=password, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


@contextlib.contextmanager
def redis_server(
    binary: str = "redis-server", start_timeout: float = 10.0, extra: dict[str, str] | None = None
) -> Iterator[str]:
    """Run a private redis-server on 127.0.0.1 and yield its URL (with its random password).

    A free port is picked by binding to port 0; if another process grabs it first, the start is
    retried on a new port (3 attempts). No persistence (``save ""``, no AOF). The options
    (``extra`` too) go into a config file (0600, in a 0700 temporary dir), so the password is on
    no command line. The server is killed and its directory removed on the way out, whatever
    happened.
    """
    path = shutil.which(binary)
    if path is None:
        raise ServerStartError(f"{binary} not found (install redis, e.g. `make deps`)")
    workdir = Path(tempfile.mkdtemp(prefix="fwc-redis-"))
    proc: subprocess.Popen[bytes] | None = None
    log = workdir / "redis.log"
    try:
        for _attempt in range(3):
            port, password = free_port(), secrets.token_hex(16)
            options = {
                "bind": "127.0.0.1",
                "port": str(port),
                "save": "",
                "appendonly": "no",
                "requirepass": password,
                "dir": str(workdir),
                "daemonize": "no",
                "logfile": "",
                **(extra or {}),
            }
            conf = workdir / "redis.conf"
            write_secret(conf, "".join(f"{name} {_conf_value(value)}\n" for name, value in options.items()))
            argv = [path, str(conf)]
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent(),  # noqa: PLW1509 - a bare prctl call, no locks
                )
            deadline = time.monotonic() + start_timeout
            while proc.poll() is None and time.monotonic() < deadline:
                if _answers(port, password):
                    yield f"redis://:{password}@127.0.0.1:{port}/0"
                    return
                time.sleep(0.05)
            _stop(proc)  # exited (port taken?) or never answered: try again on another port
            proc = None
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise ServerStartError(f"redis-server did not start: {' | '.join(tail) or 'no output'}")
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _conf_value(value: str) -> str:
    """A redis.conf value as the command line gives it: words as they are (``replicaof HOST PORT``),
    an empty one quoted."""
    return value if value.strip() else '""'


def _die_with_parent() -> Callable[[], None] | None:
    """For the child: SIGKILL when this process's thread dies, so even a killed run (SIGKILL,
    no ``finally``) leaves no server behind. libc is looked up here, before the fork."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return child


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL is not ignored; bounded anyway
        proc.wait(timeout=10)


def redact(url: str) -> str:
    """The URL without its password, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# -------------------------------------------------------------------------------------- workload
def flow_key(i: int) -> bytes:
    """The core's key of connection ``i``: client 198.18.x.y:port -> server 198.19.0.2:80 (lo first)."""
    client = IPv4Address(_CLIENT0 + i // 60_000).packed
    return KEY4.pack(PROTO_TCP, client, 1024 + i % 60_000, _SERVER, 80)


def tcp_changes(n: int, writer: str = "bench", window: int = BATCH) -> list[tuple[FlowRecord, int]]:
    """``n`` state changes of TCP connections, ``window`` of them open at a time.

    Within a window every connection takes its next step before any takes the one after, as
    concurrent connections do; each (record, ttl_ms) is what the state table publishes.
    """
    out: list[tuple[FlowRecord, int]] = []
    first = 0
    while len(out) < n:
        for version, state in enumerate(TCP_WALK, start=1):
            for i in range(first, first + window):
                out.append((FlowRecord(flow_key(i), state, True, version, PROTO_TCP, writer), TTL_MS[state]))
        first += window
    return out[:n]


# ----------------------------------------------------------------------------------- measurement
@dataclass(frozen=True, slots=True)
class ConfigResult:
    access: str
    confirm: str
    changes: int
    ns_per_change_p50: int
    ns_per_change_p99: int
    seconds: float  # time spent writing, summed over rounds

    def as_dict(self) -> dict[str, Any]:
        return {
            "access": self.access,
            "confirm": self.confirm,
            "changes": self.changes,
            "us_per_change_p50": round(self.ns_per_change_p50 / 1000, 1),
            "us_per_change_p99": round(self.ns_per_change_p99 / 1000, 1),
            "changes_per_second": round(self.changes / self.seconds) if self.seconds > 0 else 0,
        }


@dataclass(frozen=True, slots=True)
class StoreBenchResult:
    configurations: list[ConfigResult]
    redis_version: str
    rounds: int
    changes_per_round: int
    batch: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "configurations": [c.as_dict() for c in self.configurations],
            "redis_version": self.redis_version,
            "rounds": self.rounds,
            "changes_per_round": self.changes_per_round,
            "batch": self.batch,
        }


async def _write_all(
    store: Store, changes: list[tuple[FlowRecord, int]], clean: bool, confirm: str, batch: int
) -> tuple[list[int], int]:
    """Write every change; returns (ns per change samples, total ns)."""
    samples: list[int] = []
    total = 0
    refused = 0
    step = batch if confirm == "async" else 1
    clock = time.perf_counter_ns
    for i in range(0, len(changes), step):
        chunk = changes[i : i + step]
        t0 = clock()
        results = await store.write(chunk, clean)
        dt = clock() - t0
        total += dt
        samples.append(dt // len(chunk))
        refused += sum(not r.applied for r in results)
    if refused:  # the workload walks every flow forward: a refusal means the bench is wrong
        raise RuntimeError(f"{refused} clean writes were refused; the store was not cleared?")
    return samples, total


async def measure(url: str, changes: int, rounds: int, batch: int = BATCH) -> StoreBenchResult:
    info_client: Any = async_client(url, 5.0)  # a redis+sentinel:// URL: the primary
    store = RedisStore(url, timeout=5.0)
    try:
        try:
            info = await info_client.info("server")
        except (redis.RedisError, OSError) as e:
            raise StoreError(str(e)) from e
        version = str(info.get("redis_version", "unknown"))
        work = tcp_changes(changes)
        samples: dict[tuple[str, str], list[int]] = {c: [] for c in CONFIGURATIONS}
        spent: dict[tuple[str, str], int] = dict.fromkeys(CONFIGURATIONS, 0)
        warmup = work[: min(len(work), 4 * batch)]
        for access, confirm in CONFIGURATIONS:  # connections, script cache, allocator
            await store.clear()
            await _write_all(store, warmup, access == "clean", confirm, batch)
        for r in range(rounds):
            order = CONFIGURATIONS[r % 4 :] + CONFIGURATIONS[: r % 4]
            for access, confirm in order:
                await store.clear()
                got, ns = await _write_all(store, work, access == "clean", confirm, batch)
                samples[access, confirm] += got
                spent[access, confirm] += ns
        await store.clear()
    finally:
        await store.close()
        await info_client.aclose()
    out = []
    for access, confirm in CONFIGURATIONS:
        s = sorted(samples[access, confirm])
        out.append(
            ConfigResult(
                access,
                confirm,
                changes * rounds,
                percentile(s, 50),
                percentile(s, 99),
                spent[access, confirm] / 1e9,
            )
        )
    return StoreBenchResult(out, version, rounds, changes, batch)


def run(url: str | None, changes: int = 2000, rounds: int = 5, batch: int = BATCH) -> StoreBenchResult:
    """Measure against ``url``, or against a redis-server started (and stopped) for the run."""
    if url is not None:
        return asyncio.run(measure(url, changes, rounds, batch))
    with redis_server() as local:
        return asyncio.run(measure(local, changes, rounds, batch))
