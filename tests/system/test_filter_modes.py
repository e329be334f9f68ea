"""The filter modes of the fw namespaces: fwcluster (NFQUEUE, fail closed), kernel, direct."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from netns_helpers import curl, url

from fwcluster.config import parse_config
from fwcluster.testbed import (
    TestbedError,
    TestbedState,
    current_mode,
    load_state,
    netns_exec,
    set_filter_mode,
    set_mode,
)
from fwcluster.testbed.filtering import FilterMode

pytestmark = pytest.mark.netns

OTHER_PORT = 81


@pytest.fixture
def listener_81(bed: TestbedState) -> Iterator[None]:
    """A TCP listener on port 81 (both families) in fwc-server that answers every connection."""
    code = (
        "import socket\n"
        "s = socket.create_server(('::', 81), family=socket.AF_INET6, dualstack_ipv6=True)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    c, _ = s.accept()\n"
        "    c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: 1\\r\\n\\r\\ny')\n"
        "    c.close()\n"
    )
    argv = ["ip", "netns", "exec", bed.server_netns, sys.executable, "-c", code]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()


def _tables(netns: str) -> list[str]:
    out = netns_exec(netns, ["nft", "list", "tables"], check=True).stdout
    return sorted(line.removeprefix("table ").strip() for line in out.splitlines() if line.strip())


@pytest.mark.parametrize("family", [4, 6])
def test_fwcluster_mode_without_a_reader_lets_nothing_pass(bed: TestbedState, family: int) -> None:
    set_mode(FilterMode.FWCLUSTER)
    r = curl(bed.client_netns, url(bed, family), timeout=1)
    assert r.returncode == 28, "the connection should time out, not pass or be refused"
    for inst in bed.instances:
        assert current_mode(inst.netns) is FilterMode.FWCLUSTER


@pytest.mark.usefixtures("listener_81")
def test_kernel_mode_applies_the_configured_rules(bed: TestbedState) -> None:
    assert curl(bed.client_netns, url(bed, 4, "/", OTHER_PORT)).body == b"y"  # reachable in direct mode
    set_mode(FilterMode.KERNEL)
    for family in (4, 6):
        assert curl(bed.client_netns, url(bed, family)).body == b"x"
        r = curl(bed.client_netns, url(bed, family, "/", OTHER_PORT), timeout=1)
        assert r.returncode == 28, f"IPv{family} port {OTHER_PORT} should be dropped by the default policy"
    assert all(i.mode == "kernel" for i in load_state().instances)  # type: ignore[union-attr]


def test_kernel_mode_rejects_with_a_reset(bed: TestbedState) -> None:
    config = parse_config(
        {
            "policy": {"default": "drop"},
            "rules": [
                {"action": "reject", "proto": "tcp", "dport": 82},
                {"action": "accept", "proto": "tcp", "dport": 80},
            ],
        },
        "<test>",
    )
    for inst in bed.instances:
        set_filter_mode(inst.netns, "kernel", config)
    assert curl(bed.client_netns, url(bed, 4)).body == b"x"
    assert curl(bed.client_netns, url(bed, 4, "/", 82), timeout=1).returncode == 7  # refused at once
    assert curl(bed.client_netns, url(bed, 6, "/", 82), timeout=1).returncode == 7
    assert curl(bed.client_netns, url(bed, 4, "/", 83), timeout=1).returncode == 28  # default: drop


def test_switching_modes_replaces_the_previous_rules(bed: TestbedState) -> None:
    fw = bed.instances[0].netns
    set_mode(FilterMode.FWCLUSTER)
    assert _tables(fw) == [
        "inet fwc_guard", "ip filter", "ip mangle", "ip raw", "ip6 filter", "ip6 mangle", "ip6 raw",
    ]  # fmt: skip
    set_mode(FilterMode.KERNEL)
    assert _tables(fw) == ["inet fwc_filter", "inet fwc_guard"]
    set_mode(FilterMode.FWCLUSTER)
    assert _tables(fw) == [
        "inet fwc_guard", "ip filter", "ip mangle", "ip raw", "ip6 filter", "ip6 mangle", "ip6 raw",
    ]  # fmt: skip
    set_mode(FilterMode.DIRECT)
    assert _tables(fw) == ["inet fwc_guard"]
    assert curl(bed.client_netns, url(bed, 4)).body == b"x"


def test_unknown_mode_is_refused(bed: TestbedState) -> None:

    with pytest.raises(TestbedError, match="unknown filter mode"):
        set_mode("open")
