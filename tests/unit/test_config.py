"""The TOML config: a full example parses, and every kind of mistake is a one-line ConfigError that
names the field and what it allows."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwcluster.config import DEFAULT_TOML, Config, ConfigError, SteeringKind, load_config, parse_config
from fwcluster.core.rules import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Action, Rule
from fwcluster.core.timeouts import Timeouts
from fwcluster.statetable.settings import Access, Confirm, SyncLevel


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


EXAMPLE = """\
# every section, with values other than the defaults
[sync]
level = "full"          # none | established | full
access = "clean"        # dirty | clean
confirm = "sync"        # async | sync

[policy]
default = "reject"      # accept | drop | reject

[[rules]]
comment = "web servers, both address families"
action = "accept"
proto = "tcp"
dst = ["198.18.0.0/15", "2001:2::/48"]
dport = [80, 443, "8000-8080"]

[[rules]]
comment = "no DNS from this host"
action = "drop"
proto = "udp"
src = "192.0.2.7"
dport = 53

[[rules]]
action = "accept"
proto = "icmp"

[[rules]]
action = "accept"
proto = "icmpv6"
src = "2001:db8::/32"

[[rules]]
action = "accept"
proto = "udp"
sport = "1024-65535"
dport = "1024-65535"

[conntrack]
max_flows = 100000

[conntrack.timeouts]
tcp_established = 3600
tcp_time_wait = 30
udp = 20.5
icmp = 10

[steering]
kind = "symmetric"
buckets = 128
"""


README_EXAMPLE = """\
[sync]                     # the shared state table's knobs (they take effect with the shared-state issue)
level = "established"      # none | established | full
access = "dirty"           # dirty | clean
confirm = "async"          # async | sync

[policy]
default = "drop"  # accept | drop | reject: for packets that would open a connection and match no rule

# Ordered rules, first match wins. They decide on packets that would open a connection
# (TCP SYN, first UDP datagram, ICMP echo request); packets of a tracked connection pass
# when the tracker finds them valid.
[[rules]]
action = "accept"          # accept | drop | reject (TCP: RST; others: ICMP port unreachable)
proto = "tcp"              # tcp | udp | icmp | icmpv6 | any (default any)
src = "198.18.0.0/24"      # address, CIDR, or a list of them (default any)
dst = ["198.19.0.0/24", "2001:2:0:300::/64"]
sport = "1024-65535"       # port, "a-b" range, or a list (tcp/udp only; default any)
dport = [80, 443]
comment = "web"            # free text

[[rules]]
action = "accept"
proto = "icmp"             # lets ping through (echo request opens, echo reply answers)

[conntrack]
max_flows = 262144         # table bound; beyond it new flows are refused, tracked ones never evicted

[conntrack.timeouts]       # seconds; defaults are the Linux kernel's
tcp_syn_sent = 120
tcp_syn_recv = 60
tcp_established = 432000
tcp_fin_wait = 120
tcp_close_wait = 60
tcp_last_ack = 30
tcp_time_wait = 120
tcp_close = 10
tcp_syn_sent2 = 120
udp = 30                   # unreplied
udp_stream = 120           # seen in both directions
icmp = 30

