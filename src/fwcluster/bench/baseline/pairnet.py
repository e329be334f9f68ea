"""The baseline pair's network and daemons, in namespaces of its own (``fwb-*``, never ``fwc-*``:
the testbed's teardown removes those).

    fwb-client --- fwb-lan (bridge) ---+--- fwb-a ---+--- fwb-wan (bridge) --- fwb-server
                                       |     | sync  |
                                       +--- fwb-b ---+

| link              | IPv4              | hosts                                      |
|-------------------|-------------------|--------------------------------------------|
| client side (lan) | 198.19.200.0/24   | VIP .1 (the client's gateway), a .2, b .3, client .10 |
| server side (wan) | 198.19.201.0/24   | VIP .1 (the server's gateway), a .2, b .3, server .10 |
| sync (a <-> b)    | 198.19.202.0/30   | a .1, b .2 (conntrackd's dedicated link)   |

The testbed uses 198.18.0-32.0/24, 198.18.255.0/24 and 198.19.0-32.0/24; 198.19.200.0/22 is
apart from all of them. IPv4 only (conntrackd's sync and the trial need no more). Nothing links
to the host's namespace. Every process started here runs inside one of these namespaces and is
ended by pid (``close``), whatever happened; then the namespaces are removed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from fwcluster.bench.baseline.pairconf import (
    NODE_SYSCTLS,
    NodePlan,
    render_conntrackd,
    render_keepalived,
    render_notify,
)
from fwcluster.core.rules import RuleSet
from fwcluster.steering.netns import CommandError, netns_argv, netns_exists, nft, run_in
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.nftrules import kernel_ruleset
from fwcluster.testbed.processes import pids_in_netns, spawn_detached, terminate
from fwcluster.testbed.server import TEMP_DIRS, nginx_conf
from fwcluster.testbed.topology import remove_netns, write_sysctls

PREFIX = "fwb-"
CLIENT, LAN, NODE_A, NODE_B, WAN, SERVER = (PREFIX + n for n in ("client", "lan", "a", "b", "wan", "server"))
ALL_NETNS = (CLIENT, LAN, NODE_A, NODE_B, WAN, SERVER)
LAN_NET, WAN_NET, SYNC_NET = "198.19.200", "198.19.201", "198.19.202"
VIP_HOST, CLIENT_HOST = 1, 10
NODE_HOST = {"a": 2, "b": 3}
SYNC_HOST = {"a": 1, "b": 2}
CLIENT_ADDR = f"{LAN_NET}.{CLIENT_HOST}"
SERVER_ADDR = f"{WAN_NET}.{CLIENT_HOST}"
LAN_VIP, WAN_VIP = f"{LAN_NET}.{VIP_HOST}", f"{WAN_NET}.{VIP_HOST}"
HTTP_PORT = 80
# The client's receive buffer is bounded (256 KiB; the host's default may allow 32 MiB): through
# the kernel's fast forwarding a rate-limited download (curl --limit-rate) would otherwise be in
# the client's buffer within half a second, and the trial's crash would find nothing on the wire.
# Bounded, each download streams at the rate the client reads, through the crash.
CLIENT_SYSCTLS = (("net/ipv4/tcp_rmem", "4096 131072 262144"),)
UP_TIMEOUT = 15.0  # seconds for the daemons to settle (the first master, conntrackd's socket)


def node_plans(run_dir: Path, advert_int: float, conntrackd: bool) -> list[NodePlan]:
    """a (priority 150: the master) and b (100: the backup)."""
    ignore = tuple(
        f"{net}.{h}" for net in (LAN_NET, WAN_NET) for h in (VIP_HOST, *NODE_HOST.values())
    ) + tuple(f"{SYNC_NET}.{h}" for h in SYNC_HOST.values())
    plans = []
    for name, ns, prio, peer in (("a", NODE_A, 150, "b"), ("b", NODE_B, 100, "a")):
        plans.append(
            NodePlan(
                name=name,
                netns=ns,
                directory=run_dir / name,
                priority=prio,
                sync_addr=f"{SYNC_NET}.{SYNC_HOST[name]}",
                peer_sync_addr=f"{SYNC_NET}.{SYNC_HOST[peer]}",
                lan_vip=f"{LAN_VIP}/24",
                wan_vip=f"{WAN_VIP}/24",
                ignore=ignore,
                advert_int=advert_int,
                conntrackd=conntrackd,
            )
        )
    return plans


def _ip(netns: str, *args: str) -> None:
    try:
        run_in(netns, ["ip", *args])
    except CommandError as e:
        raise TestbedError(str(e)) from None


def _veth(ns1: str, if1: str, ns2: str, if2: str) -> None:
    _ip(ns1, "link", "add", "name", if1, "type", "veth", "peer", "name", if2, "netns", ns2)


def build_network(ruleset: RuleSet) -> None:
    """The namespaces, links, addresses and routes; both nodes filter with the kernel's firewall
    (``ruleset``, as nftables) and forward."""
    for ns in ALL_NETNS:
        if netns_exists(ns):
            raise TestbedError(f"namespace {ns} exists already (another baseline run?)")
    for ns in ALL_NETNS:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=10)
        _ip(ns, "link", "set", "lo", "up")
    for switch, net, end in ((LAN, LAN_NET, CLIENT), (WAN, WAN_NET, SERVER)):
        _ip(switch, "link", "add", "br0", "type", "bridge")
        _ip(switch, "link", "set", "br0", "up")
        port = "lan" if switch == LAN else "wan"
        for ns, name in ((end, "to-end"), (NODE_A, "to-a"), (NODE_B, "to-b")):
            _veth(switch, name, ns, "eth0" if ns == end else port)
            _ip(switch, "link", "set", name, "master", "br0")
            _ip(switch, "link", "set", name, "up")
        _ip(end, "addr", "add", f"{net}.{CLIENT_HOST}/24", "dev", "eth0")
        _ip(end, "link", "set", "eth0", "up")
        _ip(end, "route", "add", "default", "via", f"{net}.{VIP_HOST}")
    write_sysctls(CLIENT, CLIENT_SYSCTLS)
    _veth(NODE_A, "sync", NODE_B, "sync")
    for name, ns in (("a", NODE_A), ("b", NODE_B)):
        write_sysctls(ns, NODE_SYSCTLS)
        for port, net in (("lan", LAN_NET), ("wan", WAN_NET)):
            _ip(ns, "addr", "add", f"{net}.{NODE_HOST[name]}/24", "dev", port)
            _ip(ns, "link", "set", port, "up")
        _ip(ns, "addr", "add", f"{SYNC_NET}.{SYNC_HOST[name]}/30", "dev", "sync")
        _ip(ns, "link", "set", "sync", "up")
        nft(ns, kernel_ruleset(ruleset))


def start_nginx(run_dir: Path, www: Path, docroot: Path) -> int:
    """nginx in fwb-server, serving ``docroot`` (testbed.server's config, our address); its pid."""
    for d in TEMP_DIRS:
        (www / "nginx" / d).mkdir(parents=True, exist_ok=True)
    conf = run_dir / "nginx.conf"
    conf.write_text(nginx_conf(run_dir, docroot, www, listen=(f"{SERVER_ADDR}:{HTTP_PORT}",)))
    subprocess.run(
        netns_argv(SERVER, ["nginx", "-c", str(conf), "-p", str(run_dir), "-q"]),
        check=True, capture_output=True, timeout=10,
    )  # fmt: skip
    pidfile = run_dir / "nginx.pid"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        if text.isdigit():
            return int(text)
        time.sleep(0.02)
    raise TestbedError("nginx did not start in fwb-server")


@dataclass
class Pair:
    """One built pair: its nodes' plans and every daemon started for it (by pid)."""

    run_dir: Path
    nodes: list[NodePlan]
    pids: list[int] = field(default_factory=list)

    def node(self, name: str) -> NodePlan:
        return next(n for n in self.nodes if n.name == name)

    def start_daemons(self) -> None:
        """Write each node's files, start conntrackd (if the variant has it) and keepalived,
        and wait until a is master (its sync group's notify ran), b is backup, and the client
        reaches the server through the VIPs."""
        for n in self.nodes:
            n.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            n.keepalived_conf.write_text(render_keepalived(n))
            n.conntrackd_conf.write_text(render_conntrackd(n))
            n.notify_script.write_text(render_notify(n))
            n.notify_script.chmod(0o700)
            if n.conntrackd:
                self._spawn(n, n.conntrackd_argv())
        for n in self.nodes:
            if n.conntrackd:
                self._wait(partial(_ok, n.netns, n.conntrackd_argv("-s")), f"conntrackd in {n.netns}")
        for n in self.nodes:
            self._spawn(n, n.keepalived_argv())
        a, b = self.node("a"), self.node("b")
        self._wait(lambda: "notify primary" in _read(a.log), "keepalived: a becomes master")
        self._wait(lambda: "notify backup" in _read(b.log), "keepalived: b becomes backup")
        if a.conntrackd:
            self._wait(lambda: "primary done" in _read(a.log), "a's notify script")
        self._wait(self.forwards, "a path from client to server through the VIPs")

    def forwards(self) -> bool:
        url = f"http://{SERVER_ADDR}/index.html"
        return _ok(CLIENT, ["curl", "-s", "-m", "1", "-o", "/dev/null", url])

    def _spawn(self, node: NodePlan, argv: list[str]) -> None:
        proc = spawn_detached(netns_argv(node.netns, argv), node.directory / f"{argv[0]}.out")
        self.pids.append(proc.pid)

    def _wait(self, cond: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + UP_TIMEOUT
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.05)
        raise TestbedError(f"baseline pair: no {what} within {UP_TIMEOUT:g} s (logs in {self.run_dir})")

    def crash(self, name: str) -> None:
        """Node ``name`` crashes: its links go down (it forwards and announces nothing from
        here on), then every process in its namespace gets SIGKILL (keepalived cannot say
        goodbye with priority 0, conntrackd cannot send a last update)."""
        ns = self.node(name).netns
        script = "".join(f"link set {i} down\n" for i in ("lan", "wan", "sync"))
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input=script.encode(), check=True, timeout=10)
        deadline = time.monotonic() + 2.0  # until none is left (one may be forking right now)
        while (pids := pids_in_netns(ns)) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def close(self) -> None:
        """Stop everything started in the pair's namespaces (by pid), remove the namespaces."""
        pids = set(self.pids)
        for ns in ALL_NETNS:
            pids.update(pids_in_netns(ns))
        terminate(pids)
        for ns in ALL_NETNS:
            remove_netns(ns)


def _ok(netns: str, argv: list[str]) -> bool:
    return (
        subprocess.run(netns_argv(netns, argv), capture_output=True, timeout=10, check=False).returncode == 0
    )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def remove_leftovers() -> None:
    """Remove the namespaces of a baseline run that died (their processes first, by pid)."""
    Pair(Path("/nonexistent"), []).close()
