"""The conntrackd + keepalived baseline pair (bench failover --baseline conntrackd), for real: the
20 streams of bench failover through the VIPs survive the crash of the master when conntrackd
carries their state.

Own namespaces (fwb-*), not the testbed; still run under the testbed lock like every netns test.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from fwcluster.bench.baseline import pairnet, pairtrial
from fwcluster.bench.failover import Streams
from fwcluster.steering.netns import netns_exists
from fwcluster.testbed.processes import pids_in_netns
from fwcluster.testbed.server import make_docroot

pytestmark = pytest.mark.netns


def test_download_survives_the_crash_of_the_master(tmp_path: Path) -> None:
    pairnet.remove_leftovers()
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    pair = pairnet.Pair(run_dir, pairnet.node_plans(run_dir, 0.1, True))
    with tempfile.TemporaryDirectory(prefix="fwb-test-www-") as www_name:
        www = Path(www_name)
        www.chmod(0o755)
        digest = make_docroot(www / "www")[pairtrial.STREAM]
        try:
            pairnet.build_network(pairtrial.trial_ruleset(tmp_path))
            pair.pids.append(pairnet.start_nginx(run_dir, www, www / "www"))
            pair.start_daemons()
            # the streams of bench failover (bench/stream.py): 20 downloads, 5 s each, steady
            streams = Streams(pairnet.CLIENT, pairnet.SERVER_ADDR, digest)
            time.sleep(1.5)  # well inside every download
            pair.crash("a")
            assert pids_in_netns(pairnet.NODE_A) == []
            assert streams.lost() == 0
            assert "primary done" in pair.node("b").log.read_text()
        finally:
            pair.close()
    assert not any(netns_exists(ns) for ns in pairnet.ALL_NETNS)
