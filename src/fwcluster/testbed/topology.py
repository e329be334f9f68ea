"""Build and remove the testbed's namespaces, veth links, addresses and routes (pyroute2).

Links run only between testbed namespaces; nothing touches the host's own namespace. fwc-lb has
no route to the server net and fwc-rt none to the client net: crossing needs steering.
"""

from __future__ import annotations

import errno
import socket
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from fwcluster.steering.netns import NETNS_RUN_DIR, inside, netns_exists
from fwcluster.testbed import addressing as a
from fwcluster.testbed.errors import TestbedError

_IFA_F_NODAD = 0x02

# Every namespace: no reverse-path filter (replies come back on other links than the one a
# route would pick), IPv6 addresses usable at once (no duplicate address detection).
_COMMON_SYSCTLS = (
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/conf/default/rp_filter", "0"),
    ("net/ipv6/conf/all/accept_dad", "0"),
    ("net/ipv6/conf/default/accept_dad", "0"),
    ("net/ipv6/conf/all/accept_ra", "0"),
    ("net/ipv6/conf/default/accept_ra", "0"),
)
# Namespaces that forward: fwc-lb, fwc-rt and the instances.
_ROUTER_SYSCTLS = (
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv6/conf/all/forwarding", "1"),
    ("net/ipv6/conf/default/forwarding", "1"),
    ("net/ipv4/conf/all/send_redirects", "0"),
    ("net/ipv4/conf/default/send_redirects", "0"),
)


def existing_netns() -> list[str]:
    """Every ``fwc-*`` namespace that exists now (from this or a crashed run)."""
    try:
        names = sorted(p.name for p in NETNS_RUN_DIR.iterdir())
    except FileNotFoundError:
        return []
    return [n for n in names if n.startswith(a.NETNS_PREFIX)]


def remove_netns(name: str) -> None:
    """Remove one namespace (its veths go with it); a missing one is fine."""
    if not netns_exists(name):
        return
    try:
        pr_netns.remove(name)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise TestbedError(f"cannot remove namespace {name}: {e.strerror}") from None


def write_sysctls(netns: str, values: tuple[tuple[str, str], ...]) -> None:
    with inside(netns):
        for key, value in values:
            Path("/proc/sys", key).write_text(value)


class _Builder:
    """Holds one netlink socket per namespace while the topology is built."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._ipr: dict[str, Any] = {}

    def ipr(self, netns: str) -> Any:
        if netns not in self._ipr:
            self._ipr[netns] = self._stack.enter_context(IPRoute(netns=netns))
        return self._ipr[netns]

    def index(self, netns: str, ifname: str) -> int:
        found: list[int] = self.ipr(netns).link_lookup(ifname=ifname)
        if not found:
            raise TestbedError(f"{netns}: interface {ifname} is missing")
        return found[0]

    def up(self, netns: str, ifname: str) -> None:
        self.ipr(netns).link("set", index=self.index(netns, ifname), state="up")

    def address(self, netns: str, ifname: str, addr: a.DualAddr) -> None:
        ipr, idx = self.ipr(netns), self.index(netns, ifname)
        ipr.addr("add", index=idx, address=addr.ip4, prefixlen=addr.v4.network.prefixlen)
        ipr.addr(
            "add",
            index=idx,
            family=socket.AF_INET6,
            address=addr.ip6,
            prefixlen=addr.v6.network.prefixlen,
            flags=_IFA_F_NODAD,
        )

    def veth(
        self,
        ns_a: str,
        if_a: str,
        addr_a: a.DualAddr | None,
        ns_b: str,
        if_b: str,
        addr_b: a.DualAddr | None,
    ) -> None:
        """A veth pair with one end in each namespace, addressed and up."""
        self.ipr(ns_a).link("add", ifname=if_a, kind="veth", peer={"ifname": if_b, "net_ns_fd": ns_b})
        for ns, ifname, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
            if addr is not None:
                self.address(ns, ifname, addr)
            self.up(ns, ifname)

    def route(self, netns: str, dst: a.DualNet | None, via: a.DualAddr) -> None:
        """A v4 and a v6 route to ``dst`` (None: the default route) via ``via``."""
        ipr = self.ipr(netns)
        dst4 = str(dst.v4) if dst else "0.0.0.0/0"
        dst6 = str(dst.v6) if dst else "::/0"
        ipr.route("add", family=socket.AF_INET, dst=dst4, gateway=via.ip4)
        ipr.route("add", family=socket.AF_INET6, dst=dst6, gateway=via.ip6)


def build(instances: int) -> None:
    """Create every namespace and link of a testbed with ``instances`` instances."""
    names = a.all_netns(instances)
    routers = {a.LB_NETNS, a.RT_NETNS, *(a.fw_netns(k) for k in range(1, instances + 1))}
    for name in names:
        try:
            pr_netns.create(name)
        except OSError as e:
            raise TestbedError(f"cannot create namespace {name}: {e.strerror or e}") from None
        write_sysctls(name, _COMMON_SYSCTLS + (_ROUTER_SYSCTLS if name in routers else ()))
    try:
        with ExitStack() as stack:
            _links(_Builder(stack), instances)
    except NetlinkError as e:
        raise TestbedError(f"building the topology failed: {e}") from None


def _links(b: _Builder, n: int) -> None:
    for name in a.all_netns(n):
        b.up(name, "lo")
    # client <-> lb and rt <-> server, with the end hosts' default routes
    b.veth(a.LB_NETNS, a.IF_TO_CLIENT, a.lb_client_addr(), a.CLIENT_NETNS, a.IF_TO_LB, a.client_addr())
    b.veth(a.RT_NETNS, a.IF_TO_SERVER, a.rt_server_addr(), a.SERVER_NETNS, a.IF_TO_RT, a.server_addr())
    b.route(a.CLIENT_NETNS, None, a.lb_client_addr())
    b.route(a.SERVER_NETNS, None, a.rt_server_addr())
    # the management bridge
    mgmt = b.ipr(a.MGMT_NETNS)
    # A fixed MAC: otherwise the bridge takes its lowest port's, and changes it when ports come and go.
    mgmt.link("add", ifname=a.MGMT_BRIDGE, kind="bridge", address=a.MGMT_BRIDGE_MAC, br_mcast_snooping=0)
    b.address(a.MGMT_NETNS, a.MGMT_BRIDGE, a.mgmt_bridge_addr())
    b.up(a.MGMT_NETNS, a.MGMT_BRIDGE)
    for k in range(1, n + 1):
        _fw_links(b, k)


def _fw_links(b: _Builder, k: int) -> None:
    """Instance k's links: to both balancers, and into the management bridge."""
    fw = a.fw_netns(k)
    b.veth(a.LB_NETNS, a.if_to_fw(k), a.lb_fw_addr(k), fw, a.IF_TO_LB, a.fw_lb_addr(k))
    b.veth(a.RT_NETNS, a.if_to_fw(k), a.rt_fw_addr(k), fw, a.IF_TO_RT, a.fw_rt_addr(k))
    b.route(fw, a.client_net(), a.lb_fw_addr(k))
    b.route(fw, a.server_net(), a.rt_fw_addr(k))
    b.veth(a.MGMT_NETNS, a.if_to_fw(k), None, fw, a.IF_MGMT, a.mgmt_addr(k))
    bridge = b.index(a.MGMT_NETNS, a.MGMT_BRIDGE)
    b.ipr(a.MGMT_NETNS).link("set", index=b.index(a.MGMT_NETNS, a.if_to_fw(k)), master=bridge)


