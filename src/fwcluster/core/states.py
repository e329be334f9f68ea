"""Flow states. TCP states keep the Linux kernel's numbering (enum tcp_conntrack)."""

from __future__ import annotations

from enum import IntEnum


class FlowState(IntEnum):
    # TCP, as nf_conntrack_proto_tcp.c numbers them.
    NONE = 0
    SYN_SENT = 1
    SYN_RECV = 2
    ESTABLISHED = 3
    FIN_WAIT = 4
    CLOSE_WAIT = 5
    LAST_ACK = 6
    TIME_WAIT = 7
    CLOSE = 8
    SYN_SENT2 = 9
    # UDP and ICMP echo: traffic seen in one direction only, or in both.
    UNREPLIED = 10
    REPLIED = 11
    # Not a stored state: the flow left the table (expired, closed out or evicted).
    REMOVED = 15


TCP_STATES = tuple(FlowState(i) for i in range(10))


S = FlowState
# How far along its life a flow is. The shared table never moves a flow to a lower rank (no
# ESTABLISHED overwritten by SYN_RECV), except that a new SYN reopens a closed connection. The
# engine applies this rule to records it learns; the store applies it to clean writes.
RANK: dict[FlowState, int] = {
    S.NONE: 0,
    S.SYN_SENT: 1,
    S.SYN_SENT2: 1,
    S.UNREPLIED: 1,
    S.SYN_RECV: 2,
    S.ESTABLISHED: 3,
    S.REPLIED: 3,
    S.FIN_WAIT: 4,
    S.CLOSE_WAIT: 4,
    S.LAST_ACK: 5,
    S.TIME_WAIT: 6,
    S.CLOSE: 7,
    S.REMOVED: 8,
}
REOPENABLE = frozenset({S.TIME_WAIT, S.CLOSE})
# Closing, not closed: with ECMP steering the store can keep an earlier life in one of these after
# it ended (each instance saw one direction of the close). A newer SYN_SENT over them is the
# four-tuple's next life, written only by an instance whose SYN already passed as a new
# connection (engine: Engine._new_life).
CLOSING = frozenset({S.FIN_WAIT, S.CLOSE_WAIT, S.LAST_ACK})
