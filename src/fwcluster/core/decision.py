"""What the core returns for every packet: a verdict, why, and the flow's state change."""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from fwcluster.core.states import FlowState


class Verdict(IntEnum):
    ACCEPT = 0
    DROP = 1
    REJECT = 2  # drop, and answer the sender (TCP RST or ICMP unreachable)


class Reason(IntEnum):
    """Why a packet got its verdict. Counted per reason by the datapath."""

    # accepted
    TRACKED = 0  # valid packet of a tracked flow
    RULE_ACCEPT = 1  # opens a flow; a rule (or the default policy) accepts it
    RELATED = 2  # ICMP error quoting a tracked flow
    IGNORED = 3  # the TCP table says "ignore" (sIG): passes, state unchanged, as in the kernel
    # refused by policy
    RULE_DROP = 10
    RULE_REJECT = 11
    TABLE_FULL = 12  # would open a flow, but the flow table is at its bound
    # refused for want of the shared store (the engine gives these; the core never does)
    OUTAGE = 13  # would open a flow while the store is unreachable (outage = "refuse")
    STORE_TIMEOUT = 14  # held for a write the store did not confirm in time
    STORE_FAILED = 15  # held for a write the store refused or failed (after the retries)
    LOOKUP_TIMEOUT = 16  # held for a look-up the store did not answer in time: never decided
    # invalid: malformed packets
    TRUNCATED = 20
    BAD_VERSION = 21
    BAD_HEADER_LENGTH = 22
    BAD_TOTAL_LENGTH = 23
    BAD_OPTIONS = 24
    FRAGMENT = 25  # a fragment without its L4 header
    UNKNOWN_PROTOCOL = 26
    BAD_L4_HEADER = 27
    BAD_CHECKSUM = 28  # a TCP RST or FIN whose checksum is wrong (the endpoint would discard it)
    # invalid: well-formed, but not allowed by the connection state
    BAD_TCP_FLAGS = 30  # NULL, XMAS, FIN without ACK, SYN+FIN, ...
    INVALID_TRANSITION = 31  # the TCP table says sIV for this state
    NO_FLOW = 32  # cannot open a connection and belongs to none (SYN-ACK, bare ACK, echo reply, ...)
    UNTRACKED_ICMP = 33  # ICMP type that neither opens a flow nor quotes one
    ICMP_MISDIRECTED = 34  # ICMP error not travelling back to the quoted packet's source
    OUT_OF_WINDOW = 35  # a TCP segment outside the connection's sequence window (core/window.py)


ACCEPT_REASONS = frozenset({Reason.TRACKED, Reason.RULE_ACCEPT, Reason.RELATED, Reason.IGNORED})
MALFORMED_REASONS = frozenset(r for r in Reason if 20 <= r < 30)
INVALID_REASONS = frozenset(r for r in Reason if r >= 20)


class StateChange(NamedTuple):
    """A flow moved from one state to another: the unit the state table publishes."""

    key: bytes  # direction-independent flow key (see core.packet)
    proto: int
    before: FlowState
    after: FlowState  # REMOVED when the flow left the table
    orig_is_lo: bool  # which endpoint of the key opened the flow
    time: float  # the packet's (or expiry's) timestamp
    version: int = 1  # the flow's version after the change (see core.flowtable)
    window: int = 0  # the TCP window state after the change (local: never shared, core.window)


class Decision(NamedTuple):
    verdict: Verdict
    reason: Reason
    before: FlowState  # NONE when the packet belongs to no flow
    after: FlowState
    event: StateChange | None  # set when the flow's state changed
    reply: bytes | None = None  # for REJECT: the RST or ICMP error to send back
