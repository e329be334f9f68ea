"""The testbed's address plan: namespace names, interface names, subnets and addresses.

Every address lies in 198.18.0.0/15 or 2001:2::/48 (the ranges set aside for benchmarks), and
nothing else in the project spells an address out: it asks this module.

    fwc-client --- fwc-lb ===(lbK/fwK)=== fwc-fwK ===(fwK/rtK)=== fwc-rt --- fwc-server
                                              |
                                fwc-mgmt (bridge br0: masters, redis)

| link            | IPv4             | IPv6                 | hosts                  |
|-----------------|------------------|----------------------|------------------------|
| client <-> lb   | 198.18.0.0/24    | 2001:2:0:0::/64      | lb .1, client .2       |
| lb <-> fwK      | 198.18.K.0/24    | 2001:2:0:1KK::/64    | lb .1, fwK .2          |
| fwK <-> rt      | 198.19.K.0/24    | 2001:2:0:2KK::/64    | fwK .1, rt .2          |
| rt <-> server   | 198.19.0.0/24    | 2001:2:0:300::/64    | rt .1, server .2       |
| management      | 198.18.255.0/24  | 2001:2:0:fff::/64    | bridge .1, fwK .(10+K) |

``1KK`` is 100 + K written in decimal digits (fw7 -> ``2001:2:0:107::``, fw32 -> ``2001:2:0:132::``),
so the IPv6 subnet of an instance reads like its number.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

MAX_INSTANCES = 32
NETNS_PREFIX = "fwc-"

CLIENT_NETNS = "fwc-client"
LB_NETNS = "fwc-lb"
RT_NETNS = "fwc-rt"
SERVER_NETNS = "fwc-server"
MGMT_NETNS = "fwc-mgmt"

HTTP_PORT = 80
# nginx serves the same files on a second port: a policy test and the demo's policy step close it
# while port 80 stays open (the default rules do not let it through).
HTTP_PORT2 = 8081

# Interface names. A veth end is named after the namespace at its other end.
IF_TO_CLIENT = "client"  # in fwc-lb
IF_TO_LB = "lb"  # in fwc-client and in every fwc-fwK
IF_TO_RT = "rt"  # in fwc-server and in every fwc-fwK
IF_TO_SERVER = "server"  # in fwc-rt
IF_MGMT = "mgmt"  # in every fwc-fwK: its port on the management bridge
MGMT_BRIDGE = "br0"  # in fwc-mgmt
MGMT_BRIDGE_MAC = "02:fc:00:00:ff:01"  # locally administered

# Host numbers on the point-to-point links.
_LOW = 1
_HIGH = 2
_MGMT_BRIDGE_HOST = 1
_MGMT_FIRST_HOST = 10

# Steering: the packet mark and the policy-routing table that send a flow to instance K.
_MARK_BASE = 0x100
_TABLE_BASE = 100


@dataclass(frozen=True, slots=True)
class DualNet:
    """One dual-stack subnet."""

    v4: IPv4Network
    v6: IPv6Network

    def host(self, n: int) -> DualAddr:
        """Host number ``n`` of the subnet in both families, with the subnet's prefix length."""
        return DualAddr(
            v4=IPv4Interface((self.v4.network_address + n, self.v4.prefixlen)),
            v6=IPv6Interface((self.v6.network_address + n, self.v6.prefixlen)),
        )


@dataclass(frozen=True, slots=True)
class DualAddr:
    """One host's address in both families (``ip`` gives the bare address, ``network`` the subnet)."""

    v4: IPv4Interface
    v6: IPv6Interface

    @property
    def ip4(self) -> str:
        return str(self.v4.ip)

    @property
    def ip6(self) -> str:
        return str(self.v6.ip)


def _net(v4: str, v6: str) -> DualNet:
    return DualNet(v4=IPv4Network(v4), v6=IPv6Network(v6))


def check_index(k: int) -> None:
    if not 1 <= k <= MAX_INSTANCES:
        raise ValueError(f"instance number {k} is out of range 1..{MAX_INSTANCES}")


# --- names -------------------------------------------------------------------------------------


def fw_id(k: int) -> str:
    """The id of instance ``k`` (1-based): ``fw1``."""
    check_index(k)
    return f"fw{k}"


