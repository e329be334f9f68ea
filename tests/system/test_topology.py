"""The namespaces, links and addresses of the testbed, with plain forwarding (no instance)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess

import pytest
from netns_helpers import curl, url

from fwcluster.testbed import TestbedState, load_state, netns_exec, steering_driver
from fwcluster.testbed import addressing as a
from fwcluster.testbed.topology import existing_netns

pytestmark = pytest.mark.netns


def _json(netns: str, argv: list[str]) -> list[dict[str, object]]:
    out = netns_exec(netns, argv, check=True).stdout
    data: list[dict[str, object]] = json.loads(out) if out.strip() else []
    return data


@pytest.mark.parametrize("family", [4, 6])
def test_client_fetches_the_one_byte_index(bed: TestbedState, family: int) -> None:
    r = curl(bed.client_netns, url(bed, family))
    assert r.ok, f"curl exit {r.returncode}"
    assert r.body == b"x"


def test_large_file_arrives_intact(bed: TestbedState) -> None:
    r = curl(bed.client_netns, url(bed, 6, "/files/1M.bin"), timeout=5)
    assert r.ok
    assert hashlib.sha256(r.body).hexdigest() == bed.files["/files/1M.bin"]


def test_state_file_describes_the_testbed(bed: TestbedState) -> None:
    state = load_state()
    assert state == bed
    assert (state.client_netns, state.server_netns) == ("fwc-client", "fwc-server")
    assert (state.server_addr, state.server_addr6, state.http_port) == ("198.19.0.2", "2001:2:0:300::2", 80)
    assert [i.id for i in state.instances] == ["fw1", "fw2"]
    assert [i.netns for i in state.instances] == ["fwc-fw1", "fwc-fw2"]
    assert [i.mgmt_addr for i in state.instances] == ["198.18.255.11", "198.18.255.12"]
    assert all(i.pid is None and i.mode == "direct" for i in state.instances)
    assert (state.buckets, state.steering_kind) == (64, "symmetric")


def test_every_namespace_exists_and_nothing_else(bed: TestbedState) -> None:
    assert sorted(existing_netns()) == sorted(a.all_netns(2))


def test_every_address_is_in_the_benchmark_ranges(bed: TestbedState) -> None:
    seen = 0
    for ns in existing_netns():
        for link in _json(ns, ["ip", "-j", "addr", "show"]):
            for info in link.get("addr_info", []):  # type: ignore[attr-defined]
                addr = ipaddress.ip_address(info["local"])
                if addr.is_loopback or addr.is_link_local:
                    continue
                assert a.is_benchmark_address(str(addr)), f"{ns} {link['ifname']}: {addr}"
                seen += 1
    assert seen >= 2 * (2 + 2 * 2 + 2 + 2) + 2  # every link end of a 2-instance testbed, both families


def test_no_interface_is_linked_to_the_host_namespace(bed: TestbedState) -> None:
    ours = set(existing_netns())
    for ns in ours:
        names = {e["nsid"]: e.get("name") for e in _json(ns, ["ip", "-j", "netns", "list-id"])}
        for link in _json(ns, ["ip", "-j", "-d", "link", "show"]):
            if "link_netnsid" in link:
                peer = names.get(link["link_netnsid"])
                assert peer in ours, f"{ns} {link['ifname']} is linked to {peer or 'an unnamed namespace'}"
            else:
                kind = link.get("linkinfo", {}).get("info_kind")  # type: ignore[attr-defined]
                assert link["ifname"] == "lo" or kind == "bridge", f"{ns} {link['ifname']} ({kind})"
    # and from the host's side: no veth of the host's own namespace leads into a testbed namespace
    host_names = {
        e["nsid"]: e.get("name") for e in json.loads(_host(["ip", "-j", "netns", "list-id"]) or "[]")
    }
    for link in json.loads(_host(["ip", "-j", "link", "show"]) or "[]"):
        if "link_netnsid" in link:
            assert host_names.get(link["link_netnsid"]) not in ours, (
                f"host {link['ifname']} leads into the testbed"
            )


def _host(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_lb_and_rt_have_no_route_across(bed: TestbedState) -> None:
    assert netns_exec(a.LB_NETNS, ["ip", "route", "get", bed.server_addr]).returncode != 0
    assert netns_exec(a.LB_NETNS, ["ip", "-6", "route", "get", bed.server_addr6]).returncode != 0
    assert netns_exec(a.RT_NETNS, ["ip", "route", "get", bed.client_addr]).returncode != 0
    assert netns_exec(a.RT_NETNS, ["ip", "-6", "route", "get", bed.client_addr6]).returncode != 0


@pytest.mark.parametrize("family", [4, 6])
def test_unsteered_traffic_is_dropped(bed: TestbedState, family: int) -> None:
    steering_driver(bed).unassign(range(bed.buckets))
    r = curl(bed.client_netns, url(bed, family), timeout=1)
    assert not r.ok


def test_management_network_reaches_instances_but_is_not_forwarded(bed: TestbedState) -> None:
    fw1 = bed.instances[0]
    assert netns_exec(a.MGMT_NETNS, ["ping", "-c", "1", "-W", "1", fw1.mgmt_addr]).returncode == 0
    assert netns_exec(a.MGMT_NETNS, ["ping", "-6", "-c", "1", "-W", "1", fw1.mgmt_addr6]).returncode == 0
    # Give fwc-mgmt a way across through fw1, and count in fw1 what arrives to be forwarded and
    # what leaves toward the server.
    probe = (
        "table inet fwc_probe {\n"
        "  counter offered {\n  }\n"
        "  counter left {\n  }\n"
        "  chain probe_forward { type filter hook forward priority -300; policy accept;\n"
        f'    iifname "{a.IF_MGMT}" counter name offered\n'
        "  }\n"
        "  chain probe_post { type filter hook postrouting priority 0; policy accept;\n"
        f'    oifname "{a.IF_TO_RT}" ip saddr {a.mgmt_net().v4} counter name left\n'
        "  }\n"
        "}\n"
    )
    netns_exec(fw1.netns, ["nft", "-f", "-"], input=probe, check=True)
    netns_exec(a.MGMT_NETNS, ["ip", "route", "add", str(a.server_net().v4), "via", fw1.mgmt_addr], check=True)
    try:
        r = curl(a.MGMT_NETNS, url(bed, 4), timeout=1)
        assert not r.ok
        counters = json.loads(netns_exec(fw1.netns, ["nft", "-j", "list", "counters"], check=True).stdout)
        packets = {
            c["counter"]["name"]: c["counter"]["packets"] for c in counters["nftables"] if "counter" in c
        }
        assert packets["offered"] > 0  # fw1 would have forwarded it ...
        assert packets["left"] == 0  # ... but nothing went out toward the server
    finally:
        netns_exec(a.MGMT_NETNS, ["ip", "route", "del", str(a.server_net().v4)])
        netns_exec(fw1.netns, ["nft", "delete", "table", "inet", "fwc_probe"])
