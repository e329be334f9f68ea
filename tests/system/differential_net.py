"""Namespaces for the differential TCP test: two firewall paths side by side, own names (``fwd-*``).

::

    fwd-a --(fw0)-- fwd-fw (one fwcluster instance: NFQUEUE and its fast path) --(fw0)-- fwd-b
    fwd-a --(k0)--- fwd-k  (nftables + conntrack, tcp_loose=0)  --(k0)--- fwd-b

``fwd-a`` plays the client and ``fwd-b`` the server of every scenario; each end has one address
per path, so the destination address picks the path. Neither end answers by itself: an nft
table drops every TCP segment at their input hook (the sniffers are AF_PACKET sockets, which see
a frame before that hook), and the peers never open a socket. Neighbours are static, so no ARP
or NDP exchange reorders or delays the first segments. The shared ``fwc-*`` testbed is not
touched, so no lock is needed; :func:`teardown` deletes every ``fwd-*`` namespace it made.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fwcluster.datapath.replies import ReplySender
from fwcluster.steering.netns import inside
from fwcluster.testbed.filtering import FWCLUSTER_SYSCTLS, fwcluster_rules

NS_A, NS_FW, NS_K, NS_B = "fwd-a", "fwd-fw", "fwd-k", "fwd-b"
NAMESPACES = (NS_A, NS_FW, NS_K, NS_B)
QUEUE = 0
ALLOWED_PORTS = (7000, 7999)  # both firewalls accept a SYN to these (server) ports, nothing else
_ETH_P_ALL = 0x0003
_PACKET_HOST = 0
_SO_RCVBUFFORCE = 33  # Linux; not in the socket module


@dataclass(frozen=True)
class FirewallPath:
    """One way from fwd-a to fwd-b: the firewall's namespace, the name of the path's interface in
    each end host and the addresses of both ends (v4, v6) on it."""

    name: str
    netns: str
    ifname: str  # the same name on all four veth ends of this path
    a4: str
    b4: str
    a6: str
    b6: str
    index: int  # distinguishes the links' subnets and MAC addresses

    def addrs(self, family: int) -> tuple[str, str]:
        return (self.a4, self.b4) if family == 4 else (self.a6, self.b6)


def _path(name: str, netns: str, ifname: str, k: int) -> FirewallPath:
    return FirewallPath(
        name, netns, ifname,
        a4=f"198.19.{240 + 2 * k}.2", b4=f"198.19.{241 + 2 * k}.2",
        a6=f"2001:2:0:f{2 * k}0::2", b6=f"2001:2:0:f{2 * k + 1}0::2",
        index=k,
    )  # fmt: skip


FWCLUSTER = _path("fwcluster", NS_FW, "fw0", 0)
KERNEL = _path("kernel", NS_K, "k0", 1)
PATHS = (FWCLUSTER, KERNEL)


def sh(netns: str | None, *argv: str, stdin: str | None = None) -> str:
    """Run a command (inside ``netns`` when given); its stdout, or AssertionError with its stderr."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    p = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(full)}: {(p.stderr or p.stdout).strip()}")
    return p.stdout


def _mac(path: FirewallPath, side: str, end: str) -> str:
    """MAC address of a veth end: side a|b (the link), end 0 (host end) | 1 (firewall end)."""
    return f"02:fd:00:{path.index:02x}:{0 if side == 'a' else 1:02x}:{0 if end == 'host' else 1:02x}"


END_TABLE = """\
table inet fwd_end {
    chain input {
        type filter hook input priority 0; policy accept;
        meta l4proto tcp drop
    }
}
"""


def kernel_ruleset() -> str:
    """The kernel's own stateful firewall: tracked packets pass, a SYN to an allowed port opens."""
    lo, hi = ALLOWED_PORTS
    return (
        "table inet fwd_kernel {\n"
        "    chain forward {\n"
        "        type filter hook forward priority 0; policy drop;\n"
        "        ct state established,related accept\n"
        f"        tcp dport {lo}-{hi} ct state new tcp flags & (fin|syn|rst|ack) == syn accept\n"
        "    }\n"
        "}\n"
    )


