"""ECMP steering on the real kernel: resilient nexthop groups, each direction hashed on its own."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_helpers import curl, probe_connections, url

from fwcluster.steering import EcmpDriver, SteeringError
from fwcluster.steering.ecmp import GROUP_ID
from fwcluster.testbed import TestbedState, down, netns_exec, steering_driver, up

pytestmark = pytest.mark.netns

BUCKETS = 32
CONNECTIONS_PER_FAMILY = 50


@pytest.fixture(scope="module")
def ecmp_bed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestbedState]:
    """Three fw namespaces, no instances, direct mode, ecmp steering."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    request.getfixturevalue("_safety_net")
    cfg: Path = tmp_path_factory.mktemp("ecmp") / "ecmp.toml"
    cfg.write_text(f'[steering]\nkind = "ecmp"\nbuckets = {BUCKETS}\n')
    state = up(3, cfg, start_instances=False)
    try:
        yield state
    finally:
        down()


@pytest.fixture
def bed(ecmp_bed: TestbedState) -> Iterator[TestbedState]:
    yield ecmp_bed
    steering_driver(ecmp_bed).spread([i.id for i in ecmp_bed.instances])


def test_kernel_holds_resilient_groups_with_one_slot_per_bucket(bed: TestbedState) -> None:
    driver = steering_driver(bed)
    assert isinstance(driver, EcmpDriver)
    for netns in (bed.lb_netns, bed.rt_netns):
        for family in (4, 6):
            out = netns_exec(
                netns, ["ip", "-j", "-d", "nexthop", "show", "id", str(GROUP_ID[family])], check=True
            )
            group = json.loads(out.stdout)[0]
            assert group["type"] == "resilient"
            assert group["resilient_args"]["buckets"] == BUCKETS
            assert len(group["group"]) == BUCKETS
        for key in ("net.ipv4.fib_multipath_hash_policy", "net.ipv6.fib_multipath_hash_policy"):
            assert netns_exec(netns, ["sysctl", "-n", key], check=True).stdout.strip() == "1"
    tables = driver.direction_tables()
    expected = {b: ("fw1", "fw2", "fw3")[b % 3] for b in range(BUCKETS)}
    assert tables == {"forward": expected, "reverse": expected}


def test_connections_succeed_and_directions_cross_different_instances(bed: TestbedState) -> None:
    fws = [i.netns for i in bed.instances]
    ports, seen = probe_connections(bed, CONNECTIONS_PER_FAMILY)
    crossed = 0
    used_out, used_back = set(), set()
    for fam, fam_ports in ports.items():
        for port in fam_ports:
            out = [ns for ns in fws if port in seen[ns][f"c2s{fam}"]]
            back = [ns for ns in fws if port in seen[ns][f"s2c{fam}"]]
            assert len(out) == 1 and len(back) == 1, f"IPv{fam} port {port}: out {out}, back {back}"
            crossed += out != back
            used_out.add(out[0])
            used_back.add(back[0])
    assert used_out == used_back == set(fws)
    assert crossed >= 10, f"only {crossed} of 100 flows took different instances in the two directions"


def test_assign_in_one_direction_moves_only_that_bucket(bed: TestbedState) -> None:
    driver = steering_driver(bed)
    before = driver.direction_tables()
    bucket = 5
    other = "fw1" if before["forward"][bucket] != "fw1" else "fw2"
    driver.assign({bucket: other}, direction="forward")
    after = driver.direction_tables()
    assert after["forward"] == {**before["forward"], bucket: other}
    assert after["reverse"] == before["reverse"]
    driver.assign({bucket: other}, direction="reverse")
    assert steering_driver(bed).direction_tables()["reverse"] == {**before["reverse"], bucket: other}
    assert curl(bed.client_netns, url(bed, 4)).body == b"x"


def test_unassigned_buckets_drop_and_assign_restores(bed: TestbedState) -> None:
    driver = steering_driver(bed)
    driver.unassign(range(BUCKETS), direction="reverse")
    assert driver.table("reverse") == {}
    assert len(driver.table("forward")) == BUCKETS
    assert not curl(bed.client_netns, url(bed, 4), timeout=1).ok
    driver.assign(dict.fromkeys(range(BUCKETS), "fw3"), direction="reverse")
    assert set(driver.table("reverse").values()) == {"fw3"}
    assert curl(bed.client_netns, url(bed, 6)).body == b"x"


def test_move_spreads_one_instance_over_the_others(bed: TestbedState) -> None:
    driver = steering_driver(bed)
    moved = driver.move("fw1", ["fw2", "fw3"])
    assert set(moved) == {"forward", "reverse"}
    assert sorted(moved["forward"]) == [b for b in range(BUCKETS) if b % 3 == 0]
    assert driver.buckets_of("fw1", "both") == []
    driver.remove_target("fw1")
    assert "fw1" not in driver.targets


def test_bad_requests_are_refused(bed: TestbedState) -> None:
    driver = steering_driver(bed)
    with pytest.raises(SteeringError, match="out of range"):
        driver.assign({BUCKETS: "fw1"})
    with pytest.raises(SteeringError, match="unknown instance"):
        driver.assign({0: "fw9"}, direction="forward")
    with pytest.raises(SteeringError, match="direction"):
        driver.assign({0: "fw1"}, direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(SteeringError, match="still holds buckets"):
        driver.remove_target("fw1")
