"""What the kernel holds of the fast path: the flows its conntrack forwards without user space.

The engine marks a flow (``engine.FAST_PATH_MARK``, set with the verdict); the instance
namespace's rules (``testbed/filtering.py``) save that mark in the flow's conntrack entry and
forward marked packets without queueing them. Counting those entries asks the kernel through
ctnetlink (pyroute2), in the namespace the instance runs in; status calls do, never packets.
"""

from __future__ import annotations

from pyroute2 import Conntrack

from fwcluster.engine.engine import FAST_PATH_MARK


def fast_path_flows() -> int | None:
    """Conntrack entries carrying the fast-path mark in this namespace (None: cannot ask)."""
    try:
        with Conntrack() as ct:
            return sum(1 for _ in ct.dump_entries(mark=FAST_PATH_MARK, mark_mask=FAST_PATH_MARK))
    except Exception:  # no conntrack in this kernel, or no permission: unknown, not an error
        return None