def fwcluster_filter() -> str:
    """The instance namespace's filter exactly as the testbed installs it (one source of truth:
    ``testbed.filtering.fwcluster_rules``): the fast path for marked flows, everything else to the
    queue, no --queue-bypass."""
    return fwcluster_rules(QUEUE)


def instance_config() -> str:
    """One instance, nothing shared (no store to wait for), the same rule as the kernel side."""
    lo, hi = ALLOWED_PORTS
    return (
        '[sync]\nlevel = "none"\n\n'
        '[store]\nbackend = "memory"\n\n'
        # the tracker itself meets every segment (with the fast path, a flow's windows are
        # the kernel's while it is on it: see docs/architecture.md)
        "[datapath]\nfast_path = false\n\n"
        '[policy]\ndefault = "drop"\n\n'
        f'[[rules]]\naction = "accept"\nproto = "tcp"\ndport = "{lo}-{hi}"\n'
    )


def teardown() -> None:
    """Delete every namespace of this test that exists, after ending the processes inside them (an
    instance a crashed run of this test left behind); idempotent, never raises."""
    present = [ns for ns in NAMESPACES if Path("/run/netns", ns).exists()]
    pids = {int(p) for ns in present for p in _netns_pids(ns)}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = {p for p in pids if Path(f"/proc/{p}").exists()}
            time.sleep(0.1)
    for ns in present:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _netns_pids(netns: str) -> list[str]:
    p = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False)
    return p.stdout.split() if p.returncode == 0 else []


