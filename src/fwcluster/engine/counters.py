"""Per-instance packet counters, kept by the engine: one slot per final reason (each packet is
counted once, with the reason of its final verdict), cheap to bump on the hot path."""

from __future__ import annotations

from fwcluster.core.decision import ACCEPT_REASONS, INVALID_REASONS, MALFORMED_REASONS, Reason, Verdict

# Where a flow learned from the store comes from (``flows_refused`` counts the ones a full table
# turned away): the feed, a look-up's answer, a snapshot (join, refill, resync), a write's answer
# or a confirmed deferred change.
INSTALL_SOURCES = ("feed", "lookup", "load", "write")


class Counters:
    __slots__ = (
        "by_reason",
        "errors",
        "flows_refused",
        "held",
        "hold_timeouts",
        "kernel_tracked",
        "lookup_hits",
        "lookup_misses",
        "lookup_retries",
        "lookups",
        "picked_up",
        "rebased",
        "refreshed",
        "refreshes",
        "refused_in_outage",
        "renumbered",
        "replies_failed",
        "replies_sent",
        "resolved_by_store",
        "stale_lookups",
        "state_changes",
        "unshared",
        "write_refused",
    )

    def __init__(self) -> None:
        self.by_reason = [0] * (max(Reason) + 1)
        self.state_changes = 0
        self.replies_sent = 0
        self.replies_failed = 0
        self.errors = 0  # packets dropped because handling them raised (should stay 0)
        self.held = 0  # packets held for the store (sync confirmation or a look-up)
        self.hold_timeouts = 0  # held packets the store did not answer in time
        self.refused_in_outage = 0  # new flows refused while the store was unreachable
        self.resolved_by_store = 0  # misses the store resolved (then decided again)
        self.lookups = 0  # packets held while the store was asked about their flow
        self.lookup_hits = 0  # ... and the store knew something newer
        self.lookup_misses = 0  # ... and it did not (each answer counts: a retried one again)
        self.lookup_retries = 0  # misses asked again: the other instance's write may be in flight
        self.write_refused = 0  # clean writes the store refused (it held something newer)
        self.renumbered = 0  # ... an async SYN's, over an earlier life of its four-tuple: written anew
        self.rebased = 0  # ... a concurrent step's, replayed on the store's state (ECMP): written
        self.stale_lookups = 0  # ignored SYN-ACKs on an old copy, asked about (a new life? ECMP)
        self.refreshes = 0  # handshakes seen from one side only: store asked, packet not held
        self.refreshed = 0  # ... and the store knew a newer state (then marked for the kernel)
        self.picked_up = 0  # TCP segments nobody knew taken mid-stream just after a failover
        self.unshared = 0  # changes to share that the store could not take (down): resync later
        self.flows_refused = dict.fromkeys(INSTALL_SOURCES, 0)  # by source: the table was full
        self.kernel_tracked = 0  # new flows handed to the kernel's conntrack (kernel tracking)

    def snapshot(self) -> dict[str, object]:
        by = self.by_reason
        packets = sum(by) + self.errors
        accepted = sum(by[r] for r in ACCEPT_REASONS)
        rejected = by[Reason.RULE_REJECT]
        return {
            "packets": packets,
            "verdicts": {
                Verdict.ACCEPT.name.lower(): accepted,
                Verdict.DROP.name.lower(): packets - accepted - rejected,
                Verdict.REJECT.name.lower(): rejected,
            },
            "invalid": sum(by[r] for r in INVALID_REASONS),
            "malformed": sum(by[r] for r in MALFORMED_REASONS),
            "errors": self.errors,
            "state_changes": self.state_changes,
            "replies_sent": self.replies_sent,
            "replies_failed": self.replies_failed,
            "held": self.held,
            "hold_timeouts": self.hold_timeouts,
            "refused_in_outage": self.refused_in_outage,
            "resolved_by_store": self.resolved_by_store,
            "lookup_retries": self.lookup_retries,
            "picked_up": self.picked_up,
            "write_refused": self.write_refused,
            "renumbered": self.renumbered,
            "stale_lookups": self.stale_lookups,
            "rebased": self.rebased,
            "refreshes": self.refreshes,
            "refreshed": self.refreshed,
            "flows_refused": dict(self.flows_refused),
            "kernel_tracked": self.kernel_tracked,
            "reasons": {r.name.lower(): by[r] for r in Reason if by[r]},
        }
