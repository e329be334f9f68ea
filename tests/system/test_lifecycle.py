"""Bringing the testbed up and down: idempotence, failures, crashed runs, instance processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from netns_helpers import Builder, curl, url

from fwcluster.config import ConfigError
from fwcluster.testbed import DEFAULT_RUN_DIR, InstanceState, TestbedError, down, load_state
from fwcluster.testbed import instances as instances_mod
from fwcluster.testbed.filtering import FilterMode, current_mode
from fwcluster.testbed.processes import alive, pids_in_netns
from fwcluster.testbed.topology import existing_netns

pytestmark = pytest.mark.netns

# A stand-in instance: accepts every queued packet, then signals readiness with its socket.
STUB_INSTANCE = textwrap.dedent(
    """
    import socket, sys
    from netfilterqueue import NetfilterQueue
    sock_path, queue = sys.argv[1], int(sys.argv[2])
    q = NetfilterQueue()
    q.bind(queue, lambda pkt: pkt.accept())
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock_path)
    s.listen(4)
    print("stub ready", flush=True)
    q.run()
    """
)


def test_down_twice_and_with_nothing_up(testbed: Builder) -> None:
    testbed(2)
    down()
    down()
    assert existing_netns() == []
    assert load_state() is None
    assert not any(DEFAULT_RUN_DIR.iterdir())
    assert (
        "fwc-"
        not in subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True).stdout
    )


def test_up_with_three_instances_is_fast(testbed: Builder) -> None:
    t0 = time.monotonic()
    state = testbed(3)
    assert time.monotonic() - t0 < 5.0
    assert [i.id for i in state.instances] == ["fw1", "fw2", "fw3"]
    assert curl(state.client_netns, url(state, 4)).body == b"x"


def test_up_twice_is_refused_and_leaves_the_first_intact(testbed: Builder) -> None:
    state = testbed(1)
    with pytest.raises(TestbedError, match="already up"):
        testbed(1)
    assert load_state() == state
    assert curl(state.client_netns, url(state, 6)).body == b"x"


def test_bad_config_creates_nothing(testbed: Builder, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[sync]\nlevel = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"sync\.level"):
        testbed(1, bad)
    with pytest.raises(ConfigError, match="no such config file"):
        testbed(1, tmp_path / "missing.toml")
    assert existing_netns() == []
    assert load_state() is None


@pytest.mark.parametrize("n", [0, 33])
def test_instance_count_is_checked(testbed: Builder, n: int) -> None:
    with pytest.raises(TestbedError, match=r"1\.\.32"):
        testbed(n)
    assert existing_netns() == []


def test_unknown_mode_creates_nothing(testbed: Builder) -> None:
    with pytest.raises(TestbedError, match="unknown filter mode 'open'"):
        testbed(1, mode="open")
    assert existing_netns() == []


def test_config_is_copied_into_the_run_dir(testbed: Builder, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[steering]\nbuckets = 16\n")
    state = testbed(1, cfg)
    assert Path(state.config_path) == DEFAULT_RUN_DIR / "config.toml"
    assert Path(state.config_path).read_text() == cfg.read_text()
    assert state.buckets == 16


def test_down_cleans_up_after_a_crashed_run(testbed: Builder) -> None:
    state = testbed(1)
    stray = subprocess.Popen(["ip", "netns", "exec", state.client_netns, "sleep", "60"])
    (DEFAULT_RUN_DIR / "testbed.json").unlink()  # as if the process that built it had died
    time.sleep(0.1)
    assert stray.pid in pids_in_netns(state.client_netns)
    down()
    assert stray.wait(timeout=5) is not None
    assert existing_netns() == []


def _use_stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, code: str) -> None:
    stub = tmp_path / "stub_instance.py"
    stub.write_text(code)

    def command(inst: InstanceState, config_path: Path, run_dir: Path) -> list[str]:
        return [sys.executable, str(stub), inst.control_socket, str(inst.queue)]

    monkeypatch.setattr(instances_mod, "instance_command", command)


def test_instances_are_started_and_waited_for(
    testbed: Builder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use_stub(monkeypatch, tmp_path, STUB_INSTANCE)
    state = testbed(2, start_instances=True)
    for inst in state.instances:
        assert inst.pid is not None and alive(inst.pid)
        assert inst.pid in pids_in_netns(inst.netns)
        assert Path(inst.control_socket).exists()
        assert current_mode(inst.netns) is FilterMode.FWCLUSTER
        assert inst.mode == "fwcluster"
        assert "stub ready" in Path(inst.log).read_text()
    # the stub readers accept everything: traffic passes through NFQUEUE
    assert curl(state.client_netns, url(state, 4)).body == b"x"
    assert curl(state.client_netns, url(state, 6)).body == b"x"
    pids = [i.pid for i in state.instances if i.pid is not None]
    down()
    assert not any(alive(p) for p in pids)


def test_an_instance_that_dies_fails_up_and_everything_is_torn_down(
    testbed: Builder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use_stub(
        monkeypatch, tmp_path, "import sys\nprint('cannot bind the queue', file=sys.stderr)\nsys.exit(1)\n"
    )
    with pytest.raises(TestbedError, match="fw1 exited during start-up: cannot bind the queue"):
        testbed(1, start_instances=True)
    assert existing_netns() == []
    assert load_state() is None
    assert (DEFAULT_RUN_DIR / "fw1.log").exists()  # kept for the post-mortem


def test_real_instances_filter_the_traffic(testbed: Builder) -> None:
    state = testbed(2, start_instances=True)
    assert all(i.pid is not None and alive(i.pid) for i in state.instances)
    for family in (4, 6):
        assert curl(state.client_netns, url(state, family)).body == b"x"
        assert curl(state.client_netns, url(state, family, "/", 22), timeout=1).returncode == 28
