"""The cluster policy: policy files checked whole by the config's code, the canonical form the
store keeps, records read back as bad input, diffs; and the engine's swap between two packets
(tracked flows keep passing, new flows meet the new rules)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fwcluster.cli.policy_cmd import lagging
from fwcluster.core.decision import Reason
from fwcluster.core.rules import Action
from fwcluster.core.states import FlowState
from fwcluster.engine.engine import Engine, EnginePolicy
from fwcluster.instance.heartbeat import parse_registration, registration_policy
from fwcluster.policy import (
    MAX_POLICY_BYTES,
    Policy,
    PolicyError,
    decode_record,
    diff,
    load_policy,
    parse_policy,
)
from fwcluster.statetable.record import FlowRecord
from fwcluster.statetable.settings import SyncLevel
from fwcluster.statetable.shared import PUBLISHED

from .builders import ACK, CPORT, SYN, T0, firewall, key_of, tcp

BOTH = """
[policy]
default = "drop"

[[rules]]
action = "accept"
proto = "tcp"
dst = ["198.51.100.0/24", "2001:db8:1::/48"]
dport = 80

[[rules]]
action = "accept"
proto = "tcp"
dport = 8080
comment = "the second web port"
"""

ONLY_80 = """
[policy]
default = "drop"

[[rules]]
action = "accept"
proto = "tcp"
dst = ["198.51.100.0/24", "2001:db8:1::/48"]
dport = 80

