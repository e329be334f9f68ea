"""A steering driver that keeps its table in memory, for master tests against a real redis-server
without namespaces (the system tier runs the real drivers). ``delay`` holds every write for that
long, and ``fault`` makes every call raise it, so tests can interleave writers and break loops."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping

from fwcluster.steering.base import Balancer, Direction, NextHop, SteeringDriver, Target


def targets(*ids: str) -> list[Target]:
    hop = NextHop(dev="fw1", via4="198.18.1.2", via6="2001:2:0:101::2")
    return [Target(id=i, mark=0x100 + k, table=100 + k, hops=(("fwc-lb", hop),)) for k, i in enumerate(ids)]


class MemoryDriver(SteeringDriver):
    kind = "memory"

    def __init__(self, ids: Iterable[str], buckets: int = 8) -> None:
        super().__init__(
            [Balancer("fwc-lb", "client", "forward"), Balancer("fwc-rt", "server", "reverse")],
            buckets,
            targets(*ids),
        )
        self._tables: dict[str, dict[int, str]] = {"forward": {}, "reverse": {}}
        self.writes: list[tuple[str, dict[int, str]]] = []  # (direction, mapping), in the order written
        self.delay = 0.0
        self.fault: Exception | None = None
        self.lock = threading.Lock()
        self.entered = threading.Event()  # set when a write has begun

    def _check(self) -> None:
        if self.fault is not None:
            raise self.fault

    def install(self, targets: Iterable[Target]) -> None:
        for t in targets:
            self._remember(t)

    def uninstall(self) -> None:
        self._tables = {"forward": {}, "reverse": {}}

    def add_target(self, target: Target) -> None:
        self._remember(target)

    def remove_target(self, instance_id: str) -> None:
        self._targets.pop(instance_id, None)

    def assign(self, mapping: Mapping[int, str], direction: Direction = "both") -> None:
        self._check()
        self.entered.set()
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            for d in self.directions() if direction == "both" else (direction,):
                self._tables[d].update(mapping)
                self.writes.append((d, dict(mapping)))

    def unassign(self, buckets: Iterable[int], direction: Direction = "both") -> None:
        self._check()
        for d in self.directions() if direction == "both" else (direction,):
            for b in buckets:
                self._tables[d].pop(b, None)

    def table(self, direction: Direction = "forward") -> dict[int, str]:
        self._check()
        return dict(self._tables["forward" if direction == "both" else direction])

    def tables(self) -> dict[str, dict[int, str]]:
        self._check()
        return {"fwc-lb": self.table("forward"), "fwc-rt": self.table("reverse")}
