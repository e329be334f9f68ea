"""What the kernel holds of the fast path: the flows its conntrack forwards without user space.

The engine marks a flow (``engine.FAST_PATH_MARK``, or ``KERNEL_MARK`` for a flow the kernel
tracks from its first packet on, set with the verdict); the instance namespace's rules
(``testbed/filtering.py``) save that mark in the flow's conntrack entry and forward marked
packets without queueing them. Counting those entries asks the kernel through
ctnetlink (pyroute2), in the namespace the instance runs in; status calls do, never packets.
"""

from __future__ import annotations

from pathlib import Path

from pyroute2 import Conntrack

from fwcluster.engine.engine import FAST_PATH_MARK

CONNTRACK_COUNT = Path("/proc/sys/net/netfilter/nf_conntrack_count")  # per network namespace


def fast_path_flows() -> int | None:
    """Conntrack entries in this namespace carrying the fast-path mark (None: cannot ask). The
    kernel filters the dump by mark, so only those entries are sent and parsed."""
    try:
        with Conntrack() as ct:
            return sum(1 for _ in ct.dump_entries(mark=FAST_PATH_MARK, mark_mask=FAST_PATH_MARK))
    except Exception:  # no conntrack in this kernel, or no permission: unknown, not an error
        return None


def conntrack_entries() -> int | None:
    """All conntrack entries in this namespace, as the kernel counts them (kernel-tracked flows
    among them; counting those by their mark would mean a dump of every one, TIME_WAIT included,
    which at thousands of new flows a second costs the instance more than their packets did)."""
    try:
        return int(CONNTRACK_COUNT.read_text())
    except (OSError, ValueError):
        return None
