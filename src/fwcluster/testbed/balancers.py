"""The testbed described in steering's terms: which namespaces balance, and how they reach instances."""

from __future__ import annotations

from fwcluster.steering import Balancer, NextHop, SteeringDriver, Target, make_driver
from fwcluster.testbed import addressing as a
from fwcluster.testbed.state import TestbedState


def balancers() -> list[Balancer]:
    """fwc-lb steers what the client sends, fwc-rt what the server sends."""
    return [
        Balancer(netns=a.LB_NETNS, ingress=a.IF_TO_CLIENT, direction="forward"),
        Balancer(netns=a.RT_NETNS, ingress=a.IF_TO_SERVER, direction="reverse"),
    ]


def target(k: int) -> Target:
    """Instance ``k`` as the balancers reach it."""
    lb_hop = NextHop(dev=a.if_to_fw(k), via4=a.fw_lb_addr(k).ip4, via6=a.fw_lb_addr(k).ip6)
    rt_hop = NextHop(dev=a.if_to_fw(k), via4=a.fw_rt_addr(k).ip4, via6=a.fw_rt_addr(k).ip6)
    return Target(
        id=a.fw_id(k),
        mark=a.steer_mark(k),
        table=a.steer_table(k),
        hops=((a.LB_NETNS, lb_hop), (a.RT_NETNS, rt_hop)),
    )


def driver_for(state: TestbedState) -> SteeringDriver:
    """A driver for the running testbed that knows all its instances (programs nothing by itself)."""
    return make_driver(
        state.steering_kind, balancers(), state.buckets, [target(i.index) for i in state.instances]
    )
