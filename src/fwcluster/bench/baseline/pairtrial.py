"""``bench failover --baseline conntrackd``: fwcluster's SIGKILL trial through the pair operators
run today (the kernel's firewall, conntrackd in FTFW mode over a dedicated link, keepalived VRRP
with conntrack-tools' primary-backup.sh), in namespaces of its own (see ``pairnet``).

Per trial, a fresh pair: the same 20 rate-limited long downloads and the same steady stream of
short requests as fwcluster's ``sigkill`` trial (``bench.failover``), then node a, the master,
crashes. What "SIGKILL of the active node" means for a kernel firewall: the firewall is the
kernel, so killing a process stops nothing; the node must stop forwarding at once, as a crashed
or powered-off box does. So its links go down (no packet forwarded, no VRRP advert, no sync
message from that instant) and every process in it gets SIGKILL (keepalived cannot announce
priority 0, which would hand over at once; conntrackd cannot flush a last update). The backup
then has to notice the silence (3 x advert_int + skew), take the VIPs, and commit the state it
was sent into its kernel before the retransmissions that arrive are accepted.

b forwards nothing before the crash, so its first forwarded packet after it (tcpdump in b) is
the moment forwarding resumed (``forwarding_gap_ms``: the short requests keep a new connection
coming every few ms); ``long_download_gap_ms`` is the first packet of a long download it
forwards.

Measured per trial: the long downloads that arrived intact (SHA-256 of each body; the streams of
``bench/stream.py``, read at a steady rate for 5 s each, so all are in flight at the crash), the
short requests that failed, the forwarding gaps (above), the TCP stall (the longest silence on
any long download, kernel capture stamps in the client, from 0.5 s before the crash to 2 s
after it, as fwcluster's trial measures it) and the time from the crash until b's notify script
ran (``vrrp_takeover_ms``; with conntrackd, ``commit_ms`` for the script's four steps).
Variants: conntrackd at each advert interval, and keepalived alone (no state follows the VIPs)
at the shortest one, the control.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress

from fwcluster.bench.baseline import pairnet as net
from fwcluster.bench.capture import LiveCapture, Seen, first_of
from fwcluster.bench.datapath import SteadyLoad
from fwcluster.bench.failover import DOWNLOADS, STREAM, STREAM_CAPTURE, Streams, _config, _summary, stall_ms
from fwcluster.config import load_config
from fwcluster.core.rules import RuleSet
from fwcluster.testbed.server import make_docroot

ADVERT_INTS = (1.0, 0.1)  # keepalived's default, and the tuned interval operators use
# A short request's response is one data segment; its port may come again for a later one (the
# short requests open thousands of connections per second through the kernel), a long download
# has hundreds of segments.
LONG_FLOW_PACKETS = 20
DOWNLOAD_TIMEOUT = 40.0  # each stream gives up after 30 s (--timeout)


@dataclass(frozen=True)
class Variant:
    conntrackd: bool
    advert_int: float

    @property
    def name(self) -> str:
        kind = "conntrackd" if self.conntrackd else "keepalived-only"
        return f"{kind}/advert_int={self.advert_int:g}"


def variants(advert_ints: tuple[float, ...]) -> list[Variant]:
    """conntrackd at each interval, then the control (no conntrackd) at the shortest."""
    return [Variant(True, a) for a in advert_ints] + [Variant(False, min(advert_ints))]


@dataclass(frozen=True)
class _Ends:
    """What SteadyLoad needs to know of a setup."""

    client_netns: str
    server_addr: str


def _notified(log: Path, what: str) -> float:
    """The unix time of the last ``what`` line the node's notify script wrote, NaN if none."""
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return float("nan")
    times = [float(ln.split()[0]) for ln in lines if ln.endswith(what)]
    return times[-1] if times else float("nan")


def long_flows(seen: list[Seen], before: float) -> set[frozenset[str]]:
    """The long downloads among the connections seen before ``before``: those with many data
    segments. A short request (one data segment) is left out: its port may be reused by a new
    connection after the crash, which would pass for the old one resuming (a false early gap)
    or for a long silence of it (a false stall)."""
    count: dict[frozenset[str], int] = {}
    for s in seen:
        if s.t < before:
            key = frozenset((s.src, s.dst))
            count[key] = count.get(key, 0) + 1
    return {k for k, n in count.items() if n >= LONG_FLOW_PACKETS}


