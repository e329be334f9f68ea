"""Five silent clients on an instance's control socket: the instance keeps forwarding and
answering (the socket is served without ever blocking the loop that runs the datapath)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from netns_helpers import Builder, curl, url
from test_shared_state import all_on, config

from fwcluster.instance.control import query

pytestmark = pytest.mark.netns


def test_silent_control_clients_do_not_stall_the_instance(testbed: Builder, tmp_path: Path) -> None:
    state = testbed(2, config(tmp_path, "established", "dirty", "async"), start_instances=True)
    all_on(state, "fw1")
    fw1 = state.instance("fw1")
    assert curl(state.client_netns, url(state, 4)).body == b"x"
    silent = []
    try:
        for _ in range(5):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(fw1.control_socket)  # and never send a byte
            silent.append(s)
        time.sleep(0.2)
        t0 = time.monotonic()
        for _ in range(5):  # new connections through fw1, each answered
            got = curl(state.client_netns, url(state, 4), timeout=2.0)
            assert got.body == b"x", got
        assert query(fw1.control_socket, {"cmd": "ping"}, timeout=2.0) == {"ok": True}
        took = time.monotonic() - t0
        assert took < 4.0, f"5 downloads and a ping took {took:.2f} s beside 5 silent clients"
    finally:
        for s in silent:
            s.close()
