"""Prometheus metrics of an instance, served over HTTP at ``/metrics``.

Nothing here runs per packet. The datapath keeps its plain counters (``engine/counters.py``,
``statetable/shared.py``); on each scrape a collector takes one snapshot of them
(``Instance.stats()``) and renders it. The snapshot is taken on the instance's event loop (the
thread that mutates the counters), so a scrape sees a consistent picture; if the loop does not
answer within ``SNAPSHOT_TIMEOUT`` the counters are read from the scraping thread instead. The
one metric observed as things happen is the store's write-batch latency histogram: one
``observe()`` per completed batch (not per packet), and only while metrics are on.

Each process has its own ``CollectorRegistry`` (never the global one), so tests can build
several. The HTTP server is prometheus_client's own (``start_http_server``) in a daemon thread.

The shared pieces live here and the master's metrics (``control/metrics.py``) reuse them:
``parse_listen`` (the ``--metrics ADDR:PORT`` flag) and ``MetricsServer``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from threading import Thread
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from fwcluster import eventlog
from fwcluster.core.decision import Reason, Verdict
from fwcluster.statetable.settings import SyncLevel
from fwcluster.statetable.shared import PUBLISHED

if TYPE_CHECKING:
    from fwcluster.instance.process import Instance

log = logging.getLogger("fwcluster.metrics")

PREFIX = "fwcluster_"
SNAPSHOT_TIMEOUT = 1.0  # seconds a scrape waits for the event loop's snapshot
# Store write batches: a pipelined round trip on the management network is ~0.1-1 ms; the upper
# buckets catch a store in trouble (timeouts are store.timeout_ms, 1 s at most by default).
WRITE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


# ---------------------------------------------------------------- the --metrics flag and the server
@dataclass(frozen=True, slots=True)
class ListenAddr:
    """Where ``/metrics`` is served: an IP address (v4 or v6) and a TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str) -> ListenAddr:
    """``ADDR:PORT`` (``198.18.255.11:9100``) or ``[ADDR6]:PORT`` (``[2001:2:0:fff::b]:9100``).

    ADDR is an IP address literal; PORT is 1..65535. Raises ``ValueError`` with a one-line message.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not ADDR:PORT (e.g. 198.18.255.11:9100 or [2001:2::1]:9100)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        want_v6 = True
    elif ":" in host:
        raise ValueError(f"{text!r}: put an IPv6 address in brackets, e.g. [{host}]:{port_text}")
    else:
        want_v6 = False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    if want_v6 and ip.version != 6:
        raise ValueError(f"{text!r}: only IPv6 addresses go in brackets")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: port {port_text!r} is not in 1..65535")
    return ListenAddr(str(ip), int(port_text))


def listen_option(flag: str, text: str | None) -> ListenAddr | None:
    """The address an ``ADDR:PORT`` command-line option gives (None when it is not given);
    ValueError with a one-line message that names the option."""
    if text is None:
        return None
    try:
        return parse_listen(text)
    except ValueError as e:
        raise ValueError(f"{flag}: {e}") from None


class MetricsServer:
    """``/metrics`` of ``registry`` over HTTP, served by a daemon thread.

    Port 0 picks a free port (see ``port``). Raises ``OSError`` when it cannot listen."""

    def __init__(self, addr: ListenAddr, registry: CollectorRegistry) -> None:
        try:
            server, thread = start_http_server(addr.port, addr.host, registry=registry)
        except OSError as e:
            raise OSError(e.errno, f"cannot serve metrics on {addr}: {e.strerror or e}") from None
        self._server: WSGIServer = server
        self._thread: Thread = thread
        self.addr = ListenAddr(addr.host, self.port)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving (blocks up to about half a second: the server's poll interval)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2.0)


# ---------------------------------------------------------------- the instance's metrics
def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _labelled(name: str, doc: str, label: str, values: Mapping[str, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


# Store counters exposed one to one: stats key -> (metric name, help). All counters.
_STORE_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("writes", "store_writes_total", "State changes written to the store."),
    ("write_batches", "store_write_batches_total", "Pipelined write batches the store completed."),
    ("store_errors", "store_errors_total", "Store operations that failed (each may start an outage)."),
    ("conflicts", "store_conflicts_total", "Clean writes the store refused: it held something newer."),
    ("publish_dropped", "store_publish_dropped_total", "Async writes lost to an outage or a full queue."),
    ("replica_lag", "store_replica_lag_total", "Sync batches too few store replicas acknowledged in time."),
    ("outages", "store_outages_total", "Times the store became unreachable."),
    ("reconnects", "store_reconnects_total", "Times the store came back (and the table was resynced)."),
    ("resynced_flows", "store_resynced_flows_total", "Flows written back to the store after an outage."),
    ("snapshot_flows", "store_snapshot_flows_total", "Flows loaded from store snapshots (join, resync)."),
    ("feed_applied", "store_feed_applied_total", "Other instances' changes applied from the feed."),
    ("feed_ignored", "store_feed_ignored_total", "Feed entries ignored (own, superseded or not newer)."),
    ("bulk_loaded", "store_bulk_loaded_total", "Flows loaded from the index of a writer followed anew."),
    ("follow_switches", "store_follow_switches_total", "Writers started or stopped being followed."),
    ("lookups", "store_lookups_total", "Look-ups sent to the store on a local miss."),
    ("lookup_hits", "store_lookup_hits_total", "Look-ups that taught the replica something newer."),
    ("lookup_misses", "store_lookup_misses_total", "Look-ups the store could not answer with a newer flow."),
    (
        "lookup_retries",
        "store_lookup_retries_total",
        "Misses asked again: another instance's write may be in flight.",
    ),
    ("lookup_rate_limited", "store_lookup_rate_limited_total", "Look-ups skipped by the rate bound."),
    (
        "refused_writes",
        "store_refused_writes_total",
        "Writes the store server refused itself (OOM under maxmemory, NOPERM): failed writes.",
    ),
    (
        "lookup_negative_cached",
        "store_lookup_negative_cached_total",
        "Look-ups skipped: the store recently said it does not hold the flow.",
    ),
)


def collect_stats(stats: Mapping[str, Any]) -> Iterator[Metric]:
    """Metric families from one ``Instance.stats()`` snapshot (plus ``heartbeats_failed``)."""
    yield InfoMetricFamily(PREFIX + "instance", "This firewall instance.", value={"id": str(stats["id"])})
    sync = stats["sync"]
    yield InfoMetricFamily(
        PREFIX + "sync",
        "The configured sync knobs: level, access, confirm.",
        value={k: str(sync[k]) for k in ("level", "access", "confirm")},
    )
    # packets and verdicts
    yield _counter("packets_total", "Packets that got a verdict (errors included).", stats["packets"])
    verdicts = stats["verdicts"]
    yield _labelled(
        "verdicts_total",
        "Verdicts given, by verdict.",
        "verdict",
        {v.name.lower(): verdicts.get(v.name.lower(), 0) for v in Verdict},
    )
    reasons = stats["reasons"]
    yield _labelled(
        "packets_by_reason_total",
        "Packets by the reason of their verdict (see core/decision.py Reason).",
        "reason",
        {r.name.lower(): reasons.get(r.name.lower(), 0) for r in Reason},
    )
    yield _counter(
        "invalid_packets_total", "Packets dropped as invalid (malformed included).", stats["invalid"]
    )
    yield _counter("malformed_packets_total", "Packets dropped as malformed.", stats["malformed"])
    yield _counter("packet_errors_total", "Packets dropped because handling them raised.", stats["errors"])
    yield _counter(
        "replies_sent_total", "REJECT answers sent (TCP RST, ICMP unreachable).", stats["replies_sent"]
    )
    yield _counter("replies_failed_total", "REJECT answers that could not be sent.", stats["replies_failed"])
    # flows
    yield _gauge("flows", "Flows in the local table.", stats["flows"])
    yield _gauge("flows_max", "The local flow table's bound (conntrack.max_flows).", stats["max_flows"])
    yield _counter("flows_expired_total", "Flows removed by expiry.", stats["expired"])
    yield _labelled(
        "flows_refused_total",
        "Flows from the store a full table turned away, by source (feed, lookup, load, write).",
        "source",
        stats.get("flows_refused", {}),
    )
    yield _labelled(
        "task_errors_total",
        "Exceptions a long-running task survived (one round failed, the task went on), by task.",
        "task",
        stats.get("task_errors", {}),
    )
    yield _counter(
        "state_changes_total", "Flow state changes decided by this instance.", stats["state_changes"]
    )
    # held packets (sync confirmation, look-ups)
    yield _counter("held_packets_total", "Packets held for the store.", stats["held"])
    yield _gauge("held_packets", "Packets held for the store right now.", stats["held_now"])
    yield _counter(
        "hold_timeouts_total", "Held packets the store did not answer in time.", stats["hold_timeouts"]
    )
    yield _counter(
        "refused_in_outage_total", "New flows refused while the store was down.", stats["refused_in_outage"]
    )
    yield _counter(
        "resolved_by_store_total",
        "Local misses the store resolved (then decided again).",
        stats["resolved_by_store"],
    )
    yield _counter(
        "picked_up_total",
        "TCP flows nobody knew taken on mid-stream just after a failover (Engine.pickup).",
        stats["picked_up"],
    )
    # the driver and the kernel fast path
    yield _counter(
        "user_space_packets_total", "Packets that reached user space (read from the queue).",
        stats["user_space_packets"],
    )  # fmt: skip
    yield _counter("queue_overruns_total", "Times the kernel dropped packets the queue could not take.",
                   stats["queue_overruns"])  # fmt: skip
    yield _counter(
        "verdict_errors_total", "Verdicts the kernel refused (should stay 0).", stats["verdict_errors"]
    )
    fast = stats["fast_path"]
    yield _counter("fast_path_marked_total", "Packets accepted with the fast-path mark.", fast["marked"])
    if fast["flows"] is not None:
        yield _gauge("fast_path_flows", "Flows the kernel forwards on the fast path (counted every 2 s).",
                     fast["flows"])  # fmt: skip
    yield _counter("kernel_tracked_total", "New flows handed to the kernel's conntrack (kernel tracking).",
                   fast["kernel_marked"])  # fmt: skip
    if fast["conntrack_entries"] is not None:
        yield _gauge("conntrack_entries", "Entries in the instance namespace's conntrack table.",
                     fast["conntrack_entries"])  # fmt: skip
    # the log's denied-connection lines (instance/denied.py)
    logged = stats.get("log") or {}
    yield _counter(
        "log_denied_total",
        "Denied new connections logged (at most log.denied_per_second).",
        logged.get("denied_logged", 0),
    )
    yield _counter(
        "log_suppressed_total",
        "Denied-connection log lines the rate limit dropped (counted, not written).",
        logged.get("denied_suppressed", 0),
    )
    # the cluster policy (fwcluster/policy.py)
    policy = stats.get("policy")
    if policy is not None:
        yield _gauge(
            "policy_version",
            "Version of the cluster policy applied (0: the config's rules; -1: none could be read, "
            "no new connection passes).",
            policy["version"],
        )
        yield _counter(
            "policy_records_refused_total",
            "Policy records read from the store that were no valid policy (refused, the applied one kept).",
            policy["refused"],
        )
    # heartbeats (only with a store URL)
    if stats.get("heartbeats") is not None:
        yield _counter("heartbeats_sent_total", "Heartbeats written to the store.", stats["heartbeats"])
        yield _counter(
            "heartbeat_failures_total",
            "Heartbeats that could not be written.",
            stats.get("heartbeats_failed") or 0,
        )
    # the shared table (absent while nothing is shared: sync level none)
    store = stats.get("store")
    if store is None:
        return
    yield _gauge("store_up", "1 while the store is reachable, else 0.", 1 if store["store_up"] else 0)
    yield _gauge("store_pending_writes", "Changes queued for the next write batch.", store["pending"])
    published = dict.fromkeys(sorted(s.name.lower() for s in PUBLISHED[SyncLevel(sync["level"])]), 0)
    published.update(store["published"])
    yield _labelled(
        "published_changes_total",
        "State changes published to the store, by the flow's new state (which ones: sync level).",
        "state",
        published,
    )
    for key, name, doc in _STORE_COUNTERS:
        yield _counter(name, doc, store[key])
    yield _labelled(
        "store_bad_records_total",
        "Records from the store the strict decoder refused (skipped), by source "
        "(feed, lookup, load, write-answer, members).",
        "source",
        store["bad_records"],
    )


class InstanceCollector:
    """A Prometheus collector over a stats source (``Instance.stats()``-shaped)."""

    def __init__(self, source: Callable[[], Mapping[str, Any]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        return collect_stats(self._source())


class InstanceMetrics:
    """An instance's registry: the collector over its counters, the write-latency histogram, the
    process metrics (CPU, memory, file descriptors) and, once ``serve``d, the HTTP endpoint."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.registry = CollectorRegistry()
        self.registry.register(InstanceCollector(self.snapshot))
        ProcessCollector(registry=self.registry)
        self.write_latency: Histogram | None = None
        if instance.table.enabled:
            self.write_latency = Histogram(
                PREFIX + "store_write_batch_seconds",
                "Latency of completed store write batches (one pipelined round trip).",
                registry=self.registry,
                buckets=WRITE_BUCKETS,
            )
            instance.table.observe_write = self.write_latency.observe
        self.server: MetricsServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def read(self) -> dict[str, Any]:
        """The counters, read in the calling thread."""
        inst = self.instance
        hb = inst.heartbeat
        return {**inst.stats(), "heartbeats_failed": hb.failed if hb is not None else None}

    def snapshot(self) -> dict[str, Any]:
        """The counters, read on the instance's event loop when it runs (else here)."""
        loop = self._loop
        if loop is None or not loop.is_running() or _running_loop() is loop:
            return self.read()
        fut: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()

        def on_loop() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(self.read())
            except BaseException as e:
                fut.set_exception(e)

        try:
            loop.call_soon_threadsafe(on_loop)
            return fut.result(SNAPSHOT_TIMEOUT)
        except (TimeoutError, RuntimeError):  # a busy (or closing) loop: read from here
            fut.cancel()
            log.debug(
                "instance %s: metrics snapshot read off the loop",
                self.instance.id,
                extra=eventlog.fields("metrics-off-loop"),
            )
            return self.read()

    def serve(self, addr: ListenAddr) -> MetricsServer:
        """Start ``/metrics`` on ``addr``; call it on the instance's loop. Raises ``OSError``."""
        self._loop = _running_loop()
        self.server = MetricsServer(addr, self.registry)
        log.info(
            "instance %s: metrics on http://%s/metrics",
            self.instance.id,
            self.server.addr,
            extra=eventlog.fields("metrics-listening", addr=str(self.server.addr)),
        )
        return self.server

    def close(self) -> None:
        """Stop the endpoint and the histogram (blocking: call it off the loop)."""
        self.instance.table.observe_write = None
        if self.server is not None:
            self.server.close()
            self.server = None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
