"""The instance's control socket never blocks the event loop that also runs the datapath: silent
clients cost no loop time, and every other client is answered meanwhile. Driven as the instance
drives it (``loop.add_reader(server.fileno(), server.handle)``), on a real Unix socket."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

from fwcluster.instance import control
from fwcluster.instance.control import ControlServer, query


def test_five_silent_clients_do_not_stall_the_loop_or_the_answers(tmp_path: Path) -> None:
    path = tmp_path / "fw1.sock"

    async def scenario() -> tuple[float, list[dict[str, Any]], float]:
        loop = asyncio.get_running_loop()
        server = ControlServer(path, lambda req: {"ok": True, "cmd": req.get("cmd")})
        loop.add_reader(server.fileno(), server.handle)
        gaps: list[float] = []

        async def ticker() -> None:  # stands for the datapath: it must keep running
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        silent = []
        for _ in range(5):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect(str(path))
            silent.append(s)
        await asyncio.sleep(0.3)  # the server has accepted them; they send nothing
        t0 = time.monotonic()
        answers = [await asyncio.to_thread(query, path, {"cmd": "ping"}, 5.0) for _ in range(3)]
        took = time.monotonic() - t0
        await asyncio.sleep(0.5)
        tick.cancel()
        loop.remove_reader(server.fileno())
        server.close()
        for s in silent:
            s.close()
        return max(gaps), answers, took

    worst_gap, answers, took = asyncio.run(scenario())
    assert answers == [{"ok": True, "cmd": "ping"}] * 3
    assert took < 1.0, f"three answers took {took:.2f} s beside five silent clients"
    assert worst_gap < 0.5, f"the loop stalled for {worst_gap:.2f} s"


def test_a_silent_client_gets_a_timeout_answer_and_a_bad_request_a_one_line_error(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(control, "REQUEST_TIMEOUT", 0.2)
    path = tmp_path / "fw1.sock"

    async def scenario() -> tuple[bytes, dict[str, Any], dict[str, Any]]:
        loop = asyncio.get_running_loop()
        server = ControlServer(path, lambda req: {"ok": True})
        loop.add_reader(server.fileno(), server.handle)
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(path))
            s.settimeout(5)
            silent = await asyncio.to_thread(s.recv, 4096)  # closed with an answer after the timeout
            s.close()

            def ask_raw(data: bytes) -> dict[str, Any]:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                    c.settimeout(5)
                    c.connect(str(path))
                    c.sendall(data)
                    answer: dict[str, Any] = json.loads(c.recv(65536))
                    return answer

            deep = await asyncio.to_thread(ask_raw, b"[" * 100_000 + b"\n")
            not_object = await asyncio.to_thread(ask_raw, b"[1]\n")
            return silent, deep, not_object
        finally:
            loop.remove_reader(server.fileno())
            server.close()

    silent, deep, not_object = asyncio.run(scenario())
    assert "no request within" in json.loads(silent)["error"]
    assert "error" in deep and "\n" not in deep["error"]
    assert not_object == {"error": "request must be a JSON object"}
