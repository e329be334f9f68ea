"""``fwcluster bench bulk``: bulk TCP throughput (iperf3, several parallel streams) through one
instance namespace, in every setup of one testbed in one run, interleaved round by round (the
order rotates), so drift on a shared machine spreads over all of them.

Setups: ``fwcluster`` (the instance inspects every packet, ``[datapath] fast_path = false``),
``fwcluster-fast`` (the same with the kernel fast path for established flows), ``kernel`` (the
kernel's own stateful firewall, nftables + conntrack) and ``direct`` (plain forwarding). An
fwcluster setup that needs another config restarts the instance with it (``testbed.reconfigure``).
Beside the throughput: the packets that reached user space (the instance's ``user_space_packets``
counter) and the instance's CPU time (``/proc/<pid>/stat``), both per GB received.

The iperf3 server runs in the server namespace for the whole run, each client in the client
namespace for ``seconds``; both are started and stopped by pid and bounded in time.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fwcluster.bench.procstat import cpu_seconds
from fwcluster.bench.rounds import interleaved
from fwcluster.config import DEFAULT_TOML
from fwcluster.instance.control import query
from fwcluster.testbed import down, reconfigure, set_mode, up

IPERF_PORT = 5201
BASELINE = "kernel"


@dataclass(frozen=True)
class Setup:
    """One way of filtering the instance namespace; ``fast_path`` is for the fwcluster mode."""

    name: str
    mode: str  # the testbed's filter mode: fwcluster | kernel | direct
    fast_path: bool = False

    @property
    def instance(self) -> bool:
        return self.mode == "fwcluster"


SETUPS = (
    Setup("fwcluster", "fwcluster", fast_path=False),
    Setup("fwcluster-fast", "fwcluster", fast_path=True),
    Setup("kernel", "kernel"),
    Setup("direct", "direct"),
)


class BulkError(Exception):
    """Something the bench cannot do here (one line for the command line)."""


def config_text(fast_path: bool) -> str:
    """One instance with nothing to share with and nothing watching it; the built-in rules plus
    iperf3's port (its control and data connections)."""
    rules = DEFAULT_TOML[DEFAULT_TOML.index("[policy]") :]
    return (
        '[sync]\nlevel = "none"\n[store]\nbackend = "memory"\n[cluster]\nmasters = 0\n'
        f"[datapath]\nfast_path = {'true' if fast_path else 'false'}\n"
        f"{rules}\n"
        '[[rules]]\naction = "accept"\nproto = "tcp"\n'
        f'dst = ["198.18.0.0/15", "2001:2::/48"]\ndport = {IPERF_PORT}\ncomment = "iperf3"\n'
    )


def iperf3_path() -> str:
    path = shutil.which("iperf3")
    if path is None:
        raise BulkError("iperf3 is not installed (scripts/install-system.sh installs the Debian package)")
    return path


class Iperf3Server:
    """``iperf3 -s`` in the server namespace, stopped by its pid."""

    def __init__(self, netns: str, addr: str, log: Path) -> None:
        argv = ["ip", "netns", "exec", netns, iperf3_path(), "-s", "-B", addr, "-p", str(IPERF_PORT)]
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


def iperf3_client(netns: str, addr: str, seconds: int, streams: int) -> dict[str, Any]:
    """One iperf3 test from the client namespace; the figures of its JSON report."""
    argv = [
        "ip", "netns", "exec", netns, iperf3_path(), "-c", addr, "-p", str(IPERF_PORT),
        "-t", str(seconds), "-P", str(streams), "-J", "--connect-timeout", "3000",
    ]  # fmt: skip
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    except subprocess.TimeoutExpired:
        raise BulkError(f"iperf3 did not finish within {seconds + 30} s") from None
    try:
        doc = json.loads(p.stdout)
    except json.JSONDecodeError:
        raise BulkError(f"iperf3 gave no report: {(p.stderr or p.stdout).strip()[-200:]}") from None
    if "error" in doc:
        raise BulkError(f"iperf3: {doc['error']}")
    end = doc["end"]
    return {
        "bits_per_second": float(end["sum_received"]["bits_per_second"]),
        "bytes": int(end["sum_received"]["bytes"]),
        "seconds": float(end["sum_received"]["seconds"]),
        "retransmits": int(end["sum_sent"].get("retransmits", 0)),
    }


