"""Steering: drivers (symmetric, ecmp) that program the load balancers' bucket -> instance table.

Steering knows namespaces, interfaces, next hops and marks; it never imports the testbed.
"""

from fwcluster.steering.base import (
    DIRECTIONS,
    Balancer,
    Direction,
    NextHop,
    OneWay,
    SteeringDriver,
    SteeringError,
    Target,
)
from fwcluster.steering.drivers import DRIVERS, make_driver
from fwcluster.steering.ecmp import EcmpDriver
from fwcluster.steering.symmetric import SymmetricDriver

__all__ = [
    "DIRECTIONS",
    "DRIVERS",
    "Balancer",
    "Direction",
    "EcmpDriver",
    "NextHop",
    "OneWay",
    "SteeringDriver",
    "SteeringError",
    "SymmetricDriver",
    "Target",
    "make_driver",
]
