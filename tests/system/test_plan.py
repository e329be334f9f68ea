"""The pure parts of the testbed and steering (no root needed): address plan, nft translations."""

from __future__ import annotations

import ipaddress
from itertools import combinations

import pytest

from fwcluster.config import parse_config
from fwcluster.core.rules import Action, Rule, RuleSet
from fwcluster.steering import Balancer
from fwcluster.steering.symmetric import ruleset, update_script
from fwcluster.testbed import addressing as a
from fwcluster.testbed.nftrules import kernel_ruleset, rule_lines


def _all_nets(n: int) -> list[a.DualNet]:
    return [
        a.client_net(),
        a.server_net(),
        a.mgmt_net(),
        *(a.lb_fw_net(k) for k in range(1, n + 1)),
        *(a.fw_rt_net(k) for k in range(1, n + 1)),
    ]


def test_every_subnet_is_in_the_benchmark_ranges_and_none_overlap() -> None:
    v4, v6 = a.benchmark_ranges()
    nets = _all_nets(a.MAX_INSTANCES)
    for net in nets:
        assert net.v4.subnet_of(v4) and net.v6.subnet_of(v6)
    for x, y in combinations(nets, 2):
        assert not x.v4.overlaps(y.v4) and not x.v6.overlaps(y.v6), (x, y)


def test_address_plan_examples() -> None:
    assert a.lb_fw_net(1).v6 == ipaddress.IPv6Network("2001:2:0:101::/64")
    assert a.fw_rt_net(32).v6 == ipaddress.IPv6Network("2001:2:0:232::/64")
    assert (a.lb_fw_addr(3).ip4, a.fw_lb_addr(3).ip4) == ("198.18.3.1", "198.18.3.2")
    assert (a.fw_rt_addr(3).ip4, a.rt_fw_addr(3).ip4) == ("198.19.3.1", "198.19.3.2")
    assert (a.server_addr().ip4, a.server_addr().ip6) == ("198.19.0.2", "2001:2:0:300::2")
    assert (a.client_addr().ip4, a.client_addr().ip6) == ("198.18.0.2", "2001:2::2")
    assert a.mgmt_addr(32).ip4 == "198.18.255.42"
    assert a.mgmt_bridge_addr().ip6 == "2001:2:0:fff::1"
    assert a.fw_index(a.fw_id(17)) == 17
    assert len({a.steer_mark(k) for k in range(1, 33)} | {a.steer_table(k) for k in range(1, 33)}) == 64
    for bad in (0, 33):
        with pytest.raises(ValueError):
            a.fw_netns(bad)


def test_namespace_and_interface_names_fit_the_kernel_limits() -> None:
    for name in a.all_netns(a.MAX_INSTANCES):
        assert name.startswith(a.NETNS_PREFIX)
    for k in (1, a.MAX_INSTANCES):
        assert len(a.if_to_fw(k)) < 16


def test_default_config_translates_to_the_kernel_ruleset() -> None:
    text = kernel_ruleset(parse_config({}, "<t>").ruleset)
    assert "policy drop;" in text
    assert text.index("ct state established,related accept") < text.index("ct state invalid drop")
    cfg = parse_config(
        {
            "rules": [
                {"action": "accept", "proto": "tcp", "dst": ["198.18.0.0/15", "2001:2::/48"], "dport": 80}
            ]
        },
        "<t>",
    )
    lines = rule_lines(cfg.ruleset.rules[0])
    assert lines == [
        "ip daddr { 198.18.0.0/15 } meta l4proto 6 th dport { 80 } accept",
        "ip6 daddr { 2001:2::/48 } meta l4proto 6 th dport { 80 } accept",
    ]


def test_rules_keep_their_order_and_families() -> None:
    net4 = ipaddress.ip_network("198.18.0.0/24")
    net6 = ipaddress.ip_network("2001:2::/64")
    rs = RuleSet(
        rules=(
            Rule(Action.REJECT, proto=6, sport=((1000, 2000),), dport=((22, 22), (80, 81))),
            Rule(Action.DROP, src=(net4,)),
            Rule(Action.ACCEPT, src=(net6,), dst=(net4,)),  # never matches: families differ
            Rule(Action.REJECT, proto=17),
            Rule(Action.REJECT),
        ),
        default=Action.ACCEPT,
    )
    text = kernel_ruleset(rs)
    body = [ln.strip() for ln in text.splitlines()]
    start = body.index("ct state invalid drop") + 1
    assert body[start:-2] == [
        "meta l4proto 6 th sport { 1000-2000 } th dport { 22, 80-81 } reject with tcp reset",
        "ip saddr { 198.18.0.0/24 } drop",
        "meta l4proto 17 reject",
        "meta l4proto 6 reject with tcp reset",
        "reject",
        "accept",
    ]
    assert "policy accept;" in text


def test_steering_ruleset_and_updates() -> None:
    text = ruleset(Balancer("fwc-lb", "client"), 64)
    assert "typeof symhash mod 64 : meta mark" in text
    assert 'iifname "client" meta mark set symhash mod 64 map @buckets' in text
    current = {0: 0x101, 1: 0x102, 2: 0x101}
    assert update_script(current, {0: 0x101}) == ""
    assert update_script(current, {1: 0x101, 3: 0x102, 2: None}) == (
        "delete element inet fwc_steer buckets { 1, 2 }\n"
        "add element inet fwc_steer buckets { 1 : 0x101, 3 : 0x102 }\n"
    )