def add_instance(k: int) -> None:
    """Scale out: create fw namespace k and its links on a running testbed."""
    name = a.fw_netns(k)
    try:
        pr_netns.create(name)
    except OSError as e:
        raise TestbedError(f"cannot create namespace {name}: {e.strerror or e}") from None
    write_sysctls(name, _COMMON_SYSCTLS + _ROUTER_SYSCTLS)
    try:
        with ExitStack() as stack:
            b = _Builder(stack)
            b.up(name, "lo")
            _fw_links(b, k)
    except NetlinkError as e:
        raise TestbedError(f"adding instance {k} failed: {e}") from None
    deadline = time.monotonic() + 3.0
    while _unready(name) and time.monotonic() < deadline:
        time.sleep(0.05)


_OPER_UP = "UP"
# Devices that carry no traffic of their own: the ecmp driver's drop device (ifb, NOARP).
_NOT_WAITED_FOR = {"ifb"}


def _kind(msg: Any) -> str:
    info = msg.get_attr("IFLA_LINKINFO")
    return str(info.get_attr("IFLA_INFO_KIND")) if info is not None else ""


_LINK_LOCAL = "fe80:"


def _unready(netns: str) -> list[str]:
    """The interfaces of ``netns`` the kernel has not finished bringing up (IPv6 included)."""
    with IPRoute(netns=netns) as ipr:
        links = {
            msg["index"]: (msg.get_attr("IFLA_IFNAME"), msg.get_attr("IFLA_OPERSTATE"))
            for msg in ipr.get_links()
            if _kind(msg) not in _NOT_WAITED_FOR
        }
        with_ll = {
            msg["index"]
            for msg in ipr.get_addr(family=socket.AF_INET6)
            if str(msg.get_attr("IFA_ADDRESS")).startswith(_LINK_LOCAL)
        }
    return [
        f"{netns}/{name}"
        for index, (name, oper) in links.items()
        if name != "lo" and (oper != _OPER_UP or index not in with_ll)
    ]


def wait_ready(instances: int, timeout: float = 3.0) -> None:
    """Wait until every link is operationally up and IPv6 is configured on it.

    The kernel finishes bringing a veth up in its link-watch work, which may run up to a second
    later; until then IPv6 has not joined the solicited-node groups, so neighbour solicitations
    go unanswered and the first IPv6 connection loses its SYN (a 1 s retransmission).
    """
    deadline = time.monotonic() + timeout
    pending = a.all_netns(instances)
    while True:
        late: list[str] = []
        for name in pending:
            late.extend(_unready(name))
        pending = sorted({item.split("/")[0] for item in late})
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TestbedError(f"links not up within {timeout:g} s: {', '.join(late[:4])}")
        time.sleep(0.05)