[[rules]]
action = "reject"
proto = "tcp"
dport = 8080
"""


def test_a_policy_file_is_the_config_sections() -> None:
    p = parse_policy(BOTH, "p.toml")
    assert p.ruleset.default is Action.DROP
    assert len(p.ruleset.rules) == 2
    assert p.comments == ("", "the second web port")
    assert p.lines() == [
        "accept tcp dst=198.51.100.0/24,2001:db8:1::/48 dport=80",
        "accept tcp dport=8080 # the second web port",
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            '[sync]\nlevel = "full"\n[policy]\ndefault = "drop"\n',
            "unknown field 'sync' (allowed: policy, rules)",
        ),
        ("[[rules]]\naction = 'accept'\n", "policy.default: missing"),
        ("[policy]\n", "policy.default: missing"),
        ('[policy]\ndefault = "maybe"\n', "policy.default: 'maybe' is not allowed"),
        ('[policy]\ndefault = "drop"\n[[rules]]\naction = "accept"\ndport = 80\n', "sport/dport need proto"),
        ('[policy]\ndefault = "drop"\n[[rules]]\naction = "accept"\nproto = "tcp"\ndport = 70000\n', "dport"),
        ('[policy]\ndefault = "drop"\n[[rules]]\naction = "accept"\nsrc = "10.0.0.300"\n', "src"),
        ('[policy]\ndefault = "drop"\n[[rules]]\naction = "accept"\nverdict = 1\n', "unknown field"),
        ("[policy\n", "not valid TOML"),
        ("x = " + "[" * 2000 + "]" * 2000, ""),
    ],
)
def test_a_bad_policy_file_is_one_line(text: str, says: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "p.toml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("p.toml: ")
    assert says in msg


def test_a_policy_file_too_big_or_missing(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text('[policy]\ndefault = "drop"\n' + "# pad\n" * MAX_POLICY_BYTES)
    with pytest.raises(PolicyError, match="over"):
        load_policy(big)
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[policy]\ndefault = "\xff"\n')
    with pytest.raises(PolicyError, match="UTF-8"):
        load_policy(bad)


def test_the_canonical_form_reads_back_as_the_same_policy() -> None:
    text = (
        '[policy]\ndefault = "reject"\n[[rules]]\naction = "accept"\nproto = "udp"\n'
        'src = "198.18.0.5/15"\nsport = ["1000-2000", 53]\ncomment = "a \\"quoted\\" \\u0007 one"\n'
        '[[rules]]\naction = "drop"\n'
    )
    p = parse_policy(text, "p")
    again = parse_policy(p.render(), "canonical")
    assert again == p
    assert again.render() == p.render()
    assert "198.18.0.0/15" in p.render()  # normalized: the network, not the address given


def test_equal_policies_have_one_canonical_body() -> None:
    a = parse_policy(
        '[policy]\ndefault = "drop"\n[[rules]]\naction = "accept"\nproto = "tcp"\ndport = 80\n', "a"
    )
    b = parse_policy(
        '[policy]\n  default="drop"\n\n[[rules]]\nproto="tcp"\ndport=[80]\naction="accept"\n', "b"
    )
    assert a.render() == b.render()


def test_records_from_the_store_are_bad_input() -> None:
    good = parse_policy(BOTH, "p").render().encode()
    version, p = decode_record(b"7", good)
    assert version == 7 and p == parse_policy(BOTH, "p")
    for v, body, says in [
        (b"x", good, "not a number"),
        (None, good, "not a number"),
        (b"0", good, "out of range"),
        (b"1" * 16, good, "not a number"),
        (b"3", None, "no body"),
        (b"3", b"\xff\xfe", "not UTF-8"),
        (b"3", b"[sync]\n", "version 3: "),
        (b"3", b"x" * (MAX_POLICY_BYTES + 1), "over"),
    ]:
        with pytest.raises(PolicyError, match=says):
            decode_record(v, body)


def test_diff_names_rule_lines_and_the_default() -> None:
    old, new = parse_policy(BOTH, "old"), parse_policy(ONLY_80, "new")
    d = diff(old, new)
    assert d.changed
    assert d.removed == ("[1] accept tcp dport=8080 # the second web port",)
    assert d.added == ("[1] reject tcp dport=8080",)
    assert d.default is None
    assert not diff(old, old).changed and diff(old, old).lines() == []
    opened = parse_policy(ONLY_80.replace('default = "drop"', 'default = "accept"'), "n")
    assert diff(new, opened).lines() == ["default: drop -> accept"]


def test_registration_reports_the_policy_version_compatibly() -> None:
    host = "0123456789abcdef"
    assert parse_registration(f"42:1000:{host}:7".encode()) == (42, 1.0, host)
    assert registration_policy(f"42:1000:{host}:7".encode()) == 7
    assert registration_policy(f"42:1000:{host}:x".encode()) == -1
    assert registration_policy(f"42:1000:{host}".encode()) is None  # an older instance
    assert registration_policy(b"42:1000") is None
    assert registration_policy(f"42:1000:{host}:-3".encode()) is None
    assert parse_registration(f"42:1000:{host}:-3".encode()) is None


# --------------------------------------------------------------------------- the engine's swap
def _engine(level: SyncLevel = SyncLevel.NONE) -> Engine:
    return Engine(firewall(BOTH), EnginePolicy(publish=PUBLISHED[level]), now=T0)


def _verdict(e: Engine, pid: int, buf: bytes, now: float) -> str:
    e.packet(pid, buf, now)
    replies = bool(e.replies)
    e.replies.clear()
    if pid in e.accepts or pid in e.marks:
        return "accept"
    if pid in e.drops:
        return "reject" if replies else "drop"
    return "held"


@pytest.mark.parametrize("level", [SyncLevel.NONE, SyncLevel.ESTABLISHED])
def test_a_tracked_flow_keeps_passing_a_new_flow_meets_the_new_rules(level: SyncLevel) -> None:
    e = _engine(level)
    syn = tcp(SYN, sport=8080)
    synack = tcp(SYN | ACK, reply=True, ack=1001, sport=8080)
    ack = tcp(ACK, seq=1001, ack=1, sport=8080)
    for pid, buf in enumerate((syn, synack, ack)):
        assert _verdict(e, pid, buf, T0) == "accept"
    assert e.firewall.state_of(key_of(syn), T0) is FlowState.ESTABLISHED

    e.set_ruleset(parse_policy(ONLY_80, "new").ruleset, 2)
    assert e.policy_version == 2
    data = tcp(ACK, seq=1001, ack=1, sport=8080, data=b"GET / HTTP/1.0\r\n\r\n")
    assert _verdict(e, 10, data, T0 + 1) == "accept"  # the tracked flow goes on
    fin = tcp(ACK | 0x01, seq=1019, ack=1, sport=8080)
    assert _verdict(e, 11, fin, T0 + 1) == "accept"  # and closes as tracked
    new = tcp(SYN, sport=8080, cport=CPORT + 1)
    assert _verdict(e, 12, new, T0 + 1) == "reject"  # a new flow to that port is refused
    assert e.counters.by_reason[Reason.RULE_REJECT] == 1
    assert _verdict(e, 13, tcp(SYN, cport=CPORT + 2), T0 + 1) == "accept"  # port 80 still open


def test_a_flow_learned_from_the_store_after_the_change_keeps_passing() -> None:
    e = _engine(SyncLevel.ESTABLISHED)
    e.set_ruleset(parse_policy(ONLY_80, "new").ruleset, 3)
    syn = tcp(SYN, sport=8080, cport=CPORT + 5)
    key = key_of(syn)
    # opened elsewhere under the old policy, learned from the feed after the change
    assert e.record(FlowRecord(key, FlowState.ESTABLISHED, True, 3, key[0], "fw2"), T0)
    data = tcp(ACK, seq=1001, ack=1, sport=8080, cport=CPORT + 5, data=b"x")
    assert _verdict(e, 1, data, T0 + 0.1) == "accept"
    # and one found by a look-up on a miss (the packet held, then decided on the record)
    other = tcp(ACK, seq=1001, ack=1, sport=8080, cport=CPORT + 6, data=b"y")
    assert _verdict(e, 2, other, T0 + 0.2) == "held"
    okey = key_of(tcp(SYN, sport=8080, cport=CPORT + 6))
    e.lookup_done(2, FlowRecord(okey, FlowState.ESTABLISHED, True, 3, okey[0], "fw2"), T0 + 0.2)
    assert 2 in e.accepts


def test_the_fallback_policy_is_the_config_rules() -> None:
    e = _engine()
    assert e.policy_version == 0
    p = Policy(e.firewall.ruleset)
    assert p.comments == () and len(p.lines()) == 2


def test_policy_apply_wait_counts_every_instance_but_the_failed_ones() -> None:
    status = {
        "instances": [
            {"id": "fw1", "role": "active", "policy_version": 3},
            {"id": "fw2", "role": "active", "policy_version": 2},  # behind
            {"id": "fw3", "role": "standby", "policy_version": 4},  # a later one counts
            {"id": "fw4", "role": "failed", "policy_version": 1},  # runs no rules
            {"id": "fw5", "role": "ready", "policy_version": -1},  # none: it fails closed
            {"id": "fw6", "role": "draining", "policy_version": None},  # its beat not read yet
            "not a row",
        ]
    }
    assert lagging(status, 3) == (["fw1", "fw3"], ["fw2", "fw5", "fw6"])
    assert lagging({}, 1) == ([], [])
