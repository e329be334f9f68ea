"""Sequence windows inside the core: what core/window.py decides reaches the verdict and the table
(the module's own cases are in test_window*.py)."""

from __future__ import annotations

from fwcluster.core.decision import Reason, Verdict
from fwcluster.core.firewall import Firewall
from fwcluster.core.states import FlowState

from .builders import ACK, FIN, RST, SYN, T0, check, firewall, key_of, tcp

C, S = 1_000_000, 5_000_000  # initial sequence numbers of client and server
WS = [("WScale", 7)]


def established(fw: Firewall) -> bytes:
    for buf in (
        tcp(SYN, seq=C, options=WS),
        tcp(SYN | ACK, reply=True, seq=S, ack=C + 1, options=WS),
        tcp(ACK, seq=C + 1, ack=S + 1),
        tcp(ACK, seq=C + 1, ack=S + 1, data=b"GET /"),
        tcp(ACK, reply=True, seq=S + 1, ack=C + 6, data=b"HTTP/1.1 200 OK"),
    ):
        d = check(fw.decide(buf, T0))
        assert d.verdict == Verdict.ACCEPT, d
    return key_of(tcp(SYN))


def test_a_connection_with_real_sequence_numbers_passes() -> None:
    fw = firewall(windows=True)
    key = established(fw)
    assert fw.state_of(key, T0) == FlowState.ESTABLISHED


def test_a_blind_rst_or_far_data_is_dropped_and_the_connection_stays() -> None:
    fw = firewall(windows=True)
    key = established(fw)
    for buf in (
        tcp(RST, seq=C + 6 + 3_000_000_000),  # far from the stream: any sequence number an attacker guesses
        tcp(ACK, seq=C + 6 + 2_000_000_000, ack=S + 16, data=b"x" * 10),
        tcp(ACK, seq=C + 6, ack=S + 16 + 1_000_000_000),  # acknowledges data never sent
    ):
        d = check(fw.decide(buf, T0 + 1))
        assert (d.verdict, d.reason) == (Verdict.DROP, Reason.OUT_OF_WINDOW), buf
    assert fw.state_of(key, T0 + 1) == FlowState.ESTABLISHED
    d = check(fw.decide(tcp(RST, seq=C + 6), T0 + 1))  # the real one, at the next sequence number
    assert d.after == FlowState.CLOSE


def test_without_windows_anything_in_state_passes() -> None:
    fw = firewall(windows=False)
    established(fw)
    d = check(fw.decide(tcp(ACK, seq=C + 2_000_000_000, ack=S, data=b"x"), T0 + 1))
    assert d.verdict == Verdict.ACCEPT


def test_a_flow_back_from_the_fast_path_relearns_its_window() -> None:
    # The kernel forwarded 10 MB the tracker never saw; the FIN that comes up is far ahead.
    fw = firewall(windows=True)
    fw.set_fast_path({FlowState.ESTABLISHED})
    established(fw)
    d = check(fw.decide(tcp(FIN | ACK, reply=True, seq=S + 16 + 10_000_000, ack=C + 6), T0 + 5))
    assert (d.verdict, d.after) == (Verdict.ACCEPT, FlowState.FIN_WAIT)


def test_a_record_from_elsewhere_makes_the_window_relearned() -> None:
    """Another instance moved the flow on (it carried it for a while, e.g. between two bucket
    moves): the window here is stale, so it is relearned; a blind RST still cannot close it."""
    fw = firewall(windows=True)
    key = established(fw)

    class Rec:
        state, orig_is_lo, version, proto = FlowState.ESTABLISHED, True, 40, 6

    Rec.key = key  # type: ignore[attr-defined]
    assert fw.merge(Rec(), T0 + 1)  # type: ignore[arg-type]
    # segments far ahead of what this instance saw: the stream went on elsewhere
    d = check(fw.decide(tcp(ACK, seq=C + 6 + 50_000_000, ack=S + 16 + 90_000_000, data=b"x"), T0 + 1))
    assert d.verdict == Verdict.ACCEPT
    check(fw.decide(tcp(RST, reply=True, seq=S + 3_000_000_000), T0 + 1))
    assert fw.state_of(key, T0 + 1) == FlowState.ESTABLISHED  # a blind RST never closes it
