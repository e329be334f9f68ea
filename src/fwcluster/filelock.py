"""An exclusive flock taken within a deadline, shared by the layers that serialize on a file
(steering's epoch gate, the testbed lock)."""

from __future__ import annotations

import fcntl
import time
from typing import IO

POLL = 0.005  # seconds between tries while another holder has the lock


def flock_until(f: int | IO[str], deadline: float | None, poll: float = POLL) -> bool:
    """Take an exclusive lock on ``f``, waiting until ``deadline`` (time.monotonic(); None: for
    as long as it takes). False when the deadline passed with the lock still held elsewhere."""
    if deadline is None:
        fcntl.flock(f, fcntl.LOCK_EX)
        return True
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
