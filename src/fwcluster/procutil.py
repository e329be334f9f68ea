"""Process liveness from /proc, shared by the layers that watch processes (masters, testbed)."""

from __future__ import annotations

from pathlib import Path


def running(pid: int) -> bool:
    """Is ``pid`` a running process? A zombie (dead, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name in parentheses, which may itself hold spaces.
    state = stat[stat.rfind(")") + 2 :][:1]
    return state not in ("Z", "X", "")
