"""Live packet capture in a testbed namespace, time-stamped on arrival in user space.

Why not the kernel's capture timestamps: a forwarded packet keeps the timestamp it got elsewhere,
and TCP sets its own departure time (in the monotonic clock) on what it sends, so pcap times of
packets that crossed namespaces are not wall-clock times of the moment the capture saw them.
tcpdump in immediate, line-buffered mode prints each packet as it comes; a reader thread stamps
each line with ``time.time()`` when it arrives. That adds the print-and-read delay (about a
millisecond, more on a loaded machine), so every time measured from these stamps is an upper bound.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import threading
import time
from typing import NamedTuple

START_TIMEOUT = 5.0


class Seen(NamedTuple):
    t: float  # unix time the line reached us
    src: str  # "198.18.0.2.55414"
    dst: str  # "198.19.0.2.80"
    kt: float = math.nan  # the kernel's capture timestamp (tcpdump -tt), when it can be trusted

    def at(self, kernel: bool) -> float:
        """``kt`` with ``kernel`` where it is a wall-clock time (within a second of ``t``), else
        ``t``: gaps between arrival stamps also measure how late the reader thread ran."""
        return self.kt if kernel and abs(self.kt - self.t) < 1.0 else self.t


class LiveCapture:
    """``tcpdump -i any`` in ``netns`` with a BPF filter; ``direction`` "out" keeps only packets the
    namespace sends (for a firewall instance: what it forwarded)."""

    def __init__(self, netns: str, bpf: str, direction: str = "inout") -> None:
        argv = ["ip", "netns", "exec", netns, "tcpdump", "-Z", "root", "-l", "-n", "-tt", "-i", "any"]
        argv += ["-Q", direction, "--immediate-mode", "-B", "8192", bpf]  # 8 MB: no drops in a burst
        self.netns = netns
        self.seen: list[Seen] = []
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._wait_listening, daemon=True).start()
        if not self._ready.wait(START_TIMEOUT):
            self._proc.kill()
            raise RuntimeError(f"tcpdump did not start in {netns}")

    def _wait_listening(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            if "listening" in line:
                self._ready.set()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            now = time.time()
            parts = line.split()
            try:
                gt = parts.index(">")
                self.seen.append(Seen(now, parts[gt - 1], parts[gt + 1].rstrip(":"), float(parts[0])))
            except (ValueError, IndexError):
                continue

    def stop(self) -> list[Seen]:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        return list(self.seen)


def flows(seen: list[Seen], before: float) -> set[frozenset[str]]:
    """The connections (as unordered endpoint pairs) seen before ``before``."""
    return {frozenset((s.src, s.dst)) for s in seen if s.t < before}


def first_of(seen: list[Seen], wanted: set[frozenset[str]], after: float) -> float | None:
    """When the first packet of one of ``wanted``'s connections was seen after ``after``."""
    times = [s.t for s in seen if s.t >= after and frozenset((s.src, s.dst)) in wanted]
    return min(times) if times else None


def longest_silence(
    seen: list[Seen], start: float, end: float, *, to_end: bool = False, kernel: bool = False
) -> float:
    """The longest time without a packet on any one connection, within [start, end] (seconds).

    ``kernel``: by the kernel's capture timestamps (see :meth:`Seen.at`): right for packets the
    namespace receives (the client), where the arrival stamps add the reader's own delays (on
    the loaded 2-core machine, gaps of 150-280 ms on the stamps were 30 ms on the wire).

    ``to_end``: the connections are known to run past ``end`` (streams longer than the window), so
    the time from a connection's last packet to ``end`` is a silence too (a stream that stopped
    for good shows as one, not as nothing). The capture should hold only such connections: a
    port that comes back for another connection makes the time between the two read as silence.
    """
    by_flow: dict[frozenset[str], list[float]] = {}
    for s in seen:
        t = s.at(kernel)
        if start <= t <= end:
            by_flow.setdefault(frozenset((s.src, s.dst)), []).append(t)
    gaps = [b - a for times in by_flow.values() for a, b in itertools.pairwise(sorted(times))]
    if to_end:
        gaps += [end - max(times) for times in by_flow.values()]
    return max(gaps, default=0.0)
