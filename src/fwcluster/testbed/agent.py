"""``python -m fwcluster.testbed.agent``: the provisioning agent's server (see testbed/provision.py).

Each request is carried out by a fresh child process (``--request``): pyroute2 keeps per-process
netlink and event-loop state that does not survive a second namespace build in one long-lived
process, and a child that dies takes nothing of the agent with it. The child prints the reply.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socketserver
import subprocess
import sys
from pathlib import Path
from typing import Any

from fwcluster.testbed.provision import AGENT_SOCKET, handle

MAX_REQUEST = 4096
REQUEST_TIMEOUT = 300.0


def _in_child(run: Path, request: dict[str, Any]) -> dict[str, Any]:
    argv = [sys.executable, "-m", "fwcluster.testbed.agent", "--run-dir", str(run)]
    argv += ["--request", json.dumps(request)]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=REQUEST_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"{request.get('op')}: no answer after {REQUEST_TIMEOUT:.0f} s"}
    try:
        reply: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"{request.get('op')} failed: {tail}"}
    return reply


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST)
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            reply: dict[str, Any] = {"error": f"malformed request: {e}"}
        else:
            reply = _in_child(self.server.run, request)
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class _Server(socketserver.UnixStreamServer):
    def __init__(self, path: Path, run: Path) -> None:
        self.run = run
        path.unlink(missing_ok=True)
        old = os.umask(0o177)  # the socket is born 0600: root only
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fwcluster.testbed.agent", description="The testbed's provisioning agent."
    )
    ap.add_argument("--run-dir", type=Path, required=True, help="the testbed's run dir")
    ap.add_argument("--request", help="carry out this one JSON request, print the reply and exit")
    args = ap.parse_args(argv)
    run = args.run_dir.absolute()
    if args.request is not None:
        print(json.dumps(handle(run, json.loads(args.request))))
        return 0
    server = _Server(run / AGENT_SOCKET, run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.server_close()
        (run / AGENT_SOCKET).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