def _user_space_packets(control_socket: str) -> int:

    stats = query(control_socket, {"cmd": "stats"}, timeout=2.0)
    return int(stats.get("user_space_packets", stats.get("packets", 0)))


def measure(state: Any, setup: Setup, seconds: int, streams: int) -> dict[str, Any]:
    """One iperf3 test through the instance namespace as it is set up now."""
    inst = state.instances[0]
    before = (_user_space_packets(inst.control_socket), cpu_seconds(inst.pid)) if setup.instance else None
    res = iperf3_client(state.client_netns, state.server_addr, seconds, streams)
    if before is not None:
        gb = max(1, res["bytes"]) / 1e9
        res["user_space_packets"] = _user_space_packets(inst.control_socket) - before[0]
        res["user_space_packets_per_gb"] = round(res["user_space_packets"] / gb, 1)
        res["instance_cpu_s_per_gb"] = round((cpu_seconds(inst.pid) - before[1]) / gb, 4)
    return res


def run(seconds: int, streams: int, rounds: int, setups: tuple[Setup, ...] = SETUPS) -> dict[str, Any]:

    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in setups}
    with tempfile.TemporaryDirectory(prefix="fwcluster-bulk-") as tmp:
        configs = {}
        for fast in (False, True):
            configs[fast] = Path(tmp) / f"bulk-fast-{str(fast).lower()}.toml"
            configs[fast].write_text(config_text(fast))
        iperf3_path()  # fail before building anything
        down()
        state = up(1, str(configs[False]))
        running_fast = False
        server = Iperf3Server(state.server_netns, state.server_addr, Path(tmp) / "iperf3-server.log")
        try:
            for _, setup in interleaved("bench bulk", setups, rounds, lambda s: s.name):
                if setup.instance and setup.fast_path != running_fast:
                    state = reconfigure(configs[setup.fast_path])
                    running_fast = setup.fast_path
                state = set_mode(setup.mode)
                runs[setup.name].append(measure(state, setup, seconds, streams))
        finally:
            server.stop()
            down()
    return summarize_runs(runs, setups, seconds, streams, rounds)


def summarize_runs(
    runs: dict[str, list[dict[str, Any]]],
    setups: tuple[Setup, ...],
    seconds: int,
    streams: int,
    rounds: int,
) -> dict[str, Any]:
    """Medians over the rounds per setup, and each setup's median over the kernel's."""
    out: dict[str, Any] = {"seconds": seconds, "streams": streams, "rounds": rounds, "setups": {}}
    for setup in setups:
        rs = runs[setup.name]
        gbit = [r["bits_per_second"] / 1e9 for r in rs]
        row: dict[str, Any] = {
            "mode": setup.mode,
            "fast_path": setup.fast_path if setup.instance else None,
            "gbit_per_second": round(statistics.median(gbit), 3),
            "runs_gbit_per_second": [round(g, 3) for g in gbit],
            "retransmits": sum(r["retransmits"] for r in rs),
            "gbytes": round(sum(r["bytes"] for r in rs) / 1e9, 3),
        }
        if setup.instance:
            for key in ("user_space_packets_per_gb", "instance_cpu_s_per_gb"):
                row[key] = statistics.median(r[key] for r in rs)
                row[f"runs_{key}"] = [r[key] for r in rs]
            row["user_space_packets"] = sum(r["user_space_packets"] for r in rs)
        out["setups"][setup.name] = row
    base = out["setups"].get(BASELINE, {}).get("gbit_per_second")
    out["ratios"] = {
        f"{name}_over_kernel": round(row["gbit_per_second"] / base, 3) if base else None
        for name, row in out["setups"].items()
        if name != BASELINE
    }
    return out
