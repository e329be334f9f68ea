"""Run tools inside a named network namespace (``ip netns exec``) and enter one from Python.

The steering drivers and the testbed both program kernels in other namespaces; this module is
the one place that runs ``ip netns exec NS ...`` and turns a failure into a one-line error.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

NETNS_RUN_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
# The deadline (time.monotonic()) of the write in progress on this thread, if any: see bounded().
_deadline: ContextVar[float | None] = ContextVar("fwcluster_steering_deadline", default=None)


class CommandError(RuntimeError):
    """A command inside a namespace failed; the message is one line (command and first error line)."""

    def __init__(self, netns: str, argv: Sequence[str], returncode: int, stderr: str) -> None:
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        detail = lines[0] if lines else f"exit status {returncode}"
        super().__init__(f"[{netns}] {' '.join(argv)}: {detail}")
        self.netns = netns
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


def netns_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed so that it runs inside ``netns``."""
    return ["ip", "netns", "exec", netns, *argv]


@contextmanager
def bounded(deadline: float | None) -> Iterator[None]:
    """Inside the block, every command of this thread ends by ``deadline`` (``time.monotonic()``):
    one that would start after it is not run, one that runs past it is killed (CommandError).
    ``None``: no bound beyond each command's own timeout."""
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def run_in(
    netns: str,
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 15.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``netns`` and capture its output; raise CommandError on failure."""
    deadline = _deadline.get()
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CommandError(netns, argv, -1, "not run: the writer's deadline passed")
        timeout = min(timeout, left)
    try:
        proc = subprocess.run(
            netns_argv(netns, argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CommandError(netns, argv, -1, f"no answer within {timeout:g} s") from None
    if check and proc.returncode != 0:
        raise CommandError(netns, argv, proc.returncode, proc.stderr or proc.stdout)
    return proc


def nft(netns: str, script: str) -> None:
    """Apply an nft script (one atomic transaction) inside ``netns``."""
    run_in(netns, ["nft", "-f", "-"], input=script)


def nft_json(netns: str, args: Sequence[str]) -> str:
    """The JSON output of ``nft -j ARGS`` inside ``netns``."""
    return run_in(netns, ["nft", "-j", *args]).stdout


def netns_path(netns: str) -> Path:
    return NETNS_RUN_DIR / netns


def netns_exists(netns: str) -> bool:
    return netns_path(netns).exists()


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def inside(netns: str) -> Iterator[None]:
    """Move the calling thread into ``netns`` for the ``with`` block (sockets and /proc/sys/net follow).

    Sockets opened inside stay in ``netns`` after the block; processes started inside inherit it.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
