"""The kernel fast path on the real testbed: established flows forwarded by the kernel, the rest
(handshake, FIN, RST) through the engine; counted in packets that reached user space."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import pytest
from netns_helpers import WEB_RULES, Builder, tcp_counter

from fwcluster.instance.control import query
from fwcluster.testbed import TestbedState

pytestmark = pytest.mark.netns

BIG = "/files/10M.bin"


def config(tmp_path: Path, kind: str, level: str = "full", fast: bool = True, kernel: bool = True) -> Path:
    cfg = tmp_path / f"{kind}-{level}-{kernel}.toml"
    confirm = "sync" if level == "full" else "async"
    access = "clean" if level == "full" else "dirty"
    cfg.write_text(
        f'[sync]\nlevel = "{level}"\naccess = "{access}"\nconfirm = "{confirm}"\n'
        f'[steering]\nkind = "{kind}"\n[datapath]\nfast_path = {str(fast).lower()}\n'
        f"kernel_tracking = {str(kernel).lower()}\n" + WEB_RULES
    )
    return cfg


def segments(state: TestbedState) -> int:
    """TCP segments client and server sent: what crossed the firewall, counted per segment on the
    wire (the links' own packet counters count GRO aggregates of up to 64 KB)."""
    return tcp_counter(state.client_netns, "OutSegs") + tcp_counter(state.server_netns, "OutSegs")


def stats(state: TestbedState) -> dict[str, dict[str, object]]:
    return {i.id: query(i.control_socket, {"cmd": "stats"}) for i in state.instances}


def download(state: TestbedState, path: str, out: Path) -> str:
    p = subprocess.run(
        ["ip", "netns", "exec", state.client_netns, "curl", "-sS", "--max-time", "60", "-o", str(out),
         f"http://{state.server_addr}{path}"],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return hashlib.sha256(out.read_bytes()).hexdigest()


@pytest.mark.parametrize(("kind", "instances"), [("symmetric", 1), ("ecmp", 3)])
def test_a_10mb_download_sends_under_5_percent_of_its_packets_to_user_space(
    testbed: Builder, tmp_path: Path, kind: str, instances: int
) -> None:
    state = testbed(instances, config(tmp_path, kind), start_instances=True)
    download(state, "/index.html", tmp_path / "warm")  # ARP/ND settled, the path known
    before = stats(state)
    seen_before = segments(state)
    # With ECMP, a few downloads: most have their two directions on different instances.
    for n in range(1 if kind == "symmetric" else 4):
        assert download(state, BIG, tmp_path / f"big{n}") == state.files[BIG]
    after = stats(state)
    up = sum(int(after[i]["user_space_packets"]) - int(before[i]["user_space_packets"]) for i in after)  # type: ignore[call-overload]
    total = segments(state) - seen_before
    print(f"{kind}: {up} of {total} packets reached user space ({100 * up / total:.2f}%)")
    assert total > 5000  # 10 MB is thousands of segments
    assert up < 0.05 * total
    assert all(int(s["errors"]) == 0 and int(s["verdict_errors"]) == 0 for s in after.values())  # type: ignore[call-overload]


def test_with_the_fast_path_off_every_packet_reaches_user_space(testbed: Builder, tmp_path: Path) -> None:
    state = testbed(1, config(tmp_path, "symmetric", fast=False), start_instances=True)
    download(state, "/index.html", tmp_path / "warm")
    before = stats(state)["fw1"]
    seen = segments(state)
    assert download(state, "/files/1M.bin", tmp_path / "big") == state.files["/files/1M.bin"]
    up = int(stats(state)["fw1"]["user_space_packets"]) - int(before["user_space_packets"])  # type: ignore[call-overload]
    total = segments(state) - seen
    assert up >= 0.99 * total  # all of them (a last ACK may still be on its way)


def test_a_marked_flow_leaves_the_fast_path_at_its_fin_and_its_close_is_shared(
    testbed: Builder, tmp_path: Path
) -> None:
    state = testbed(1, config(tmp_path, "symmetric"), start_instances=True)
    assert download(state, "/files/1M.bin", tmp_path / "big") == state.files["/files/1M.bin"]
    deadline = time.monotonic() + 15
    while True:
        s = stats(state)["fw1"]
        published = s["store"]["published"]  # type: ignore[index]
        fast = s["fast_path"]  # type: ignore[index]
        # the FIN, its ACK and the second FIN came up: the close went through the engine and
        # was written (full level), and the kernel entry lost its mark
        if published.get("time_wait", 0) >= 1 and fast["marked"] >= 1 and fast["flows"] == 0:
            break
        assert time.monotonic() < deadline, s
        time.sleep(0.2)


def test_at_level_none_the_kernel_tracks_a_flow_after_its_first_packet(
    testbed: Builder, tmp_path: Path
) -> None:
    state = testbed(1, config(tmp_path, "symmetric", level="none"), start_instances=True)
    download(state, "/index.html", tmp_path / "warm")
    before = stats(state)["fw1"]
    for n in range(3):
        assert download(state, BIG, tmp_path / f"big{n}") == state.files[BIG]
    after = stats(state)["fw1"]
    fast = after["fast_path"]  # type: ignore[index]
    up = int(after["user_space_packets"]) - int(before["user_space_packets"])  # type: ignore[call-overload]
    # three connections: their SYNs came up, the kernel tracked the rest
    assert 3 <= up <= 6, after
    assert fast["kernel_tracking"] and fast["kernel_marked"] >= 4 and fast["marked"] == 0
    assert int(after["flows"]) == 0  # type: ignore[call-overload]
    # the rules still decide: a port the rules drop gets nothing through
    p = subprocess.run(
        ["ip", "netns", "exec", state.client_netns, "curl", "-sS", "--max-time", "2",
         f"http://{state.server_addr}:8080/"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert p.returncode != 0
    assert int(stats(state)["fw1"]["reasons"]["rule_drop"]) >= 1  # type: ignore[index]


def test_without_kernel_tracking_level_none_uses_the_fast_path(testbed: Builder, tmp_path: Path) -> None:
    state = testbed(1, config(tmp_path, "symmetric", level="none", kernel=False), start_instances=True)
    assert download(state, "/files/1M.bin", tmp_path / "big") == state.files["/files/1M.bin"]
    fast = stats(state)["fw1"]["fast_path"]  # type: ignore[index]
    assert not fast["kernel_tracking"] and fast["kernel_marked"] == 0 and fast["marked"] >= 1
