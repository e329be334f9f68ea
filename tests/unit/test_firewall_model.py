"""Random packet sequences against a small reference model of the tracker.

The model is written straight from the documented behaviour (the TCP table with its documented
differences, UDP UNREPLIED/REPLIED, per-state timeouts) and keeps no packed integers, so it checks
the firewall's bit packing, direction handling and expiry on sequences no hand-written test has.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from fwcluster.core.decision import Decision, Reason, Verdict
from fwcluster.core.packet import Parsed
from fwcluster.core.rules import PROTO_TCP
from fwcluster.core.states import FlowState
from fwcluster.core.tcp import (
    BAD_FLAGS,
    CL,
    IG,
    IV,
    ORIGINAL,
    REPLY,
    SS,
    SYN_SET,
    TCP_TRANSITIONS,
    TW,
    flag_set,
)
from fwcluster.core.timeouts import Timeouts

from .builders import ACK, FIN, PSH, RST, SYN, T0, check, firewall, parsed, tcp, udp

TIMEOUTS = Timeouts(
    tcp_syn_sent=1.0,
    tcp_syn_recv=2.0,
    tcp_established=3.0,
    tcp_fin_wait=4.0,
    tcp_close_wait=5.0,
    tcp_last_ack=6.0,
    tcp_time_wait=7.0,
    tcp_close=8.0,
    tcp_syn_sent2=9.0,
    udp=1.5,
    udp_stream=2.5,
)
TCP_MS = [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]
UDP_MS = {FlowState.UNREPLIED: 1500, FlowState.REPLIED: 2500}


@dataclass
class Entry:
    state: FlowState
    orig_is_lo: bool
    expiry_ms: int


Outcome = tuple[Verdict, Reason, FlowState, FlowState]


class Model:
    def __init__(self) -> None:
        self.flows: dict[bytes, Entry] = {}

    def live(self, key: bytes, now_ms: int) -> Entry | None:
        e = self.flows.get(key)
        return e if e is not None and e.expiry_ms > now_ms else None

    def step(self, p: Parsed, now_ms: int) -> Outcome:
        e = self.live(p.key, now_ms)
        if p.proto == PROTO_TCP:
            return self._tcp(p, e, now_ms)
        if e is None:
            self.flows[p.key] = Entry(FlowState.UNREPLIED, p.from_lo, now_ms + UDP_MS[FlowState.UNREPLIED])
            return Verdict.ACCEPT, Reason.RULE_ACCEPT, FlowState.NONE, FlowState.UNREPLIED
        after = FlowState.REPLIED if p.from_lo != e.orig_is_lo else e.state
        before, e.state, e.expiry_ms = e.state, after, now_ms + UDP_MS[after]
        return Verdict.ACCEPT, Reason.TRACKED, before, after

    def _tcp(self, p: Parsed, e: Entry | None, now_ms: int) -> Outcome:
        fs = flag_set(p.flags)
        none = FlowState.NONE
        if fs == BAD_FLAGS:
            # A flag combination no TCP sends: dropped; a tracked flow keeps (and reports) its state.
            st = none if e is None else e.state
            return Verdict.DROP, Reason.BAD_TCP_FLAGS, st, st
        if e is None:
            if fs != SYN_SET:
                return Verdict.DROP, Reason.NO_FLOW, none, none
            self.flows[p.key] = Entry(FlowState.SYN_SENT, p.from_lo, now_ms + TCP_MS[SS])
            return Verdict.ACCEPT, Reason.RULE_ACCEPT, none, FlowState.SYN_SENT
        direction = REPLY if p.from_lo != e.orig_is_lo else ORIGINAL
        nxt = TCP_TRANSITIONS[direction][fs][e.state]
        if nxt == IG:
            return Verdict.ACCEPT, Reason.IGNORED, e.state, e.state
        if nxt == IV:
            return Verdict.DROP, Reason.INVALID_TRANSITION, e.state, e.state
        before = e.state
        if nxt == SS and before in (TW, CL) and direction == ORIGINAL:
            self.flows[p.key] = Entry(FlowState.SYN_SENT, p.from_lo, now_ms + TCP_MS[SS])
            return Verdict.ACCEPT, Reason.RULE_ACCEPT, before, FlowState.SYN_SENT
        e.state, e.expiry_ms = FlowState(nxt), now_ms + TCP_MS[nxt]
        return Verdict.ACCEPT, Reason.TRACKED, before, e.state


COMMON_FLAGS = [SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST, RST | ACK]
packet_spec = st.tuples(
    st.sampled_from(["tcp", "tcp", "tcp", "udp"]),
    st.integers(min_value=0, max_value=1),  # which of two connections
    st.booleans(),  # IPv6
    st.booleans(),  # reply direction
    st.one_of(st.sampled_from(COMMON_FLAGS), st.integers(min_value=0, max_value=255)),
    st.sampled_from([0.0, 0.0, 0.25, 1.0, 2.0, 5.0, 20.0]),  # time since the previous packet
    st.booleans(),  # run an expiry step first
)


def build(kind: str, conn: int, v6: bool, reply: bool, flags: int) -> bytes:
    if kind == "tcp":
        return tcp(flags, v6=v6, reply=reply, cport=40000 + conn)
    return udp(v6=v6, reply=reply, cport=5000 + conn)


_PACKETS: dict[tuple[str, int, bool, bool, int], tuple[bytes, Parsed]] = {}


def packet(kind: str, conn: int, v6: bool, reply: bool, flags: int) -> tuple[bytes, Parsed]:
    spec = (kind, conn, v6, reply, flags if kind == "tcp" else 0)
    if spec not in _PACKETS:  # scapy is slow: build each distinct packet once
        buf = build(*spec)
        _PACKETS[spec] = (buf, parsed(buf))
    return _PACKETS[spec]


@settings(max_examples=300, deadline=None)
@given(st.lists(packet_spec, min_size=1, max_size=30))
def test_firewall_agrees_with_the_model(specs: list[tuple[str, int, bool, bool, int, float, bool]]) -> None:
    fw = firewall(timeouts=TIMEOUTS)
    model = Model()
    now = T0
    for kind, conn, v6, reply, flags, dt, sweep in specs:
        now += dt
        now_ms = int(now * 1000)
        if sweep:
            for ev in fw.expire(now, 2):
                assert ev.after == FlowState.REMOVED
                assert model.live(ev.key, now_ms) is None  # only dead flows are swept
        buf, p = packet(kind, conn, v6, reply, flags)
        want = model.step(p, now_ms)
        d: Decision = check(fw.decide(buf, now))
        assert (d.verdict, d.reason, d.before, d.after) == want, (kind, conn, v6, reply, flags, now)
        for key, entry in model.flows.items():
            alive = model.live(key, now_ms)
            assert fw.state_of(key, now) == (alive.state if alive else None)
            if alive is not None and d.event is not None and d.event.key == key:
                assert d.event.orig_is_lo == entry.orig_is_lo
