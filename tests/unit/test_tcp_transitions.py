"""Every cell of ``TCP_TRANSITIONS`` (direction x flag set x state), driven through ``Firewall.decide``.

Each case brings a fresh flow to a state with a named packet sequence (``builders.STATE_PATHS``),
sends one packet and checks the verdict, the reason, the states before and after, the state left
in the table and the StateChange event (present exactly when the state changed).

The expected outcome is the table's, with the documented differences of the core:

* NONE: with no flow there is no direction either, so a packet the "wrong" way is just another
  first packet: only a SYN opens a flow (through the rules), anything else is NO_FLOW.
* the "none" flag set (no SYN, FIN, ACK or RST) holds no combination a TCP sends, so every such
  packet is BAD_TCP_FLAGS before the table is consulted, as the kernel's tcp_error does.
* IG passes with Reason.IGNORED and the state stays; IV drops with INVALID_TRANSITION.
* a SYN in TIME_WAIT or CLOSE in the original direction reopens: it passes the rules again.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import pytest

from fwcluster.core.decision import Reason, StateChange, Verdict
from fwcluster.core.rules import PROTO_TCP
from fwcluster.core.states import TCP_STATES, FlowState
from fwcluster.core.tcp import (
    ACK_SET,
    CL,
    FIN_SET,
    IG,
    IV,
    NO,
    NONE_SET,
    ORIGINAL,
    REPLY,
    RST_SET,
    SS,
    SYN_SET,
    SYNACK_SET,
    TCP_TRANSITIONS,
    TW,
)

from .builders import ACK, FIN, RST, SYN, T0, check, drive, firewall, parsed, path_name, tcp

# The packet used for each flag set of the table.
FLAG_SETS = {
    SYN_SET: ("SYN", SYN),
    SYNACK_SET: ("SYN-ACK", SYN | ACK),
    FIN_SET: ("FIN", FIN | ACK),
    ACK_SET: ("ACK", ACK),
    RST_SET: ("RST", RST),
    NONE_SET: ("NULL", 0),
}
DIRECTIONS = {ORIGINAL: "orig", REPLY: "reply"}


class Expected(NamedTuple):
    verdict: Verdict
    reason: Reason
    after: FlowState


class Case(NamedTuple):
    direction: int
    flag_set: int
    state: FlowState

    def expected(self) -> Expected:
        if self.flag_set == NONE_SET:
            return Expected(Verdict.DROP, Reason.BAD_TCP_FLAGS, self.state)
        if self.state == FlowState.NONE:
            # No flow, no direction: the packet is judged as the first packet of a flow.
            if TCP_TRANSITIONS[ORIGINAL][self.flag_set][NO] == SS:
                return Expected(Verdict.ACCEPT, Reason.RULE_ACCEPT, FlowState.SYN_SENT)
            return Expected(Verdict.DROP, Reason.NO_FLOW, FlowState.NONE)
        nxt = TCP_TRANSITIONS[self.direction][self.flag_set][self.state]
        if nxt == IG:
            return Expected(Verdict.ACCEPT, Reason.IGNORED, self.state)
        if nxt == IV:
            return Expected(Verdict.DROP, Reason.INVALID_TRANSITION, self.state)
        if nxt == SS and self.state in (TW, CL) and self.direction == ORIGINAL:
            return Expected(Verdict.ACCEPT, Reason.RULE_ACCEPT, FlowState.SYN_SENT)  # reopened
        return Expected(Verdict.ACCEPT, Reason.TRACKED, FlowState(nxt))

    @property
    def id(self) -> str:
        e = self.expected()
        if e.reason == Reason.TRACKED:
            outcome = e.after.name
        elif e.reason == Reason.RULE_ACCEPT:
            outcome = f"{e.after.name} (via rules)"
        else:
            outcome = e.reason.name
        flag_name = FLAG_SETS[self.flag_set][0]
        return f"{path_name(self.state)} | {DIRECTIONS[self.direction]} {flag_name} -> {outcome}"


CASES = [
    Case(direction, flag_set, state)
    for direction, flag_set, state in itertools.product(DIRECTIONS, FLAG_SETS, TCP_STATES)
]


def test_every_cell_of_the_table_has_a_case() -> None:
    assert len(TCP_TRANSITIONS) == 2
    assert all(len(row) == 10 for rows in TCP_TRANSITIONS for row in rows)
    assert len(CASES) == 2 * 6 * 10
    cells = {(c.direction, c.flag_set, int(c.state)) for c in CASES}
    assert cells == set(itertools.product(range(2), range(6), range(10)))
    assert len({c.id for c in CASES}) == len(CASES)  # every id names its own packet sequence


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_transition(case: Case, v6: bool) -> None:
    fw = firewall()
    drive(fw, case.state, v6=v6)
    opener_is_lo = parsed(tcp(SYN, v6=v6)).from_lo
    buf = tcp(FLAG_SETS[case.flag_set][1], v6=v6, reply=case.direction == REPLY)
    p = parsed(buf)
    now = T0 + 1
    expected = case.expected()

    d = check(fw.decide(buf, now))

    assert (d.verdict, d.reason) == (expected.verdict, expected.reason), d
    assert d.reply is None
    assert (d.before, d.after) == (case.state, expected.after), d
    left = fw.state_of(p.key, now)
    assert left == (None if expected.after == FlowState.NONE else expected.after)
    if expected.after == case.state:
        assert d.event is None
    else:
        orig_is_lo = p.from_lo if case.state == FlowState.NONE else opener_is_lo
        assert (
            d.event is not None
            and d.event[:6] == StateChange(p.key, PROTO_TCP, case.state, expected.after, orig_is_lo, now)[:6]
        )


# The kernel's tcp_conntracks (net/netfilter/nf_conntrack_proto_tcp.c, current mainline).
# fmt: off
_, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2 = range(10)
sNO, sIV, sIG = 0, IV, IG
KERNEL = (
    (
        (sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2),
        (sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR),
        (sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV),
        (sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV),
        (sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),
        (sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV),
    ),
    (
        (sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2),
        (sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR),
        (sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV),
        (sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG),
        (sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),
        (sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV),
    ),
)
# fmt: on

# The documented differences: no loose pick-up from a bare ACK; a reply SYN in TIME_WAIT does
# not reopen with swapped roles.
DIFFERENCES = {(ORIGINAL, ACK_SET, NO): sIV, (REPLY, SYN_SET, TW): sIV}


def test_table_is_the_kernels_but_for_the_documented_differences() -> None:
    for direction, flag_set, state in itertools.product(range(2), range(6), range(10)):
        want = DIFFERENCES.get((direction, flag_set, state), KERNEL[direction][flag_set][state])
        assert TCP_TRANSITIONS[direction][flag_set][state] == want, (direction, flag_set, state)
