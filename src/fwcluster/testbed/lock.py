"""The testbed lock: one command at a time builds, changes or removes the testbed.

Only one testbed exists at a time (namespace names are global); the lock file ``<run_dir>.lock``
next to the run dir keeps two commands (or a command and the provisioning agent) apart.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fwcluster.filelock import flock_until
from fwcluster.testbed.errors import TestbedError

LOCK_TIMEOUT = 60.0


@contextmanager
def locked(run_dir: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the testbed lock (``<run_dir>.lock``) for the block."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = run_dir.with_name(run_dir.name + ".lock")
    with open(lock, "a") as f:
        if not flock_until(f, time.monotonic() + timeout, 0.05):
            raise TestbedError(f"another testbed command holds {lock}")
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
