"""The conntrackd + keepalived baseline pair (bench failover --baseline conntrackd), for real: a
download through the VIPs survives the crash of the master when conntrackd carries its state.

Own namespaces (fwb-*), not the testbed; still run under the testbed lock like every netns test.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fwcluster.bench.baseline import pairnet, pairtrial
from fwcluster.steering.netns import netns_exists
from fwcluster.testbed.processes import pids_in_netns
from fwcluster.testbed.server import make_docroot

pytestmark = pytest.mark.netns


def test_download_survives_the_crash_of_the_master(tmp_path: Path) -> None:
    pairnet.remove_leftovers()
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    pair = pairnet.Pair(run_dir, pairnet.node_plans(run_dir, 0.1, True))
    out = run_dir / "download"
    with tempfile.TemporaryDirectory(prefix="fwb-test-www-") as www_name:
        www = Path(www_name)
        www.chmod(0o755)
        digest = make_docroot(www / "www")[pairtrial.STREAM]
        try:
            pairnet.build_network(pairtrial.trial_ruleset(tmp_path))
            pair.pids.append(pairnet.start_nginx(run_dir, www, www / "www"))
            pair.start_daemons()
            url = f"http://{pairnet.SERVER_ADDR}{pairtrial.STREAM}"
            argv = ["curl", "-s", "--max-time", "40", "--limit-rate", "1M", "-o", str(out), url]
            curl = subprocess.Popen(["ip", "netns", "exec", pairnet.CLIENT, *argv])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 1 << 20):
                time.sleep(0.05)
            assert out.stat().st_size < pairtrial.STREAM_SIZE, "the download ended before the crash"
            pair.crash("a")
            assert pids_in_netns(pairnet.NODE_A) == []
            assert curl.wait(timeout=60) == 0
            assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
            assert "primary done" in pair.node("b").log.read_text()
        finally:
            pair.close()
    assert not any(netns_exists(ns) for ns in pairnet.ALL_NETNS)
