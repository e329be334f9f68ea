"""TCP checksums of closing segments: a RST or FIN the endpoint would discard changes nothing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fwcluster.core.decision import Reason, Verdict
from fwcluster.core.packet import tcp_checksum_ok
from fwcluster.core.states import FlowState

from .builders import ACK, FIN, RST, T0, check, drive, firewall, key_of, parsed, tcp


def corrupt(buf: bytes, v6: bool) -> bytes:
    at = (40 if v6 else 20) + 16  # the TCP checksum field
    return buf[:at] + bytes([buf[at] ^ 0x5A]) + buf[at + 1 :]


@given(st.booleans(), st.binary(max_size=64), st.sampled_from([ACK, RST, FIN | ACK, RST | ACK]))
def test_the_check_agrees_with_the_checksum_scapy_computes(v6: bool, data: bytes, flags: int) -> None:
    buf = tcp(flags, v6=v6, data=data)
    assert tcp_checksum_ok(buf, parsed(buf))
    assert not tcp_checksum_ok(corrupt(buf, v6), parsed(buf))


def test_a_rst_with_a_bad_checksum_does_not_close_the_flow() -> None:
    for v6 in (False, True):
        fw = firewall()
        key = drive(fw, FlowState.ESTABLISHED, v6=v6)
        for flags in (RST, FIN | ACK):
            d = check(fw.decide(corrupt(tcp(flags, v6=v6), v6), T0 + 1))
            assert (d.verdict, d.reason) == (Verdict.DROP, Reason.BAD_CHECKSUM)
            assert fw.state_of(key_of(tcp(ACK, v6=v6)), T0 + 1) == FlowState.ESTABLISHED
        assert key is not None
        d = check(fw.decide(tcp(RST, v6=v6), T0 + 1))
        assert d.after == FlowState.CLOSE
