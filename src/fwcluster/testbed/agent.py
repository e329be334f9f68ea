"""``python -m fwcluster.testbed.agent``: the provisioning agent's server (see testbed/provision.py).

Each request is carried out by a worker process of its own, in its own session: pyroute2 keeps
per-process netlink and event-loop state that does not survive a second namespace build in one
long-lived process, and building from a process forked off the server hung in pyroute2 under load
(seen, not understood: a fresh interpreter never did). A worker that dies takes nothing of the
agent with it. One worker is kept warm (interpreter started, testbed loaded), so a request does
not wait for an interpreter to start.
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

import fwcluster.testbed.running  # noqa: F401 - loaded before the request comes (scaling with it)
from fwcluster.testbed.provision import AGENT_SOCKET, handle

MAX_REQUEST = 4096
REQUEST_TIMEOUT = 300.0


class _Workers:
    """One warm worker waits, its interpreter started and the testbed loaded: a request goes to it
    at once (about half a second sooner than starting one), and the next worker starts meanwhile.
    Each worker serves one request in its own session and exits."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self._spare = self._start()

    def _start(self) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "fwcluster.testbed.agent", "--run-dir", str(self.run), "--worker"]
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True, close_fds=True,
        )  # fmt: skip

    def carry_out(self, request: dict[str, Any]) -> dict[str, Any]:
        worker, self._spare = self._spare, self._start()
        try:
            out, err = worker.communicate(json.dumps(request) + "\n", timeout=REQUEST_TIMEOUT)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.communicate()
            return {"error": f"{request.get('op')}: no answer after {REQUEST_TIMEOUT:.0f} s"}
        try:
            reply: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            tail = (err.strip().splitlines() or ["no output"])[-1]
            return {"error": f"{request.get('op')} failed: {tail}"}
        return reply

    def close(self) -> None:
        self._spare.kill()
        self._spare.communicate()


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
            reply = self.server.workers.carry_out(request)
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class _Server(socketserver.UnixStreamServer):
    def __init__(self, path: Path, run: Path) -> None:
        self.run = run
        self.workers = _Workers(run)
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
    ap.add_argument(
        "--worker", action="store_true", help="read one JSON request, carry it out, print the reply"
    )
    args = ap.parse_args(argv)
    run = args.run_dir.absolute()
    if args.worker:
        line = sys.stdin.readline()
        try:
            request = json.loads(line)
        except ValueError:
            request = None
        reply = handle(run, request) if isinstance(request, dict) else {"error": "malformed request"}
        print(json.dumps(reply), flush=True)
        return 0
    server = _Server(run / AGENT_SOCKET, run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.workers.close()
        server.server_close()
        (run / AGENT_SOCKET).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
