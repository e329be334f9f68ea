"""Helpers for the namespace tests: fetch URLs from inside a namespace, read nft sets."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from fwcluster.steering.netns import inside
from fwcluster.testbed import TestbedState, netns_exec
from fwcluster.testbed import addressing as a

CURL_TIMEOUT = 2.0  # seconds; a blocked connection fails after this long

# The ``testbed`` fixture: builds a testbed with up()'s arguments.
Builder = Callable[..., TestbedState]

# The study's policy: web traffic to the benchmark ranges, nothing else opens a connection.
WEB_RULES = """\
[policy]
default = "drop"

[[rules]]
action = "accept"
proto = "tcp"
dst = ["198.18.0.0/15", "2001:2::/48"]
dport = 80
"""


def tcp_counter(netns: str, name: str) -> int:
    """A ``Tcp:`` counter of /proc/net/snmp in ``netns`` (IPv4 and IPv6 share them), e.g.
    ``OutSegs`` (segments sent) or ``RetransSegs`` (segments sent again)."""
    lines = netns_exec(netns, ["cat", "/proc/net/snmp"], check=True).stdout.splitlines()
    tcp = [line.split() for line in lines if line.startswith("Tcp:")]
    return int(tcp[1][tcp[0].index(name)])


@dataclass
class Curl:
    returncode: int
    body: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def curl(netns: str, url: str, timeout: float = CURL_TIMEOUT) -> Curl:
    """Fetch ``url`` from inside ``netns``; curl's exit status (28: timed out, 7: refused) and body."""
    argv = ["ip", "netns", "exec", netns, "curl", "-s", "-g", "-m", f"{timeout:g}", "-o", "-", url]
    p = subprocess.run(argv, capture_output=True, timeout=timeout + 5, check=False)
    return Curl(p.returncode, p.stdout)


def url(state: TestbedState, family: int, path: str = "/index.html", port: int | None = None) -> str:
    host = state.server_addr if family == 4 else f"[{state.server_addr6}]"
    return f"http://{host}:{port or state.http_port}{path}"


def nft_set(netns: str, table: str, name: str) -> set[int]:
    """The elements of an nft set (of integers) in ``netns``."""
    out = netns_exec(netns, ["nft", "-j", "list", "set", "inet", table, name], check=True).stdout
    for item in json.loads(out)["nftables"]:
        if "set" in item:
            return {int(e) for e in item["set"].get("elem", [])}
    raise AssertionError(f"no set {name} in {netns}")


PROBE = "fwc_probe"


def probe_script() -> str:
    """Per fw namespace: remember the client port of every forwarded packet, per direction and family."""
    sets = "".join(f"  set {name} {{\n    type inet_service; flags dynamic;\n  }}\n" for name in PROBE_SETS)
    rules = ""
    for fam, nfproto in (("4", "ipv4"), ("6", "ipv6")):
        rules += (
            f'    iifname "{a.IF_TO_LB}" meta nfproto {nfproto} tcp dport 80 add @c2s{fam} {{ tcp sport }}\n'
        )
        rules += (
            f'    iifname "{a.IF_TO_RT}" meta nfproto {nfproto} tcp sport 80 add @s2c{fam} {{ tcp dport }}\n'
        )
    return (
        f"table inet {PROBE} {{\n{sets}"
        "  chain probe_forward {\n"
        "    type filter hook forward priority -300; policy accept;\n"
        f"{rules}"
        "  }\n"
        "}\n"
    )


PROBE_SETS = ("c2s4", "s2c4", "c2s6", "s2c6")


def connect_many(state: TestbedState, family: int, count: int) -> list[int]:
    """Open ``count`` HTTP connections from fwc-client, one after the other; their source ports."""
    host = state.server_addr if family == 4 else state.server_addr6
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    ports = []
    with inside(state.client_netns):
        for _ in range(count):
            with socket.socket(af, socket.SOCK_STREAM) as s:
                s.settimeout(2.0)
                s.connect((host, state.http_port))
                ports.append(s.getsockname()[1])
                s.sendall(b"GET /index.html HTTP/1.0\r\nHost: server\r\n\r\n")
                reply = b""
                while chunk := s.recv(4096):
                    reply += chunk
                assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n\r\nx")
    return ports


def send_raw(netns: str, packets: list[bytes]) -> None:
    """Send complete IP packets (crafted by the test, e.g. with scapy) from inside ``netns``."""
    with inside(netns):
        s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with s4, s6:
        for pkt in packets:
            if pkt[0] >> 4 == 4:
                s4.sendto(pkt, (socket.inet_ntop(socket.AF_INET, pkt[16:20]), 0))
            else:
                s6.sendto(pkt, (socket.inet_ntop(socket.AF_INET6, pkt[24:40]), 0))


class Capture:
    """tcpdump inside a namespace, from ``start`` to ``stop``; ``packets`` are its summary lines."""

    def __init__(self, netns: str, bpf: str, pcap: str) -> None:
        self.pcap = pcap
        argv = [
            "ip",
            "netns",
            "exec",
            netns,
            "tcpdump",
            "-Z",
            "root",
            "-i",
            "any",
            "-n",
            "-U",
            "--immediate-mode",  # else packets wait in a ring-buffer block and are lost at stop
            "-w",
            pcap,
            bpf,
        ]
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # tcpdump says "listening on ..." once the capture runs.
        assert self._proc.stderr is not None
        lines = []
        for _ in range(5):
            lines.append(self._proc.stderr.readline().decode())
            if "listening" in lines[-1]:
                return
        self._proc.kill()
        raise AssertionError(f"tcpdump did not start: {lines}")

    def stop(self) -> list[str]:
        self._proc.terminate()
        self._proc.wait(timeout=5)
        out = subprocess.run(["tcpdump", "-n", "-r", self.pcap], capture_output=True, text=True, check=False)
        return [line for line in out.stdout.splitlines() if line.strip()]


def probe_connections(
    state: TestbedState, per_family: int
) -> tuple[dict[int, list[int]], dict[str, dict[str, set[int]]]]:
    """Open ``per_family`` connections over IPv4 and IPv6 with the nft probe in every fw
    namespace; returns the client ports per family and, per fw namespace, the ports it saw per
    probe set (``c2s4``, ``s2c4``, ``c2s6``, ``s2c6``). The probe is always removed again."""
    fws = [i.netns for i in state.instances]
    for ns in fws:
        netns_exec(ns, ["nft", "-f", "-"], input=probe_script(), check=True)
    try:
        ports = {4: connect_many(state, 4, per_family), 6: connect_many(state, 6, per_family)}
        seen = {ns: {name: nft_set(ns, PROBE, name) for name in PROBE_SETS} for ns in fws}
    finally:
        for ns in fws:
            netns_exec(ns, ["nft", "delete", "table", "inet", PROBE])
    return ports, seen