def build() -> None:
    """Create the four namespaces, the links, addresses, routes, neighbours and both firewalls
    (the instance is started by :class:`Instance`)."""
    teardown()
    for ns in NAMESPACES:
        sh(None, "ip", "netns", "add", ns)
        sh(ns, "ip", "link", "set", "lo", "up")
    for ns in (NS_FW, NS_K):
        sh(ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
    for path in PATHS:
        _link(path, "a", NS_A)
        _link(path, "b", NS_B)
    for ns in (NS_A, NS_B):
        sh(ns, "nft", "-f", "-", stdin=END_TABLE)
    for tool in ("iptables-restore", "ip6tables-restore"):
        sh(NS_FW, tool, stdin=fwcluster_filter())
    sh(NS_FW, "sysctl", "-q", "-w", *(f"{k}={v}" for k, v in FWCLUSTER_SYSCTLS))
    sh(NS_K, "nft", "-f", "-", stdin=kernel_ruleset())
    # conntrack's sysctls exist in a namespace once it tracks there (the ct rules above)
    sh(NS_K, "sysctl", "-q", "-w", "net.netfilter.nf_conntrack_tcp_loose=0")


def kernel_sysctls() -> dict[str, str]:
    """The conntrack settings the kernel path runs with (for the report)."""
    names = ("nf_conntrack_tcp_loose", "nf_conntrack_tcp_be_liberal", "nf_conntrack_checksum",
             "nf_conntrack_tcp_ignore_invalid_rst")  # fmt: skip
    out = sh(NS_K, "sysctl", *(f"net.netfilter.{n}" for n in names))
    return dict(line.replace(" ", "").split("=", 1) for line in out.splitlines() if "=" in line)


def _link(path: FirewallPath, side: str, host_ns: str) -> None:
    """One veth between an end host and the path's firewall, with addresses, routes and static
    neighbours (the far end's subnet is routed through the firewall)."""
    k = 2 * path.index + (0 if side == "a" else 1)
    other = 2 * path.index + (1 if side == "a" else 0)
    tmp_host, tmp_fw = f"fwdh{k}", f"fwdf{k}"
    host_end = ["name", tmp_host, "netns", host_ns, "address", _mac(path, side, "host")]
    fw_end = ["name", tmp_fw, "netns", path.netns, "address", _mac(path, side, "fw")]
    sh(None, "ip", "link", "add", *host_end, "type", "veth", "peer", *fw_end)
    sh(host_ns, "ip", "link", "set", tmp_host, "name", path.ifname)
    sh(path.netns, "ip", "link", "set", tmp_fw, "name", f"{path.ifname}{side}")
    fw_if = f"{path.ifname}{side}"
    host4, fw4 = f"198.19.{240 + k}.2", f"198.19.{240 + k}.1"
    host6, fw6 = f"2001:2:0:f{k}0::2", f"2001:2:0:f{k}0::1"
    sh(host_ns, "ip", "addr", "add", f"{host4}/24", "dev", path.ifname)
    sh(host_ns, "ip", "-6", "addr", "add", f"{host6}/64", "dev", path.ifname, "nodad")
    sh(path.netns, "ip", "addr", "add", f"{fw4}/24", "dev", fw_if)
    sh(path.netns, "ip", "-6", "addr", "add", f"{fw6}/64", "dev", fw_if, "nodad")
    sh(host_ns, "ip", "link", "set", path.ifname, "up")
    sh(path.netns, "ip", "link", "set", fw_if, "up")
    sh(host_ns, "ip", "route", "add", f"198.19.{240 + other}.0/24", "via", fw4, "dev", path.ifname)
    sh(host_ns, "ip", "-6", "route", "add", f"2001:2:0:f{other}0::/64", "via", fw6, "dev", path.ifname)
    for ns, addr, dev, mac in (
        (host_ns, fw4, path.ifname, _mac(path, side, "fw")),
        (host_ns, fw6, path.ifname, _mac(path, side, "fw")),
        (path.netns, host4, fw_if, _mac(path, side, "host")),
        (path.netns, host6, fw_if, _mac(path, side, "host")),
    ):
        sh(ns, "ip", "neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent")


# ---------------------------------------------------------------------------- the instance
class Instance:
    """One fwcluster instance reading the queue in fwd-fw; its output goes to ``log``."""

    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "instance.log"
        config = workdir / "instance.toml"
        config.write_text(instance_config(), encoding="utf-8")
        run_dir = workdir / "run"
        run_dir.mkdir(exist_ok=True)
        argv = ["ip", "netns", "exec", NS_FW, sys.executable, "-m", "fwcluster", "instance", "run",
                "--config", str(config), "--id", "fwd1", "--queue", str(QUEUE),
                "--run-dir", str(run_dir)]  # fmt: skip
        with self.log.open("wb") as out:
            # `ip netns exec` execs the command: this pid is the instance's own
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


# ---------------------------------------------------------------------------- send and sniff
def raw_sender(netns: str) -> ReplySender:
    """Raw IP sockets (header included) opened inside one end namespace: the instance's own
    sender of REJECT answers does exactly this."""
    with inside(netns):
        return ReplySender()


@dataclass(frozen=True)
class Seen:
    """A frame that arrived at an end host: the path it came over, the host, the IP packet."""

    path: str
    host: str  # "a" (a segment towards the client) | "b" (towards the server)
    packet: bytes


class Sniffer:
    """AF_PACKET sockets on the four end interfaces, read by a thread until :meth:`stop`; only
    frames arriving at the host (not the ones it sends) are kept."""

    def __init__(self) -> None:
        self.socks: dict[socket.socket, tuple[str, str]] = {}
        for ns, host in ((NS_A, "a"), (NS_B, "b")):
            for path in PATHS:
                with inside(ns):
                    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
                s.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 8 << 20)
                s.bind((path.ifname, _ETH_P_ALL))
                s.setblocking(False)
                self.socks[s] = (path.name, host)
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fwd-sniffer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select(list(self.socks), [], [], 0.1)
            for s in ready:
                path, host = self.socks[s]
                while True:
                    try:
                        frame, addr = s.recvfrom(65536)
                    except BlockingIOError:
                        break
                    if addr[2] != _PACKET_HOST or len(frame) < 14:
                        continue
                    if frame[12:14] in (b"\x08\x00", b"\x86\xdd"):
                        with self._lock:
                            self.seen.append(Seen(path, host, frame[14:]))

    def snapshot(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def wait_for(self, predicate: Callable[[list[Seen]], bool], timeout: float) -> bool:
        """Poll until ``predicate(snapshot)`` is true or ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(0.05)
        return bool(predicate(self.snapshot()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for s in self.socks:
            s.close()
