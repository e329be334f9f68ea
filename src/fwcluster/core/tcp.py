"""The TCP state machine, as a table: ``TCP_TRANSITIONS[dir][flag][state] -> next state``.

The table is the Linux kernel's ``tcp_conntracks`` (net/netfilter/nf_conntrack_proto_tcp.c) with
one deliberate difference, in the NONE column: the kernel's default (``nf_conntrack_tcp_loose=1``)
picks up a connection from a bare ACK in mid-stream. Here only a SYN opens a connection; a packet
of a connection this instance has not seen is looked up in the shared state table instead (the
cluster's way to pick up flows), so an ACK, SYN-ACK or FIN with no connection is invalid.
Also, a SYN in the reply direction in TIME_WAIT is invalid here (the kernel reopens with the roles
swapped); only a SYN in the original direction reopens a TIME_WAIT or CLOSE connection.

``IV`` marks a packet as invalid (dropped). ``IG`` marks one as ignored: it passes and the state
stays, as in the kernel, because the peer may answer it with a RST or a SYN-ACK that resyncs us.
"""

from __future__ import annotations

from fwcluster.core.packet import ACK, FIN, RST, SYN, URG
from fwcluster.core.states import FlowState

NO, SS, SR, ES, FW, CW, LA, TW, CL, S2 = range(10)  # the kernel's sNO .. sS2
IG = 13  # ignore: accept, keep state
IV = 14  # invalid: drop

ORIGINAL, REPLY = 0, 1
SYN_SET, SYNACK_SET, FIN_SET, ACK_SET, RST_SET, NONE_SET = range(6)
BAD_FLAGS = 6  # a combination no TCP sends: NULL, XMAS, FIN without ACK, SYN+FIN, SYN+RST, ...

# fmt: off
TCP_TRANSITIONS: tuple[tuple[tuple[int, ...], ...], ...] = (
    # ORIGINAL direction (from the endpoint that sent the first SYN)
    #              NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
    (
        (          SS, SS, IG, IG, IG, IG, IG, SS, SS, S2),  # syn: open; retransmit; TW/CL reopen
        (          IV, IV, SR, IV, IV, IV, IV, IV, IV, SR),  # synack: only in simultaneous open
        (          IV, IV, FW, FW, LA, LA, LA, TW, CL, IV),  # fin: close starts, or second FIN
        (          IV, IV, ES, ES, CW, CW, TW, TW, CL, IV),  # ack: NO->IV (not loose, see above)
        (          IV, CL, CL, CL, CL, CL, CL, CL, CL, CL),  # rst: closes from any state
        (          IV, IV, IV, IV, IV, IV, IV, IV, IV, IV),  # none: no SYN/FIN/ACK/RST set
    ),
    # REPLY direction
    #              NO  SS  SR  ES  FW  CW  LA  TW  CL  S2
    (
        (          IV, S2, IV, IV, IV, IV, IV, IV, IV, S2),  # syn: simultaneous open only
        (          IV, SR, IG, IG, IG, IG, IG, IG, IG, SR),  # synack: the normal answer to a SYN
        (          IV, IV, FW, FW, LA, LA, LA, TW, CL, IV),  # fin
        (          IV, IG, SR, ES, CW, CW, TW, TW, CL, IG),  # ack: SR->SR may answer a late SYN
        (          IV, CL, CL, CL, CL, CL, CL, CL, CL, CL),  # rst
        (          IV, IV, IV, IV, IV, IV, IV, IV, IV, IV),  # none
    ),
)
# fmt: on


def flag_set(flags: int) -> int:
    """The kernel's get_conntrack_index, after its tcp_valid_flags check (PSH/ECE/CWR ignored)."""
    f = flags & (FIN | SYN | RST | ACK | URG)
    if f not in _VALID_FLAGS:
        return BAD_FLAGS
    if f & RST:
        return RST_SET
    if f & SYN:
        return SYNACK_SET if f & ACK else SYN_SET
    if f & FIN:
        return FIN_SET
    return ACK_SET if f & ACK else NONE_SET


# tcp_valid_flags: the only flag combinations a real TCP sends (PSH, ECE and CWR masked out).
_VALID_FLAGS = frozenset(
    {SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK, FIN | ACK | URG, ACK, ACK | URG}
)

# The same table, flattened for the per-packet path: index (dir << 10) | (flag byte & 0x37) << 4 | state.
# Invalid flag combinations map straight to BAD_FLAGS + 16, so one lookup answers both questions.
FLAG_MASK = FIN | SYN | RST | ACK | URG
BAD_FLAGS_RESULT = 16 + BAD_FLAGS


def _flatten() -> tuple[int, ...]:
    flat = [IV] * 2048
    for direction in (ORIGINAL, REPLY):
        for flags in range(64):
            fs = flag_set(flags)
            for state in range(16):
                i = (direction << 10) | ((flags & FLAG_MASK) << 4) | state
                if fs == BAD_FLAGS:
                    flat[i] = BAD_FLAGS_RESULT
                elif state < 10:
                    flat[i] = TCP_TRANSITIONS[direction][fs][state]
    return tuple(flat)


TCP_NEXT = _flatten()


def next_state(direction: int, flags: int, state: FlowState) -> int:
    """Readable form of the per-packet lookup (used by tests and tools)."""
    return TCP_NEXT[(direction << 10) | ((flags & FLAG_MASK) << 4) | state]
