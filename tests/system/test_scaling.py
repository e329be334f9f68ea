"""Scale out and in at run time, under load: no failed request, only the moved buckets move."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from downloads import finish, start_downloads, wait_established
from netns_helpers import Builder
from test_admin_api import cli, members
from test_shared_state import config

from fwcluster.bench.datapath import loadgen
from fwcluster.steering.balance import fair_share_moves
from fwcluster.testbed import TestbedState, require_state, scale, steer_table
from fwcluster.testbed.masters import master_events

pytestmark = pytest.mark.netns


def _check_moves(
    before: dict[str, dict[int, str]], after: dict[str, dict[int, str]], moved: dict[str, dict[int, str]]
) -> None:
    for direction, table in before.items():
        for bucket, owner in table.items():
            if bucket in moved.get(direction, {}):
                assert after[direction][bucket] == moved[direction][bucket]
            else:
                assert after[direction][bucket] == owner, (direction, bucket)


def _shares(table: dict[int, str]) -> list[int]:
    counts: dict[str, int] = {}
    for owner in table.values():
        counts[owner] = counts.get(owner, 0) + 1
    return sorted(counts.values())


def _scale(via: str, n: int) -> dict[str, dict[int, str]]:
    """Scale through the leading master (CLI -> admin API -> master -> agent) or the testbed itself."""
    if via == "testbed":
        return scale(n)[1]

    p = cli("scale", str(n), "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    return {d: {int(b): i for b, i in m.items()} for d, m in doc["moved"].items()}


@pytest.mark.parametrize("via", ["leader", "testbed"])
def test_scale_3_6_3_under_load(testbed: Builder, tmp_path: Path, via: str) -> None:
    state: TestbedState = testbed(3, config(tmp_path, "full", "clean", "async"), start_instances=True)
    result: dict[str, Any] = {}

    def load() -> None:
        result.update(loadgen(state.client_netns, state.server_addr, 10, 100_000, timeout=5.0, duration=9.0))

    downloads = start_downloads(state, 20, tmp_path / "dl")
    wait_established(state, 20)
    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(1.0)
    before = steer_table()
    moved = _scale(via, 6)
    after = steer_table()
    _check_moves(before, after, moved)
    assert _shares(after["forward"]) == [10, 10, 11, 11, 11, 11]
    assert set(after["forward"].values()) == {f"fw{k}" for k in range(1, 7)}
    if via == "leader":
        assert members(state) == {f"fw{k}": "active" for k in range(1, 7)}
    time.sleep(1.5)
    before = after
    moved = _scale(via, 3)
    after = steer_table()
    _check_moves(before, after, moved)
    assert set(after["forward"].values()) == {"fw1", "fw2", "fw3"}
    state = require_state()
    assert [i.id for i in state.instances] == ["fw1", "fw2", "fw3"]
    if via == "leader":
        assert members(state) == {f"fw{k}": "active" for k in range(1, 4)}
    worker.join(timeout=30)
    assert result["failed"] == 0, result["errors"]
    assert result["completed"] > 1000
    intact, problems = finish(downloads, state.files["/slow/1M.bin"])
    assert intact == 20, problems
    # Leaving on purpose is not failing: no failover.
    assert master_events(state, "failover") == []


def test_fair_share_moves_only_what_it_must() -> None:
    table = {b: ("fw1", "fw2", "fw3")[b % 3] for b in range(64)}
    moves = fair_share_moves(table, ["fw1", "fw2", "fw3", "fw4"])
    assert len(moves) == 16 and set(moves.values()) == {"fw4"}
    new = {**table, **moves}
    assert _shares(new) == [16, 16, 16, 16]
    back = fair_share_moves(new, ["fw1", "fw2", "fw3"])
    assert set(back) == {b for b, o in new.items() if o == "fw4"}  # only fw4's buckets move
    assert fair_share_moves(table, ["fw1", "fw2", "fw3"]) == {}


def test_scaling_below_one_instance_is_refused(testbed: Builder) -> None:
    testbed(1, None, start_instances=True)
    with pytest.raises(Exception, match="at least one active instance"):
        scale(0)
