"""The strict decoder of store records (statetable/record.py): every value the store hands back
is a flow record or a ``BadRecord``, never another exception; ``BadRecords`` counts the bad ones
by source and logs a line now and then. No store, no root."""

from __future__ import annotations

import contextlib
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fwcluster.core.flowtable import VERSION_MOD
from fwcluster.core.states import TCP_STATES, FlowState
from fwcluster.statetable.record import BadRecord, BadRecords, FlowRecord

S = FlowState
KEY4 = b"\x06\xc6\x12\x00\x01\x9c\x40\xc6\x13\x00\x02\x00\x50"  # TCP 198.18.0.1:40000 <-> 198.19.0.2:80
KEY6 = b"\x11" + bytes(36)  # an IPv6-sized UDP key
ICMP4 = b"\x01" + bytes(12)
ICMP6 = b"\x3a" + bytes(36)


def test_a_good_record_decodes() -> None:
    assert FlowRecord.decode(KEY4, b"3:1:3:6:fw2") == FlowRecord(KEY4, S.ESTABLISHED, True, 3, 6, "fw2")
    assert FlowRecord.decode(KEY6, b"11:0:4095:17:fw-10") == FlowRecord(
        KEY6, S.REPLIED, False, 4095, 17, "fw-10"
    )
    assert FlowRecord.decode(ICMP4, b"10:1:0:1:a").state == S.UNREPLIED
    assert FlowRecord.decode(ICMP6, b"15:1:7:58:fw:1").writer == "fw:1"  # REMOVED; a colon in the writer


TCP_OK = [s for s in TCP_STATES if s != S.NONE] + [S.REMOVED]
OTHER_OK = [S.UNREPLIED, S.REPLIED, S.REMOVED]


@given(
    st.sampled_from([(KEY4, TCP_OK), (KEY6, OTHER_OK), (ICMP4, OTHER_OK), (ICMP6, OTHER_OK)]).flatmap(
        lambda ks: st.tuples(st.just(ks[0]), st.sampled_from(ks[1]))
    ),
    st.booleans(),
    st.integers(0, VERSION_MOD - 1),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64),
)
def test_every_record_the_engine_writes_round_trips(
    key_state: tuple[bytes, FlowState], orig: bool, version: int, writer: str
) -> None:
    key, state = key_state
    r = FlowRecord(key, state, orig, version, key[0], writer)
    assert FlowRecord.decode(key, r.encode()) == r


BAD_VALUES = {
    "junk": b"junk",
    "four fields": b"3:1:5:6",
    "empty": b"",
    "negative version": b"3:1:-1:6:fw2",
    "huge version": b"3:1:99999999999999999999:6:fw2",
    "version one past the range": b"3:1:%d:6:fw2" % VERSION_MOD,
    "version with a sign": b"3:1:+3:6:fw2",
    "version with leading zero": b"3:1:03:6:fw2",
    "version not a number": b"3:1:x:6:fw2",
    "unknown proto": b"3:1:3:99:fw2",
    "proto not the key's": b"3:1:3:17:fw2",
    "state NONE": b"0:1:3:6:fw2",
    "state unknown": b"12:1:3:6:fw2",
    "state not a number": b"est:1:3:6:fw2",
    "UDP state on TCP": b"11:1:3:6:fw2",
    "orig not 0/1": b"3:2:3:6:fw2",
    "empty writer": b"3:1:3:6:",
    "bad UTF-8 writer": b"3:1:3:6:\xff\xfe",
    "non-ASCII writer": "3:1:3:6:fé".encode(),
    "control char writer": b"3:1:3:6:fw\n2",
    "space in writer": b"3:1:3:6:fw 2",
    "long writer": b"3:1:3:6:" + b"w" * 65,
}


@pytest.mark.parametrize("raw", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_bad_value_is_a_bad_record(raw: bytes) -> None:
    with pytest.raises(BadRecord):
        FlowRecord.decode(KEY4, raw)


BAD_KEYS = {
    "empty": b"",
    "one byte": b"\x06",
    "12 bytes": KEY4[:12],
    "14 bytes": KEY4 + b"\x00",
    "36 bytes": KEY6[:36],
    "proto 0": b"\x00" + KEY4[1:],
    "ICMPv6 in an IPv4 key": b"\x3a" + KEY4[1:],
    "ICMP in an IPv6 key": b"\x01" + KEY6[1:],
}


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_a_bad_key_is_a_bad_record(key: bytes) -> None:
    proto = key[0] if key else 6
    with pytest.raises(BadRecord):
        FlowRecord.decode(key, b"3:1:3:%d:fw2" % proto)


@pytest.mark.parametrize(
    "args", [(None, b"3:1:3:6:fw2"), (KEY4, None), (KEY4, 5), ("k" * 13, b"3:1:3:6:fw2")]
)
def test_what_is_not_bytes_is_a_bad_record(args: tuple[object, object]) -> None:
    with pytest.raises(BadRecord):
        FlowRecord.decode(*args)


@given(st.binary(max_size=40), st.binary(max_size=80))
def test_any_bytes_decode_to_a_record_or_a_bad_record(key: bytes, raw: bytes) -> None:
    try:
        r = FlowRecord.decode(key, raw)
    except BadRecord:
        return
    assert r.encode() == raw and r.key == key  # strict: only the canonical encoding decodes


@given(st.sampled_from([KEY4, KEY6]), st.binary(max_size=30))
def test_values_near_good_ones_never_raise_anything_else(key: bytes, tail: bytes) -> None:
    for raw in (b"3:1:" + tail, b"3:1:3:" + tail, b"11:0:1:17:" + tail, tail + b":1:3:6:fw"):
        with contextlib.suppress(BadRecord):  # a record or a BadRecord: nothing else escapes
            FlowRecord.decode(key, raw)


def test_bad_records_are_counted_by_source_and_logged_now_and_then(caplog: pytest.LogCaptureFixture) -> None:
    bad = BadRecords()
    assert bad.by_source == {"feed": 0, "lookup": 0, "load": 0, "write-answer": 0, "members": 0}
    caplog.set_level(logging.WARNING, "fwcluster.statetable")
    assert bad.decode("feed", KEY4, b"3:1:3:6:fw2") is not None
    for _ in range(50):
        assert bad.decode("feed", KEY4, b"junk") is None
    assert bad.decode("load", b"", b"3:1:3:6:fw2") is None
    assert bad.by_source["feed"] == 50 and bad.by_source["load"] == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # one line per source, not one per record
    assert "feed" in lines[0] and "Traceback" not in lines[0]
