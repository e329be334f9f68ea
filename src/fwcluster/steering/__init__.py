"""Steering: drivers that program the load balancers' bucket -> instance table.

Steering knows namespaces, interfaces, next hops and marks; it never imports the testbed.
"""

from fwcluster.steering.base import Balancer, NextHop, SteeringDriver, SteeringError, Target
from fwcluster.steering.drivers import DRIVERS, make_driver
from fwcluster.steering.symmetric import SymmetricDriver

__all__ = [
    "DRIVERS",
    "Balancer",
    "NextHop",
    "SteeringDriver",
    "SteeringError",
    "SymmetricDriver",
    "Target",
    "make_driver",
]
