"""Scale-out racing a failover: an instance that fails while the new ones are provisioned gets no
bucket when the fair shares are computed (the active set is taken anew after provisioning)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from netns_helpers import Builder
from test_admin_api import cli
from test_masters import wait_for
from test_shared_state import config

from fwcluster.testbed import steer_table

pytestmark = pytest.mark.netns


def test_an_instance_that_fails_during_provisioning_gets_no_bucket(testbed: Builder, tmp_path: Path) -> None:
    state = testbed(3, config(tmp_path, "established", "dirty", "async"), start_instances=True)
    result: dict[str, object] = {}

    def scale() -> None:
        p = cli("scale", "5", "--json")
        result.update(rc=p.returncode, out=p.stdout, err=p.stderr)

    t = threading.Thread(target=scale)
    t.start()
    deadline = time.monotonic() + 30
    while not Path("/run/netns/fwc-fw4").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the agent is building the new instances
    assert Path("/run/netns/fwc-fw4").exists()
    pid = state.instance("fw2").pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    (fo,) = wait_for(state, "failover", timeout=5.0)
    assert fo["instance"] == "fw2"
    t.join(120)
    assert result.get("rc") == 0, result
    (scaled,) = wait_for(state, "scaled-out", timeout=5.0)
    assert float(scaled["time"]) > float(fo["time"])  # type: ignore[arg-type]  # the race happened
    doc = json.loads(str(result["out"]))
    assert "fw2" not in doc["active"]
    for table in steer_table().values():
        owners = set(table.values())
        assert "fw2" not in owners, table  # never a share for the failed instance
        assert owners == {"fw1", "fw3", "fw4", "fw5"}
