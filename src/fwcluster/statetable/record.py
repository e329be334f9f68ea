"""One flow as the shared store holds it, and the rule a clean write follows.

Store value (ASCII, so it reads in redis-cli): ``state:orig_is_lo:version:proto:writer``,
e.g. ``3:1:3:6:fw2``. The flow key is the core's direction-independent key (bytes).
"""

from __future__ import annotations

from typing import NamedTuple

from fwcluster.core.decision import StateChange
from fwcluster.core.flowtable import VERSION_MOD, version_newer
from fwcluster.core.states import RANK, REOPENABLE, FlowState

S = FlowState

_STATE = {str(int(s)).encode(): s for s in FlowState}  # b"3" -> ESTABLISHED, without Enum's slow call
_new = tuple.__new__


class FlowRecord(NamedTuple):
    """A NamedTuple rather than a dataclass: instances feeds decode thousands a second."""

    key: bytes
    state: FlowState
    orig_is_lo: bool
    version: int
    proto: int
    writer: str

    def encode(self) -> bytes:
        return f"{int(self.state)}:{int(self.orig_is_lo)}:{self.version}:{self.proto}:{self.writer}".encode()

    @classmethod
    def decode(cls, key: bytes, raw: bytes) -> FlowRecord:
        state, orig, version, proto, writer = raw.split(b":", 4)
        return _new(cls, (key, _STATE[state], orig == b"1", int(version), int(proto), writer.decode()))

    @classmethod
    def from_change(cls, ev: StateChange, writer: str) -> FlowRecord:
        return cls(ev.key, ev.after, ev.orig_is_lo, ev.version, ev.proto, writer)


def clean_allows(current: FlowRecord | None, new: FlowRecord) -> bool:
    """May a clean (conditional) write replace ``current`` with ``new``?

    - a flow nobody stored yet: yes;
    - a new SYN on a connection that is closed in the store (TIME_WAIT, CLOSE): yes, a reopen;
    - otherwise only a newer version (serial-number arithmetic, the versions wrap) that does not
      move the flow backwards.
    The Redis backend runs the same rule server-side (statetable/redis_store.py, CLEAN_WRITE).
    """
    if current is None:
        return True
    if new.state == S.SYN_SENT and current.state in REOPENABLE:
        return True
    return version_newer(new.version, current.version) and RANK[new.state] >= RANK[current.state]


def reopened_version(current: FlowRecord, new: FlowRecord) -> int:
    """The version a reopen is stored with: its own when that is newer, else one past the store's
    (wrapping), so that the flow keeps moving forward for every follower."""
    if version_newer(new.version, current.version):
        return new.version
    return (current.version + 1) % VERSION_MOD
