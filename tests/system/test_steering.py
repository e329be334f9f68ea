"""Symmetric steering on the real kernel: both directions of a flow cross the same instance."""

from __future__ import annotations

import pytest
from netns_helpers import curl, probe_connections, url

from fwcluster.steering import SteeringError, SymmetricDriver
from fwcluster.testbed import TestbedState, netns_exec, steering_driver
from fwcluster.testbed import addressing as a

pytestmark = pytest.mark.netns

CONNECTIONS_PER_FAMILY = 20


def test_spread_covers_every_bucket_round_robin(bed: TestbedState) -> None:
    table = steering_driver(bed).table()
    assert sorted(table) == list(range(bed.buckets))
    assert all(table[b] == ("fw1", "fw2")[b % 2] for b in table)


def test_both_directions_of_each_flow_cross_the_same_instance(bed: TestbedState) -> None:
    fws = [i.netns for i in bed.instances]
    ports, seen = probe_connections(bed, CONNECTIONS_PER_FAMILY)
    used = set()
    for fam, fam_ports in ports.items():
        for port in fam_ports:
            out = [ns for ns in fws if port in seen[ns][f"c2s{fam}"]]
            back = [ns for ns in fws if port in seen[ns][f"s2c{fam}"]]
            assert len(out) == 1, f"IPv{fam} flow from port {port}: client->server crossed {out}"
            assert back == out, f"IPv{fam} flow from port {port}: out via {out}, back via {back}"
            used.add(out[0])
    assert used == set(fws), "40 connections should spread over both instances"


def test_assign_moves_only_the_given_bucket(bed: TestbedState) -> None:
    driver = steering_driver(bed)
    before = driver.table()
    bucket = 5
    other = "fw1" if before[bucket] == "fw2" else "fw2"
    driver.assign({bucket: other})
    after = driver.table()
    assert after[bucket] == other
    assert {b: i for b, i in after.items() if b != bucket} == {b: i for b, i in before.items() if b != bucket}
    assert isinstance(driver, SymmetricDriver)  # the configured kind
    assert all(t == after for t in driver.tables().values()), "fwc-lb and fwc-rt disagree"
    # a second driver (as another process would build it) reads the same table from the kernel
    assert steering_driver(bed).table() == after


def test_table_is_read_from_the_kernel(bed: TestbedState) -> None:
    driver = steering_driver(bed)
    netns_exec(a.LB_NETNS, ["nft", "delete", "element", "inet", "fwc_steer", "buckets", "{ 7 }"], check=True)
    assert 7 not in driver.table()
    assert 7 in driver.tables()[a.RT_NETNS]
    driver.assign({7: "fw1"})
    assert driver.table()[7] == "fw1"
    assert driver.tables()[a.RT_NETNS][7] == "fw1"


def test_unassign_drops_only_those_flows_and_assign_restores_them(bed: TestbedState) -> None:
    driver = steering_driver(bed)
    driver.unassign(range(bed.buckets))
    assert driver.table() == {}
    assert not curl(bed.client_netns, url(bed, 4), timeout=1).ok
    driver.assign(dict.fromkeys(range(bed.buckets), "fw2"))
    assert set(driver.table().values()) == {"fw2"}
    assert curl(bed.client_netns, url(bed, 4)).body == b"x"
    assert curl(bed.client_netns, url(bed, 6)).body == b"x"


def test_bad_requests_are_refused(bed: TestbedState) -> None:
    driver = steering_driver(bed)
    with pytest.raises(SteeringError, match="out of range"):
        driver.assign({bed.buckets: "fw1"})
    with pytest.raises(SteeringError, match="unknown instance"):
        driver.assign({0: "fw9"})
    with pytest.raises(SteeringError, match="still holds buckets"):
        driver.remove_target("fw1")