[steering]
kind = "symmetric"         # nft symhash: both directions of a flow cross one instance
buckets = 64               # steering table size (1..4096)
"""


def test_the_readme_example_parses() -> None:
    c = parse_config(tomllib.loads(README_EXAMPLE), "README.md")
    assert (c.sync.level, c.sync.access, c.sync.confirm) == (
        SyncLevel.ESTABLISHED,
        Access.DIRTY,
        Confirm.ASYNC,
    )
    assert c.ruleset.default == Action.DROP
    assert c.ruleset.rules == (
        Rule(
            Action.ACCEPT,
            PROTO_TCP,
            src=(net("198.18.0.0/24"),),
            dst=(net("198.19.0.0/24"), net("2001:2:0:300::/64")),
            sport=((1024, 65535),),
            dport=((80, 80), (443, 443)),
        ),
        Rule(Action.ACCEPT, PROTO_ICMP),
    )
    assert c.conntrack.max_flows == 262_144
    assert c.conntrack.timeouts == Timeouts()  # the README lists the defaults
    assert (c.steering.kind, c.steering.buckets) == (SteeringKind.SYMMETRIC, 64)


def test_an_example_with_every_field_parses(tmp_path: Path) -> None:
    path = tmp_path / "fwcluster.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    c = load_config(path)
    assert c.source == str(path)
    assert (c.sync.level, c.sync.access, c.sync.confirm) == (SyncLevel.FULL, Access.CLEAN, Confirm.SYNC)
    assert c.ruleset.default == Action.REJECT
    assert c.ruleset.rules == (
        Rule(
            Action.ACCEPT,
            PROTO_TCP,
            dst=(net("198.18.0.0/15"), net("2001:2::/48")),
            dport=((80, 80), (443, 443), (8000, 8080)),
        ),
        Rule(Action.DROP, PROTO_UDP, src=(net("192.0.2.7/32"),), dport=((53, 53),)),
        Rule(Action.ACCEPT, PROTO_ICMP),
        Rule(Action.ACCEPT, PROTO_ICMPV6, src=(net("2001:db8::/32"),)),
        Rule(Action.ACCEPT, PROTO_UDP, sport=((1024, 65535),), dport=((1024, 65535),)),
    )
    assert c.conntrack.max_flows == 100_000
    assert c.conntrack.timeouts == Timeouts(tcp_established=3600.0, tcp_time_wait=30.0, udp=20.5, icmp=10.0)
    assert (c.steering.kind, c.steering.buckets) == (SteeringKind.SYMMETRIC, 128)


def test_defaults() -> None:
    c = load_config(None)
    assert c.source == "<defaults>"
    assert c == parse_config(tomllib.loads(DEFAULT_TOML), "<defaults>")
    assert c.ruleset.default == Action.DROP
    assert len(c.ruleset.rules) == 1
    empty = parse_config({}, "empty")
    assert empty.conntrack.timeouts == Timeouts()
    assert empty.ruleset.rules == ()
    assert empty == Config(source="empty")


def test_any_proto_and_host_bits() -> None:
    c = parse_config(tomllib.loads('[[rules]]\naction = "drop"\nsrc = "10.1.2.3/8"'), "x")
    (rule,) = c.ruleset.rules
    assert rule.proto is None
    assert rule.src == (net("10.0.0.0/8"),)


# (TOML, substrings the message must hold: the field, and the allowed values)
MISTAKES: dict[str, tuple[str, list[str]]] = {
    "unknown top-level field": ("colour = 1", ["'colour'", "sync, policy, rules, conntrack, steering"]),
    "unknown field in [sync]": ('[sync]\nlvl = "full"', ["'sync.lvl'", "level, access, confirm"]),
    "unknown field in [policy]": ('[policy]\nfallback = "drop"', ["'policy.fallback'", "default"]),
    "unknown field in [[rules]]": (
        '[[rules]]\naction = "accept"\nport = 80',
        ["'rules[0].port'", "action, proto, src, dst, sport, dport, comment"],
    ),
    "unknown field in the second rule": (
        '[[rules]]\naction = "accept"\n[[rules]]\naction = "drop"\nto = "x"',
        ["'rules[1].to'"],
    ),
    "unknown field in [conntrack]": ("[conntrack]\nmax = 10", ["'conntrack.max'", "max_flows, timeouts"]),
    "unknown timeout": (
        "[conntrack.timeouts]\ntcp_syn = 1",
        ["'conntrack.timeouts.tcp_syn'", "tcp_syn_sent"],
    ),
    "unknown field in [steering]": ("[steering]\nmode = 1", ["'steering.mode'", "kind, buckets"]),
    "string where an int is expected": ('[conntrack]\nmax_flows = "10"', ["conntrack.max_flows", "integer"]),
    "float where an int is expected": ("[steering]\nbuckets = 1.5", ["steering.buckets", "integer 1..4096"]),
    "bool where an int is expected": ("[conntrack]\nmax_flows = true", ["conntrack.max_flows", "integer"]),
    "int out of range": ("[conntrack]\nmax_flows = 0", ["conntrack.max_flows", "1..50000000"]),
    "int where a string is expected": ("[sync]\nlevel = 3", ["sync.level", "none | established | full"]),
    "bad enum value": ('[sync]\nlevel = "most"', ["sync.level", "'most'", "none | established | full"]),
    "bad access": ('[sync]\naccess = "fast"', ["sync.access", "dirty | clean"]),
    "bad confirm": ('[sync]\nconfirm = "never"', ["sync.confirm", "async | sync"]),
    "bad steering kind": ('[steering]\nkind = "random"', ["steering.kind", "symmetric"]),
    "bad default policy": ('[policy]\ndefault = "allow"', ["policy.default", "accept | drop | reject"]),
    "bad action": ('[[rules]]\naction = "allow"', ["rules[0].action", "accept | drop | reject"]),
    "missing action": ('[[rules]]\nproto = "tcp"', ["rules[0].action", "missing", "accept | drop | reject"]),
    "bad proto": (
        '[[rules]]\naction = "drop"\nproto = "gre"',
        ["rules[0].proto", "tcp | udp | icmp | icmpv6"],
    ),
    "proto as a number": ('[[rules]]\naction = "drop"\nproto = 6', ["rules[0].proto", "any | tcp"]),
    "bad CIDR prefix": ('[[rules]]\naction = "drop"\nsrc = "10.0.0.0/33"', ["rules[0].src", "'10.0.0.0/33'"]),
    "bad address": ('[[rules]]\naction = "drop"\ndst = "300.1.2.3"', ["rules[0].dst", "CIDR"]),
    "bad address in a list": (
        '[[rules]]\naction = "drop"\ndst = ["10.0.0.0/8", "nope"]',
        ["rules[0].dst", "'nope'", "CIDR"],
    ),
    "address as a number": ('[[rules]]\naction = "drop"\nsrc = 10', ["rules[0].src", "CIDR string"]),
    "empty address list": ('[[rules]]\naction = "drop"\nsrc = []', ["rules[0].src", "empty list"]),
    "port 70000": ('[[rules]]\naction = "drop"\nproto = "tcp"\ndport = 70000', ["rules[0].dport", "0-65535"]),
    "negative port": ('[[rules]]\naction = "drop"\nproto = "tcp"\ndport = -1', ["rules[0].dport", "0-65535"]),
    "range 9-1": ('[[rules]]\naction = "drop"\nproto = "udp"\nsport = "9-1"', ["rules[0].sport", '"a-b"']),
    "port a": (
        '[[rules]]\naction = "drop"\nproto = "tcp"\ndport = "a"',
        ["rules[0].dport", "'a'", "0-65535"],
    ),
    "range 1-2-3": ('[[rules]]\naction = "drop"\nproto = "tcp"\ndport = "1-2-3"', ["rules[0].dport"]),
    "range to 70000": ('[[rules]]\naction = "drop"\nproto = "tcp"\ndport = "1-70000"', ["rules[0].dport"]),
    "superscript digit port": (
        '[[rules]]\naction = "drop"\nproto = "tcp"\ndport = "\u00b2"',
        ["rules[0].dport"],
    ),
    "port as a bool": ('[[rules]]\naction = "drop"\nproto = "tcp"\ndport = true', ["rules[0].dport"]),
    "port as a float": ('[[rules]]\naction = "drop"\nproto = "tcp"\ndport = 80.0', ["rules[0].dport"]),
    "bad port in a list": (
        '[[rules]]\naction = "drop"\nproto = "tcp"\ndport = [80, "x"]',
        ["rules[0].dport"],
    ),
    "empty port list": ('[[rules]]\naction = "drop"\nproto = "tcp"\ndport = []', ["rules[0].dport", "empty"]),
    "sport with proto icmp": (
        '[[rules]]\naction = "drop"\nproto = "icmp"\nsport = 1',
        ["sport", '"tcp" or "udp"'],
    ),
    "dport with proto icmpv6": (
        '[[rules]]\naction = "drop"\nproto = "icmpv6"\ndport = 1',
        ["dport", "icmpv6"],
    ),
    "dport with proto any": ('[[rules]]\naction = "drop"\ndport = 80', ["dport", '"tcp" or "udp"']),
    "comment not a string": ('[[rules]]\naction = "drop"\ncomment = 1', ["rules[0].comment", "string"]),
    "section not a table": ('sync = "full"', ["sync", "table"]),
    "rules not an array": ("rules = 1", ["rules", "[[rules]]"]),
    "rules as one table": ('[rules]\naction = "drop"', ["rules", "[[rules]]"]),
    "rule not a table": ("rules = [1]", ["rules[0]", "table"]),
    "timeouts not a table": ("[conntrack]\ntimeouts = 5", ["conntrack.timeouts", "table"]),
    "timeout zero": ("[conntrack.timeouts]\nudp = 0", ["conntrack.timeouts.udp", "seconds > 0"]),
    "timeout as a string": ('[conntrack.timeouts]\nudp = "30"', ["conntrack.timeouts.udp", "seconds > 0"]),
    "timeout nan": ("[conntrack.timeouts]\nicmp = nan", ["conntrack.timeouts.icmp", "seconds > 0"]),
    "timeout inf": ("[conntrack.timeouts]\nicmp = inf", ["conntrack.timeouts.icmp", "seconds > 0"]),
}


@pytest.mark.parametrize(("text", "needles"), MISTAKES.values(), ids=MISTAKES.keys())
def test_mistakes_are_one_line_errors_naming_the_field(text: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(tomllib.loads(text), "fw.toml")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("fw.toml: ")
    for needle in needles:
        assert needle in message, (needle, message)


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[sync\nlevel = "full"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not valid TOML")
    assert "\n" not in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[[rules]]\naction = "drop"\ncomment = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: not valid TOML")
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match="no such config file") as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file") as err:
        load_config(tmp_path)  # a directory
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- anything else
KEYS = ["sync", "policy", "rules", "conntrack", "steering", "level", "access", "confirm", "default"]
KEYS += ["action", "proto", "src", "dst", "sport", "dport", "comment", "max_flows", "timeouts", "udp"]
KEYS += ["kind", "buckets", "tcp_established", "x"]
SCALARS = st.one_of(
    st.sampled_from(["accept", "drop", "reject", "tcp", "udp", "icmp", "any", "full", "clean", "sync"]),
    st.sampled_from(["10.0.0.0/8", "::/0", "80", "1-2", "9-1", "a", "", "symmetric", "\u00b2", "1-"]),
    st.text(max_size=8),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.booleans(),
)


def documents() -> st.SearchStrategy[Any]:
    values = st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
        max_leaves=12,
    )
    return st.dictionaries(st.sampled_from([*KEYS[:5], "x"]), values, max_size=5)


@settings(max_examples=400, deadline=None)
@given(documents())
def test_any_document_gives_a_config_or_a_one_line_config_error(data: dict[str, Any]) -> None:
    try:
        config = parse_config(data, "fuzz.toml")
    except ConfigError as e:
        assert "\n" not in str(e)
        assert str(e).startswith("fuzz.toml: ")
    else:
        assert isinstance(config, Config)
