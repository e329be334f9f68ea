"""Process liveness from /proc, shared by the layers that watch processes (masters, testbed)."""

from __future__ import annotations

import functools
import hashlib
import os
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


@functools.cache
def host_key() -> str:
    """Who can see whose pids: the same kernel boot and the same pid namespace give the same key
    (16 hex digits). A master checks an instance's pid only when their keys match; on another host
    (or in another container) a pid says nothing, and only heartbeats count."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""  # no /proc: nothing is known to be shared
    return hashlib.sha256(f"{boot} {pidns}".encode()).hexdigest()[:16]
