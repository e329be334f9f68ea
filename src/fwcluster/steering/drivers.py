"""Pick the steering driver for a configured kind."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fwcluster.steering.base import Balancer, SteeringDriver, SteeringError, Target
from fwcluster.steering.ecmp import EcmpDriver
from fwcluster.steering.symmetric import SymmetricDriver

DRIVERS: dict[str, type[SteeringDriver]] = {
    SymmetricDriver.kind: SymmetricDriver,
    EcmpDriver.kind: EcmpDriver,
}


def make_driver(
    kind: str, balancers: Sequence[Balancer], buckets: int, targets: Iterable[Target] = ()
) -> SteeringDriver:
    """The driver for ``kind`` (``symmetric`` or ``ecmp``) knowing ``targets``; programs nothing yet."""
    try:
        cls = DRIVERS[kind]
    except KeyError:
        raise SteeringError(f"unknown steering kind {kind!r} (known: {', '.join(DRIVERS)})") from None
    return cls(balancers, buckets, targets)
