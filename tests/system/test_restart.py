"""restart_instance(): a new process for one instance, same arguments, waited for."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from netns_helpers import Builder

from fwcluster.testbed import InstanceState, load_state, restart_instance
from fwcluster.testbed import instances as instances_mod
from fwcluster.testbed.processes import alive

pytestmark = pytest.mark.netns

STUB = """
import socket, sys
from netfilterqueue import NetfilterQueue
q = NetfilterQueue()
q.bind(int(sys.argv[2]), lambda pkt: pkt.accept())
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(4)
q.run()
"""


def test_restart_instance_replaces_the_process(
    testbed: Builder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stub = tmp_path / "stub.py"
    stub.write_text(STUB)

    def command(inst: InstanceState, config_path: Path, run_dir: Path) -> list[str]:
        return [sys.executable, str(stub), inst.control_socket, str(inst.queue)]

    monkeypatch.setattr(instances_mod, "instance_command", command)
    state = testbed(2, start_instances=True)
    old = state.instance("fw2").pid
    assert old is not None and alive(old)
    new_state = restart_instance("fw2")
    new = new_state.instance("fw2").pid
    assert new is not None and new != old and alive(new) and not alive(old)
    assert new_state.instance("fw1").pid == state.instance("fw1").pid
    recorded = load_state()
    assert recorded is not None and recorded.instance("fw2").pid == new
