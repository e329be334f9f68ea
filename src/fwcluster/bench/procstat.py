"""CPU time of a process from ``/proc/<pid>/stat`` (utime + stime), for CPU-per-unit figures."""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far, in seconds; OSError if it is gone."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # the command name (field 2) may hold spaces and parentheses: split after the last ")"
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK
