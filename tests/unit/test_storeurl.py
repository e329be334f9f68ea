"""Sentinel store URLs and the [store] fields that name a Sentinel service (issue 11)."""

from __future__ import annotations

import pytest

from fwcluster.config import ConfigError, OutagePolicy, StoreHa, check_store_url, parse_config
from fwcluster.storeurl import parse_sentinel_url, sentinel_url, with_sentinels


def test_a_sentinel_url_names_its_sentinels_service_credentials_and_db() -> None:
    t = parse_sentinel_url("redis+sentinel://inst-fw1:p%40ss@198.18.255.1:26379,[2001:2::1]:26380,s3/fwc/2")
    assert t.sentinels == (("198.18.255.1", 26379), ("2001:2::1", 26380), ("s3", 26379))
    assert (t.service, t.username, t.password, t.db) == ("fwc", "inst-fw1", "p@ss", 2)
    again = sentinel_url(t.sentinels, t.service, t.username, t.password, t.db)
    assert parse_sentinel_url(again) == t


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://h:1", "no service"),
        ("redis+sentinel:///fwc", "no sentinel host"),
        ("redis+sentinel://h:99999/fwc", "port"),
        ("redis+sentinel://h/fw*c", "not a name"),
        ("redis+sentinel://h/fwc/x", "database"),
        ("redis+sentinel://h/fwc?x=1", "query"),
        ("redis+sentinel://2001:2::1/fwc", "brackets"),
    ],
)
def test_a_bad_sentinel_url_is_a_one_line_error_without_the_url(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as e:
        check_store_url(url)
    assert "\n" not in str(e.value) and url not in str(e.value)


def test_store_sentinels_and_service_take_the_credentials_from_the_url() -> None:
    c = parse_config({"store": {"sentinels": ["198.18.255.1:26379", "198.18.255.1"], "service": "s"}}, "t")
    assert c.store.sentinels == ("198.18.255.1:26379", "198.18.255.1")
    url = with_sentinels("redis://u:pw@ignored:6379/3", c.store.sentinels, c.store.service)
    t = parse_sentinel_url(url)
    assert t.sentinels == (("198.18.255.1", 26379), ("198.18.255.1", 26379))
    assert (t.service, t.username, t.password, t.db) == ("s", "u", "pw", 3)
    assert with_sentinels("redis://h:1/0", (), "s") == "redis://h:1/0"


@pytest.mark.parametrize(
    ("store", "why"),
    [
        ({"sentinels": "h:1"}, "list"),
        ({"sentinels": ["h:0"]}, "port"),
        ({"service": ""}, "service"),
        ({"ha": "cluster"}, "ha"),
        ({"sentinels": ["h:1"], "url": "redis+sentinel://h:1/fwc"}, "not both"),
        ({"outage": "maybe"}, "outage"),
    ],
)
def test_bad_store_ha_fields_are_one_line_errors(store: dict[str, object], why: str) -> None:
    with pytest.raises(ConfigError, match=why) as e:
        parse_config({"store": store}, "t")
    assert "\n" not in str(e.value)


def test_outage_local_is_the_default_and_accept_is_its_old_name() -> None:
    assert parse_config({}, "t").store.outage is OutagePolicy.LOCAL
    assert parse_config({"store": {"outage": "accept"}}, "t").store.outage is OutagePolicy.LOCAL
    assert parse_config({"store": {"outage": "refuse"}}, "t").store.outage is OutagePolicy.REFUSE
    assert parse_config({}, "t").store.ha is StoreHa.SENTINEL
