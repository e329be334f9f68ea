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
# Both ends sent their FIN; only the ACK of the last one is missing. With ECMP steering the two
# directions of a close cross two instances, which change the flow at the same moment; the store
# orders their steps as they arrive, so a close that ended (the server's FIN, the client's FIN,
# the server's ACK of it) can stay LAST_ACK there (the ACK applied before the client's FIN made
# CLOSE_WAIT, and the FIN replayed on that, LAST_ACK). A SYN from the opener's side on such a
# flow can only be a new connection (the opener's socket of the old one is gone), so with ECMP
# steering a newer SYN_SENT over LAST_ACK is the four-tuple's next life, as over TIME_WAIT
# (engine: the kernel's resync of an ignored SYN, done at the SYN: docs/architecture.md).
BOTH_FINS = frozenset({S.LAST_ACK})
