"""Prometheus metrics of a master, served over HTTP at ``/metrics`` (see instance/metrics.py for
the flag and the server they share).

Events are counted as they happen (failovers, leadership changes: a handful an hour, nothing on
a hot path); the state (leader or not, epoch, instances failed) is read from the master on each
scrape. Each master has its own ``CollectorRegistry``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric

from fwcluster.instance.metrics import PREFIX

if TYPE_CHECKING:
    from fwcluster.control.master import Master

FAILURE_REASONS = ("heartbeat", "process-gone", "stopped")  # why a master fails an instance over
FAILOVER_ERRORS = ("no-healthy-instance", "steering-refused")
BAD_RECORD_SOURCES = ("leader", "epoch", "heartbeat", "registration", "member")
TASKS = ("lease", "watch", "status")  # the master's loops: one failed iteration is counted, not fatal


class MasterCollector:
    """The master's state, read on each scrape (single attribute reads: safe from any thread)."""

    def __init__(self, master: Master) -> None:
        self._master = master

    def collect(self) -> Iterator[Metric]:
        m = self._master
        epoch = m.epoch
        leading = epoch is not None
        yield InfoMetricFamily(PREFIX + "master", "This master.", value={"id": m.id})
        yield GaugeMetricFamily(
            PREFIX + "master_leader",
            "1 while this master holds the leader lease, else 0.",
            value=int(leading),
        )
        yield GaugeMetricFamily(
            PREFIX + "master_epoch",
            "The fencing epoch of this master's lease while it leads, else 0.",
            value=epoch if epoch is not None else 0,
        )
        yield GaugeMetricFamily(
            PREFIX + "master_instances_failed",
            "Instances the leader holds as failed (0 on a master that does not lead).",
            value=len(m.failed) if leading else 0,
        )


class MasterMetrics:
    """A master's registry: event counters, the state collector and the process metrics."""

    def __init__(self, master: Master) -> None:
        self.registry = CollectorRegistry()
        self.failovers = Counter(
            PREFIX + "master_failovers",
            "Failovers done by this master (buckets moved off a failed instance), by why it failed.",
            ["reason"],
            registry=self.registry,
        )
        self.failover_errors = Counter(
            PREFIX + "master_failover_errors",
            "Failed instances whose buckets could not be moved, by why it failed and what stopped it.",
            ["reason", "error"],
            registry=self.registry,
        )
        self.leader_changes = Counter(
            PREFIX + "master_leader_changes",
            "Times this master became leader (to=leader) or lost the lease (to=follower).",
            ["to"],
            registry=self.registry,
        )
        self.bad_records = Counter(
            PREFIX + "master_bad_records",
            "Records read from the store that were not what they should be (skipped or replaced), by source.",
            ["source"],
            registry=self.registry,
        )
        self.task_errors = Counter(
            PREFIX + "master_task_errors",
            "Iterations of a master loop that failed with an unexpected error (the loop goes on).",
            ["task"],
            registry=self.registry,
        )
        for source in BAD_RECORD_SOURCES:
            self.bad_records.labels(source)
        for task in TASKS:
            self.task_errors.labels(task)
        for reason in FAILURE_REASONS:  # every series exists from the start, at 0
            self.failovers.labels(reason)
            for error in FAILOVER_ERRORS:
                self.failover_errors.labels(reason, error)
        for to in ("leader", "follower"):
            self.leader_changes.labels(to)
        self.registry.register(MasterCollector(master))
        ProcessCollector(registry=self.registry)

    def leadership(self, leading: bool) -> None:
        self.leader_changes.labels("leader" if leading else "follower").inc()

    def failover(self, reason: str) -> None:
        self.failovers.labels(reason).inc()

    def failover_error(self, reason: str, error: str) -> None:
        self.failover_errors.labels(reason, error).inc()

    def bad_record(self, source: str) -> None:
        self.bad_records.labels(source).inc()

    def task_error(self, task: str) -> None:
        self.task_errors.labels(task).inc()