def fw_index(instance_id: str) -> int:
    """The number of an instance id: ``fw3`` -> 3."""
    if not instance_id.startswith("fw") or not instance_id[2:].isdigit():
        raise ValueError(f"{instance_id!r} is not an instance id (fw1..fw{MAX_INSTANCES})")
    k = int(instance_id[2:])
    check_index(k)
    return k


def fw_netns(k: int) -> str:
    return NETNS_PREFIX + fw_id(k)


def if_to_fw(k: int) -> str:
    """The name of the interface toward instance ``k`` in fwc-lb, fwc-rt and fwc-mgmt."""
    return fw_id(k)


def all_netns(instances: int) -> list[str]:
    """Every namespace of a testbed with ``instances`` instances, in build order."""
    return [
        CLIENT_NETNS,
        LB_NETNS,
        *(fw_netns(k) for k in range(1, instances + 1)),
        RT_NETNS,
        SERVER_NETNS,
        MGMT_NETNS,
    ]


# --- subnets -----------------------------------------------------------------------------------


def client_net() -> DualNet:
    return _net("198.18.0.0/24", "2001:2:0:0::/64")


def lb_fw_net(k: int) -> DualNet:
    check_index(k)
    return _net(f"198.18.{k}.0/24", f"2001:2:0:{100 + k}::/64")


def fw_rt_net(k: int) -> DualNet:
    check_index(k)
    return _net(f"198.19.{k}.0/24", f"2001:2:0:{200 + k}::/64")


def server_net() -> DualNet:
    return _net("198.19.0.0/24", "2001:2:0:300::/64")


def mgmt_net() -> DualNet:
    return _net("198.18.255.0/24", "2001:2:0:fff::/64")


def benchmark_ranges() -> tuple[IPv4Network, IPv6Network]:
    """The ranges every testbed address must lie in."""
    return IPv4Network("198.18.0.0/15"), IPv6Network("2001:2::/48")


# --- addresses ---------------------------------------------------------------------------------


def client_addr() -> DualAddr:
    return client_net().host(_HIGH)


def lb_client_addr() -> DualAddr:
    """fwc-lb on the client link: the client's default gateway."""
    return client_net().host(_LOW)


def lb_fw_addr(k: int) -> DualAddr:
    """fwc-lb on the link to instance ``k``."""
    return lb_fw_net(k).host(_LOW)


def fw_lb_addr(k: int) -> DualAddr:
    """Instance ``k`` on its link to fwc-lb: fwc-lb's next hop toward the instance."""
    return lb_fw_net(k).host(_HIGH)


def fw_rt_addr(k: int) -> DualAddr:
    """Instance ``k`` on its link to fwc-rt: fwc-rt's next hop toward the instance."""
    return fw_rt_net(k).host(_LOW)


def rt_fw_addr(k: int) -> DualAddr:
    """fwc-rt on the link to instance ``k``."""
    return fw_rt_net(k).host(_HIGH)


def rt_server_addr() -> DualAddr:
    """fwc-rt on the server link: the server's default gateway."""
    return server_net().host(_LOW)


def server_addr() -> DualAddr:
    return server_net().host(_HIGH)


def mgmt_bridge_addr() -> DualAddr:
    """fwc-mgmt's own address on the management bridge (redis and the masters listen here)."""
    return mgmt_net().host(_MGMT_BRIDGE_HOST)


def mgmt_addr(k: int) -> DualAddr:
    """Instance ``k`` on the management network."""
    check_index(k)
    return mgmt_net().host(_MGMT_FIRST_HOST + k)


# --- steering ----------------------------------------------------------------------------------


def steer_mark(k: int) -> int:
    """The packet mark the load balancers give flows bound for instance ``k``."""
    check_index(k)
    return _MARK_BASE + k


def steer_table(k: int) -> int:
    """The policy-routing table (in fwc-lb and fwc-rt) whose default route leads to instance ``k``."""
    check_index(k)
    return _TABLE_BASE + k


def is_benchmark_address(addr: str) -> bool:
    """Does ``addr`` (an address, optionally with a prefix) lie in the benchmark ranges?"""
    ip = ipaddress.ip_interface(addr).ip
    v4, v6 = benchmark_ranges()
    if isinstance(ip, IPv4Address):
        return ip in v4
    assert isinstance(ip, IPv6Address)
    return ip in v6
