"""Per-instance packet counters: one slot per decision reason, cheap to bump on the hot path."""

from __future__ import annotations

from fwcluster.core.decision import ACCEPT_REASONS, INVALID_REASONS, MALFORMED_REASONS, Reason, Verdict


class Counters:
    __slots__ = ("by_reason", "errors", "replies_failed", "replies_sent", "state_changes")

    def __init__(self) -> None:
        self.by_reason = [0] * (max(Reason) + 1)
        self.state_changes = 0
        self.replies_sent = 0
        self.replies_failed = 0
        self.errors = 0  # packets dropped because handling them raised (should stay 0)

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
            "reasons": {r.name.lower(): by[r] for r in Reason if by[r]},
        }
