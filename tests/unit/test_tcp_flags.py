"""TCP flag classification (the kernel's tcp_valid_flags + get_conntrack_index) and invalid probes."""

from __future__ import annotations

import pytest

from fwcluster.core.decision import Reason, Verdict
from fwcluster.core.states import TCP_STATES, FlowState
from fwcluster.core.tcp import (
    ACK_SET,
    BAD_FLAGS,
    BAD_FLAGS_RESULT,
    FIN_SET,
    ORIGINAL,
    REPLY,
    RST_SET,
    SYN_SET,
    SYNACK_SET,
    TCP_TRANSITIONS,
    flag_set,
    next_state,
)

from .builders import ACK, CWR, ECE, FIN, PSH, RST, SYN, T0, URG, check, drive, firewall, key_of, tcp

# The combinations a real TCP sends, PSH/ECE/CWR masked out (tcp_valid_flags in the kernel).
VALID = {SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK, FIN | ACK | URG, ACK, ACK | URG}


def kernel_index(flags: int) -> int:
    if flags & ~(PSH | ECE | CWR) not in VALID:
        return BAD_FLAGS
    if flags & RST:
        return RST_SET
    if flags & SYN:
        return SYNACK_SET if flags & ACK else SYN_SET
    if flags & FIN:
        return FIN_SET
    return ACK_SET


@pytest.mark.parametrize("flags", range(256))
def test_flag_set_matches_the_kernel(flags: int) -> None:
    assert flag_set(flags) == kernel_index(flags)


def test_flattened_table_agrees_with_the_table() -> None:
    for direction in (ORIGINAL, REPLY):
        for flags in range(256):
            fs = flag_set(flags)
            for state in TCP_STATES:
                got = next_state(direction, flags, state)
                if fs == BAD_FLAGS:
                    assert got == BAD_FLAGS_RESULT
                else:
                    assert got == TCP_TRANSITIONS[direction][fs][state]


PROBES = {
    "NULL": 0,
    "FIN-only": FIN,
    "XMAS": FIN | PSH | URG,
    "SYN+FIN": SYN | FIN,
    "SYN+RST": SYN | RST,
    "SYN+FIN+ACK": SYN | FIN | ACK,
    "PSH-only": PSH,
    "URG-only": URG,
    "FIN+RST+ACK": FIN | RST | ACK,
}


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("flags", PROBES.values(), ids=PROBES.keys())
def test_probes_without_a_flow_are_bad_flags(flags: int, v6: bool) -> None:
    fw = firewall()
    d = check(fw.decide(tcp(flags, v6=v6), T0))
    assert (d.verdict, d.reason, d.event) == (Verdict.DROP, Reason.BAD_TCP_FLAGS, None)
    assert len(fw.table) == 0


@pytest.mark.parametrize("flags", PROBES.values(), ids=PROBES.keys())
def test_probes_inside_a_flow_are_bad_flags_and_leave_the_state(flags: int) -> None:
    fw = firewall()
    key = drive(fw, FlowState.ESTABLISHED)
    assert key is not None
    for reply in (False, True):
        d = check(fw.decide(tcp(flags, reply=reply), T0 + 1))
        assert (d.verdict, d.reason, d.event) == (Verdict.DROP, Reason.BAD_TCP_FLAGS, None)
        assert fw.state_of(key, T0 + 1) == FlowState.ESTABLISHED


NO_FLOW = {
    "SYN-ACK": SYN | ACK,
    "ACK": ACK,
    "PSH-ACK": PSH | ACK,
    "FIN-ACK": FIN | ACK,
    "RST": RST,
    "RST-ACK": RST | ACK,
}


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("flags", NO_FLOW.values(), ids=NO_FLOW.keys())
def test_packets_that_cannot_open_a_flow_are_no_flow(flags: int, v6: bool) -> None:
    fw = firewall()
    for reply in (False, True):
        buf = tcp(flags, v6=v6, reply=reply)
        d = check(fw.decide(buf, T0))
        assert (d.verdict, d.reason) == (Verdict.DROP, Reason.NO_FLOW)
        assert (d.before, d.after, d.event) == (FlowState.NONE, FlowState.NONE, None)
        assert fw.state_of(key_of(buf), T0) is None
    assert len(fw.table) == 0


@pytest.mark.parametrize(
    "flags",
    [SYN | URG, SYN | ECE | CWR, SYN | PSH],
    ids=["SYN+URG", "SYN+ECE+CWR", "SYN+PSH"],
)
def test_syn_variants_open_a_flow(flags: int) -> None:
    fw = firewall()
    d = check(fw.decide(tcp(flags), T0))
    assert (d.verdict, d.reason, d.after) == (Verdict.ACCEPT, Reason.RULE_ACCEPT, FlowState.SYN_SENT)


def test_psh_ece_cwr_and_urg_do_not_change_the_flag_set() -> None:
    fw = firewall()
    key = drive(fw, FlowState.ESTABLISHED)
    for flags in (PSH | ACK, ECE | ACK, CWR | ACK, URG | ACK, URG | PSH | ACK):
        d = check(fw.decide(tcp(flags, data=b"payload"), T0 + 1))
        assert (d.verdict, d.reason, d.event) == (Verdict.ACCEPT, Reason.TRACKED, None)
    assert key is not None
    assert fw.state_of(key, T0 + 1) == FlowState.ESTABLISHED
