"""Find and stop the testbed's processes: by namespace (``ip netns pids``) and by recorded pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from fwcluster.procutil import running
from fwcluster.steering.netns import netns_path


def _ns_id(path: str | Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in_netns(netns: str) -> list[int]:
    """The processes whose network namespace is ``netns`` (what ``ip netns pids`` prints)."""
    want = _ns_id(netns_path(netns))
    if want is None:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _ns_id(f"/proc/{entry}/ns/net") == want:
            found.append(int(entry))
    return sorted(found)


def netns_of(pid: int) -> tuple[int, int] | None:
    return _ns_id(f"/proc/{pid}/ns/net")


def alive(pid: int) -> bool:
    """Is ``pid`` a running process (a zombie counts as gone; our own zombie children are reaped)?"""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return running(pid)


def spawn_detached(argv: list[str], log: str | Path, umask: int = -1) -> subprocess.Popen[bytes]:
    """Start a daemon of the testbed: own session, no stdin, stdout and stderr appended to ``log``,
    no inherited descriptors, our environment; ``umask`` (e.g. 0o077) for the files it writes."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=os.environ.copy(),
            umask=umask,
        )


def all_pids() -> list[int]:
    """Every process id on the host (from /proc)."""
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def terminate(pids: Iterable[int], grace: float = 3.0) -> None:
    """SIGTERM the processes, wait up to ``grace`` seconds, then SIGKILL the rest and wait for them."""
    todo = {p for p in pids if p > 1 and p != os.getpid()}
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in todo:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while True:
            todo = {p for p in todo if alive(p)}
            if not todo or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        if not todo:
            return