def trial(variant: Variant, ruleset: RuleSet, run_dir: Path, www: Path, digest: str) -> dict[str, float]:
    """One crash of the master of a fresh pair (see the module's doc)."""
    pair = net.Pair(run_dir, net.node_plans(run_dir, variant.advert_int, variant.conntrackd))
    try:
        net.build_network(ruleset)
        pair.pids.append(net.start_nginx(run_dir, www, www / "www"))
        pair.start_daemons()
        # The same streams as fwcluster's trial (bench/stream.py: a steady rate for 5 s each, on
        # ports of their own), so every download is in flight at the crash.
        streams = Streams(net.CLIENT, net.SERVER_ADDR, digest)
        steady = SteadyLoad(_Ends(net.CLIENT, net.SERVER_ADDR), 5, 5.0)
        time.sleep(1.0)
        client = LiveCapture(net.CLIENT, STREAM_CAPTURE)
        backup = LiveCapture(net.NODE_B, f"tcp port {net.HTTP_PORT}", "out")
        time.sleep(0.3)
        t_kill = time.time()
        pair.crash("a")
        lost = streams.lost(DOWNLOAD_TIMEOUT)
        forwarded = backup.stop()
        data = client.stop()
        steady_failed = int(steady.join().get("failed", 0))
        streams_seen = long_flows(data, t_kill)
        first = first_of(forwarded, streams_seen, t_kill)
        resumed = min((f.t for f in forwarded if f.t >= t_kill), default=float("nan"))
        b = pair.node("b")
        takeover = _notified(b.log, "notify primary")
        done = _notified(b.log, "primary done")
        return {
            "long_downloads_intact": float(DOWNLOADS - lost),
            "long_downloads_lost": float(lost),
            "steady_requests_failed": float(steady_failed),
            "forwarding_gap_ms": (resumed - t_kill) * 1000,
            "long_download_gap_ms": (first - t_kill) * 1000 if first is not None else float("nan"),
            "tcp_stall_ms": stall_ms(data, t_kill),
            "vrrp_takeover_ms": (takeover - t_kill) * 1000,
            "commit_ms": (done - takeover) * 1000 if variant.conntrackd else float("nan"),
        }
    finally:
        pair.close()


def trial_ruleset(tmp: Path) -> RuleSet:
    """The rules of fwcluster's failover trial (tcp/80 may open a connection, the rest is
    dropped), for the nodes' kernel firewall."""
    return load_config(str(_config(tmp))).ruleset


def run(trials: int, advert_ints: tuple[float, ...] = ADVERT_INTS) -> dict[str, Any]:
    """``trials`` crashes of each variant, each on a fresh pair; the pair's namespaces and
    processes are removed after every trial, whatever happened."""
    net.remove_leftovers()
    per: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="fwcluster-baseline-") as tmp_name,
        tempfile.TemporaryDirectory(prefix="fwcluster-baseline-www-") as www_name,
    ):
        tmp = Path(tmp_name)  # 0700: the daemons' configs, sockets, logs, the downloads
        www = Path(www_name)  # the files nginx serves (its workers run as nobody), no secrets
        www.chmod(0o755)
        digest = make_docroot(www / "www")[STREAM]
        ruleset = trial_ruleset(tmp)
        todo = variants(advert_ints)
        with Progress(transient=True) as progress:
            task = progress.add_task("baseline", total=len(todo) * trials)
            for n, variant in enumerate(todo):
                raw: dict[str, list[float]] = {}
                for i in range(trials):
                    progress.update(task, description=f"baseline {variant.name}: trial {i + 1}/{trials}")
                    run_dir = tmp / f"v{n}-t{i}"
                    run_dir.mkdir(mode=0o700)
                    for k, v in trial(variant, ruleset, run_dir, www, digest).items():
                        raw.setdefault(k, []).append(v)
                    progress.advance(task)
                per[variant.name] = {
                    "conntrackd": variant.conntrackd,
                    "advert_int": variant.advert_int,
                    "downloads": DOWNLOADS * trials,
                    "intact": int(sum(raw["long_downloads_intact"])),
                    "figures": {k: _summary(v) for k, v in raw.items()},
                    "raw": raw,
                }
    return {"baseline": "conntrackd", "trials": trials, "variants": per}


def _spread(values: list[float]) -> dict[str, float]:
    s = _summary(values)
    return {"median": s["median"], "min": s["min"], "max": s["max"], "n": s["n"]}


def side_by_side(ours: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per setup: fwcluster's ``sigkill`` trial at each sync level (``ours``: the
    ``levels`` of ``bench.failover.run``) and each baseline variant, with the same figures.
    fwcluster's gap is its ``reroute_gap_ms`` (first packet another instance forwards); intact
    downloads are checksummed on both sides (bench/stream.py)."""
    rows = []
    for level, res in ours.items():
        raw = res["raw"]
        lost = raw.get("long_downloads_lost", [])
        rows.append({
            "setup": f"fwcluster/{level}",
            "downloads": DOWNLOADS * len(lost),
            "intact": int(DOWNLOADS * len(lost) - sum(lost)),
            "steady_requests_failed": int(sum(raw.get("steady_requests_failed", []))),
            "forwarding_gap_ms": _spread(raw.get("reroute_gap_ms", [])),
            "tcp_stall_ms": _spread(raw.get("tcp_stall_ms", [])),
        })  # fmt: skip
    for name, res in baseline["variants"].items():
        raw = res["raw"]
        rows.append({
            "setup": name,
            "downloads": res["downloads"],
            "intact": res["intact"],
            "steady_requests_failed": int(sum(raw["steady_requests_failed"])),
            "forwarding_gap_ms": _spread(raw["forwarding_gap_ms"]),
            "tcp_stall_ms": _spread(raw["tcp_stall_ms"]),
        })  # fmt: skip
    return rows
