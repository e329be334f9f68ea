"""The admin API client in front of a hung master: its socket still accepts but it never
answers (SIGSTOP, a stuck loop). A GET gives up on it after READ_TIMEOUT and asks the next
master, and the testbed puts a master whose status file went stale last."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from fwcluster.control import client
from fwcluster.control.client import Endpoint, call
from fwcluster.testbed.masters import api_sockets
from fwcluster.testbed.state import MasterState, TestbedState


class _UnixHTTPServer(HTTPServer):
    address_family = socket.AF_UNIX

    def server_bind(self) -> None:
        self.socket.bind(self.server_address)


class _Leads(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"leader": True}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def sockets(tmp_path: Path) -> Iterator[tuple[str, str]]:
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hung.bind(str(tmp_path / "m1.api.sock"))
    hung.listen(8)  # never accepted: the kernel queues the connection, nobody answers
    server = _UnixHTTPServer(str(tmp_path / "m2.api.sock"), _Leads)  # type: ignore[arg-type]
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield str(tmp_path / "m1.api.sock"), str(tmp_path / "m2.api.sock")
    finally:
        server.shutdown()
        server.server_close()
        hung.close()


def test_a_get_gives_up_on_a_hung_master_and_asks_the_next(
    sockets: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "READ_TIMEOUT", 0.3)
    hung, good = sockets
    t0 = time.monotonic()
    assert call([Endpoint(hung), Endpoint(good)], "GET", "/v1/status") == {"leader": True}
    assert time.monotonic() - t0 < 60  # bounded by READ_TIMEOUT, not the 330 s of a scale call


def _state(tmp_path: Path, masters: list[MasterState]) -> TestbedState:
    return TestbedState(
        run_dir=str(tmp_path), config_path="", instances=[], nginx_pid=None, buckets=64,
        steering_kind="symmetric", client_netns="", server_netns="", lb_netns="", rt_netns="",
        mgmt_netns="", server_addr="", server_addr6="", client_addr="", client_addr6="",
        mgmt_addr="", mgmt_addr6="", http_port=80, created=0.0, masters=masters,
    )  # fmt: skip


def test_the_leader_comes_first_and_a_stale_status_last(tmp_path: Path) -> None:
    docs = {
        "m1": {"leader": True, "updated": time.time() - 30},  # paused while it led
        "m2": {"leader": False, "updated": time.time()},
        "m3": {"leader": True, "updated": time.time()},
    }
    masters = []
    for mid, doc in docs.items():
        status = tmp_path / f"{mid}.master.json"
        status.write_text(json.dumps(doc))
        masters.append(MasterState(id=mid, pid=1, log="", status=str(status)))
    order = [Path(p).name for p in api_sockets(_state(tmp_path, masters))]
    assert order == ["m3.api.sock", "m2.api.sock", "m1.api.sock"]
