"""Long-lived downloads with checksums, for the shared-state system tests."""

from __future__ import annotations

import hashlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fwcluster.testbed import TestbedState


@dataclass
class Download:
    path: Path
    proc: subprocess.Popen[bytes]


def start_downloads(
    state: TestbedState,
    count: int,
    out: Path,
    url_path: str = "/slow/1M.bin",
    stall_abort: int = 10,
    rate: str | None = None,
    local_ports: tuple[int, int] | None = None,
) -> list[Download]:
    """``count`` curl processes in the client namespace, each fetching ``url_path`` to a file
    (reading at most ``rate`` bytes/s, e.g. "200K": a steady stream); a download that moves no
    data for ``stall_abort`` seconds gives up. ``local_ports``: bind a local port in this range
    (below the ephemeral range, so a capture can tell these downloads from short requests)."""
    out.mkdir(parents=True, exist_ok=True)
    downloads = []
    for i in range(count):
        target = out / f"d{i}.bin"
        argv = ["ip", "netns", "exec", state.client_netns, "curl", "-sS", "--max-time", "60"]
        argv += ["--speed-limit", "1", "--speed-time", str(stall_abort)]
        if rate:
            argv += ["--limit-rate", rate]
        if local_ports:
            argv += ["--local-port", f"{local_ports[0]}-{local_ports[1]}"]
        argv += ["-o", str(target), f"http://{state.server_addr}{url_path}"]
        downloads.append(Download(target, subprocess.Popen(argv, stderr=subprocess.PIPE)))
    return downloads


def wait_established(state: TestbedState, count: int, timeout: float = 15.0) -> None:
    """Wait until ``count`` connections to the server port are established in the client."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = subprocess.run(
            ["ip", "netns", "exec", state.client_netns, "ss", "-Htn", "state", "established"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if len(p.stdout.strip().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} downloads got established within {timeout}s")


def finish(downloads: list[Download], expected_sha256: str, timeout: float = 60.0) -> tuple[int, list[str]]:
    """Wait for every download; (intact count, problems)."""
    intact, problems = 0, []
    deadline = time.monotonic() + timeout
    for d in downloads:
        try:
            rc = d.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait()
            problems.append(f"{d.path.name}: still running at the deadline")
            continue
        err = d.proc.stderr.read().decode().strip() if d.proc.stderr else ""
        digest = hashlib.sha256(d.path.read_bytes()).hexdigest() if d.path.exists() else "missing"
        if rc == 0 and digest == expected_sha256:
            intact += 1
        else:
            problems.append(f"{d.path.name}: curl exit {rc} {err!r}, sha256 {digest[:12]}")
    return intact, problems
