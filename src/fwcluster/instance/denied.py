"""Denied new connections as log lines, rate-limited (``[log] denied_per_second``).

The engine keeps the denied packets of one batch (``Engine.denied``: at most ``denied_room`` of
them, the rest only counted); the instance drains them after every batch (:meth:`DeniedLog.drain`).
A token bucket (``rate`` lines per second, a burst of one second's worth) lets lines through;
the ones it drops are counted (``suppressed``: ``fwcluster_log_suppressed_total``) and summed up
in one ``denied-suppressed`` line at most once per ``SUMMARY_INTERVAL`` while it drops, and once
more when it stops (:meth:`DeniedLog.flush`, from the instance's sweeper). Only a line that goes
out costs a parse and a rule match (to name the rule); a flood costs the engine one list entry
per batch and a counter.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from fwcluster import eventlog
from fwcluster.core.decision import Reason
from fwcluster.core.packet import Parsed, parse
from fwcluster.core.rules import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, RuleSet
from fwcluster.engine.engine import Engine
from fwcluster.tokenbucket import TokenBucket

log = logging.getLogger("fwcluster.instance.denied")

SUMMARY_INTERVAL = 1.0  # seconds between two denied-suppressed lines
ROOM_MAX = 1000  # denied packets the engine keeps between two drains, at most
PROTO_NAMES = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMP: "icmp", PROTO_ICMPV6: "icmpv6"}
# The line's ``reason`` for the engine's reasons (a rule's or the default policy's by the match).
_REASONS = {Reason.TABLE_FULL: "table-full", Reason.OUTAGE: "store-down"}
_VERDICTS = {Reason.RULE_REJECT: "reject"}


def describe(reason: Reason, buf: bytes, ruleset: RuleSet) -> dict[str, Any]:
    """The fields of a ``denied`` line: the 5-tuple (ICMP: type and code), the verdict, and the
    reason: ``rule`` (``rule`` is the 1-based index of the ``[[rules]]`` entry that matched),
    ``default`` (the default policy; ``rule`` null), ``table-full`` or ``store-down``."""
    doc: dict[str, Any] = {"verdict": _VERDICTS.get(reason, "drop")}
    p = parse(buf)
    if not isinstance(p, Parsed):  # the engine denies only parsed packets; kept safe all the same
        doc["reason"] = _REASONS.get(reason, reason.name.lower())
        return doc
    proto = p.proto
    doc["proto"] = PROTO_NAMES.get(proto, str(proto))
    doc["src"] = str(ipaddress.ip_address(p.src))
    doc["dst"] = str(ipaddress.ip_address(p.dst))
    if proto in (PROTO_TCP, PROTO_UDP):
        doc["sport"] = p.sport
        doc["dport"] = p.dport
    else:
        doc["icmp_type"] = p.flags
        doc["icmp_code"] = buf[p.l4 + 1] if len(buf) > p.l4 + 1 else None
    if reason in _REASONS:
        doc["reason"] = _REASONS[reason]
        return doc
    _, index = ruleset.evaluate(
        proto, p.version, int.from_bytes(p.src), int.from_bytes(p.dst), p.sport, p.dport
    )
    doc["reason"] = "rule" if index >= 0 else "default"
    doc["rule"] = index + 1 if index >= 0 else None
    return doc


class DeniedLog:
    """The engine's denied packets to ``denied`` lines, at most ``rate`` a second (0: off)."""

    def __init__(self, engine: Engine, rate: int, now: float) -> None:
        self.engine = engine
        self.rate = rate
        self.bucket = TokenBucket(rate, max(1, rate), now)
        self.logged = 0  # lines written
        self.suppressed = 0  # lines the limit dropped (all along)
        self._pending = 0  # ... since the last summary line
        self._summary_at = float("-inf")
        engine.log_denied = rate > 0
        self._set_room(now)

    def _set_room(self, now: float) -> None:
        # At least one, so the first denial after a quiet spell is seen while the bucket refills.
        self.engine.denied_room = max(1, min(ROOM_MAX, self.bucket.available(now)))

    def drain(self, now: float) -> None:
        """After a batch: a line for each denial the bucket lets through, the rest counted."""
        engine = self.engine
        if engine.denied:
            for reason, buf in engine.denied:
                if self.bucket.take(now):
                    self._line(reason, buf)
                else:
                    self._suppress(1)
            engine.denied.clear()
        if engine.denied_skipped:
            self._suppress(engine.denied_skipped)
            engine.denied_skipped = 0
        self._set_room(now)
        if self._pending:
            self.flush(now)

    def _line(self, reason: Reason, buf: bytes) -> None:
        try:
            fields = describe(reason, buf, self.engine.firewall.ruleset)  # the rules in force now
        except Exception as e:  # a line lost, never the batch
            fields = {"reason": reason.name.lower(), "error": f"{type(e).__name__}: {e}"}
        self.logged += 1
        log.info("denied new connection", extra=eventlog.fields("denied", **fields))

    def _suppress(self, n: int) -> None:
        self.suppressed += n
        self._pending += n

    def flush(self, now: float) -> None:
        """The ``denied-suppressed`` line, if lines were dropped and the last one is a second old."""
        if self._pending and now - self._summary_at >= SUMMARY_INTERVAL:
            log.warning(
                "%d denied connections not logged (over log.denied_per_second = %d)",
                self._pending,
                self.rate,
                extra=eventlog.fields("denied-suppressed", count=self._pending, limit=self.rate),
            )
            self._pending = 0
            self._summary_at = now
