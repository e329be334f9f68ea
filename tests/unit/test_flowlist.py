"""The control socket's ``flows`` answer: the table as an operator reads it, filtered and bounded."""

from __future__ import annotations

from fwcluster.core.packet import key_parts
from fwcluster.instance.flowlist import flow_list

from .builders import CLIENT4, CLIENT6, CPORT, SERVER4, SERVER6, SPORT, SYN, T0, firewall, key_of, tcp


def _table() -> list:
    fw = firewall()
    fw.decide(tcp(SYN), T0)
    fw.decide(tcp(SYN, v6=True), T0)
    for port in range(5):
        fw.decide(tcp(SYN, cport=30000 + port), T0)
    return list(fw.flows(T0))


def test_key_parts_take_both_key_layouts_apart_and_refuse_other_lengths() -> None:
    p4 = key_parts(key_of(tcp(SYN)))
    p6 = key_parts(key_of(tcp(SYN, v6=True)))
    assert p4 is not None and p4.proto == 6 and {p4.port_lo, p4.port_hi} == {CPORT, SPORT}
    assert p6 is not None and len(p6.addr_lo) == 16
    assert key_parts(b"\x06" * 12) is None


def test_flows_are_listed_with_their_endpoints_and_state_filtered_by_port() -> None:
    flows = _table()
    doc = flow_list({"cmd": "flows", "port": CPORT}, flows)
    assert doc["matched"] == 2 and not doc["truncated"]
    ends = {(f["lo"], f["hi"]) for f in doc["flows"]}
    assert (f"{CLIENT4}:{CPORT}", f"{SERVER4}:{SPORT}") in ends
    assert (f"[{CLIENT6}]:{CPORT}", f"[{SERVER6}]:{SPORT}") in ends
    assert {f["state"] for f in doc["flows"]} == {"SYN_SENT"}
    assert all(f["orig_is_lo"] for f in doc["flows"])  # the client sorts first here


def test_a_port_range_takes_both_ends() -> None:
    doc = flow_list({"cmd": "flows", "port": 30001, "port_to": 30003}, _table())
    assert doc["matched"] == 3


def test_the_list_is_bounded_and_says_so() -> None:
    doc = flow_list({"cmd": "flows", "limit": 3}, _table())
    assert len(doc["flows"]) == 3 and doc["matched"] == 7 and doc["truncated"]


def test_a_bad_field_is_a_one_line_error() -> None:
    bad_fields = ({"port": -1}, {"port": "80"}, {"limit": 0}, {"limit": True}, {"limit": 10**9},
                  {"port": 90, "port_to": 80})  # fmt: skip
    for bad in bad_fields:
        doc = flow_list({"cmd": "flows", **bad}, [])
        assert set(doc) == {"error"} and "\n" not in doc["error"]
