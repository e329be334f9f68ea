"""Who backs up whom with ``[sync] follow = "backup"`` (statetable/ring.py), and the knob."""

from __future__ import annotations

import pytest

from fwcluster.config import ConfigError, parse_config
from fwcluster.statetable.ring import backup_of, followed, to_preload
from fwcluster.statetable.settings import Follow


@pytest.mark.parametrize(
    ("members", "me", "follows"),
    [
        ({"a": "active", "b": "active", "c": "active"}, "a", {"c"}),
        ({"a": "active", "b": "active", "c": "active"}, "b", {"a"}),
        ({"a": "active", "b": "active", "c": "active"}, "c", {"b"}),
        ({"a": "active", "b": "active"}, "a", {"b"}),
        ({"a": "active"}, "a", set()),  # alone: nobody to back up
        ({"a": "active", "b": "failed", "c": "active"}, "c", {"a"}),  # the failed one left the ring
        ({"a": "active", "b": "active", "s": "standby"}, "s", {"a", "b"}),  # a standby backs up all
        ({"a": "active", "b": "active", "j": "joining"}, "j", set()),
        ({"a": "active", "b": "ready", "c": "ready"}, "b", {"a"}),  # a ready one is in the ring
        ({"a": "active", "b": "ready", "c": "ready"}, "a", {"c"}),
        ({"a": "active", "b": "active", "d": "draining"}, "d", set()),
        ({}, "a", set()),  # no membership published (no master)
    ],
)
def test_followed(members: dict[str, str], me: str, follows: set[str]) -> None:
    assert followed(me, members) == follows


def test_the_backup_of_an_instance_is_the_one_that_follows_it() -> None:
    active = ["i3", "i1", "i2", "i4"]
    members = dict.fromkeys(active, "active")
    for i in active:
        b = backup_of(i, active)
        assert b is not None and followed(b, members) == {i}
    # a failed instance (no longer active) still has the backup it had
    assert backup_of("i2", ["i1", "i3", "i4"]) == "i3"
    assert backup_of("i4", ["i1", "i2", "i3"]) == "i1"
    assert backup_of("i1", []) is None


def test_follow_knob() -> None:
    assert parse_config({}, "t").sync.follow == Follow.BACKUP
    assert parse_config({"sync": {"follow": "all"}}, "t").sync.follow == Follow.ALL
    with pytest.raises(ConfigError, match=r"sync\.follow"):
        parse_config({"sync": {"follow": "some"}}, "t")


def test_the_failed_ones_flows_are_preloaded_once_by_those_in_the_ring() -> None:
    members = {"a": "active", "b": "failed", "c": "active", "d": "ready", "s": "standby", "j": "joining"}
    assert to_preload("a", members, []) == {"b"}
    assert to_preload("c", members, ["b"]) == set()  # it followed b: it holds b's flows
    assert to_preload("d", members, []) == {"b"}
    assert to_preload("s", members, []) == set()  # a standby follows every active one
    assert to_preload("j", members, []) == set()
    assert to_preload("b", members, []) == set()
