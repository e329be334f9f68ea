"""One flow as the shared store holds it, the strict decoder for what the store hands back, and
the rule a clean write follows.

Store value (ASCII, so it reads in redis-cli): ``state:orig_is_lo:version:proto:writer``,
e.g. ``3:1:3:6:fw2``. The flow key is the core's direction-independent key (bytes).

Whatever the store hands back is decoded strictly (:meth:`FlowRecord.decode`): anyone who can
write to the store could have put anything there. A record is refused (:class:`BadRecord`) unless

- the key is a flow key: 13 bytes (IPv4: TCP, UDP or ICMP) or 37 bytes (IPv6: TCP, UDP or
  ICMPv6), its first byte the protocol;
- the state is one the protocol has (TCP: SYN_SENT .. SYN_SENT2; UDP and ICMP: UNREPLIED,
  REPLIED; any: REMOVED), ``orig_is_lo`` is ``0`` or ``1``, the version is a decimal in
  ``0 .. VERSION_MOD - 1`` written without sign or leading zeros, the protocol field equals the
  key's protocol byte;
- the writer is 1 to ``WRITER_MAX`` printable ASCII characters (an instance id).

:class:`BadRecords` counts the refused ones by where they came from and logs a line now and then;
the callers skip them (a bad record never ends a task).
"""

from __future__ import annotations

import logging
import re
from typing import NamedTuple

from fwcluster.core.decision import StateChange
from fwcluster.core.flowtable import VERSION_MOD, version_newer
from fwcluster.core.rules import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP
from fwcluster.core.states import CLOSING, RANK, REOPENABLE, TCP_STATES, FlowState
from fwcluster.statetable.guard import CountedLog

S = FlowState
log = logging.getLogger("fwcluster.statetable")

WRITER_MAX = 64  # bytes of a writer id
KEY_PROTOS = {
    13: frozenset({PROTO_TCP, PROTO_UDP, PROTO_ICMP}),
    37: frozenset({PROTO_TCP, PROTO_UDP, PROTO_ICMPV6}),
}
_TCP = frozenset(s for s in TCP_STATES if s != S.NONE) | {S.REMOVED}
_OTHER = frozenset({S.UNREPLIED, S.REPLIED, S.REMOVED})
# proto field -> (proto, its states by their field): b"3" -> ESTABLISHED without Enum's slow call
_PROTO: dict[bytes, tuple[int, dict[bytes, FlowState]]] = {
    str(p).encode(): (p, {str(int(s)).encode(): s for s in (_TCP if p == PROTO_TCP else _OTHER)})
    for p in (PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_ICMPV6)
}
_VERSION = {str(v).encode(): v for v in range(VERSION_MOD)}  # canonical decimals only
_ORIG = frozenset({b"0", b"1"})
_WRITER = re.compile(rb"[!-~]{1,%d}" % WRITER_MAX)
_new = tuple.__new__


class BadRecord(ValueError):
    """What the store handed back is not a flow record (the message says why, in a few words)."""


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
    def decode(cls, key: object, raw: object) -> FlowRecord:
        """The record of flow ``key`` from its store value ``raw``; :class:`BadRecord` unless
        both are what this module's doc allows."""
        if not isinstance(key, bytes) or not isinstance(raw, bytes):
            raise BadRecord("not bytes")
        protos = KEY_PROTOS.get(len(key))
        if protos is None:
            raise BadRecord(f"key of {len(key)} bytes (a flow key has 13 or 37)")
        if key[0] not in protos:
            raise BadRecord(f"protocol byte {key[0]} in a {len(key)}-byte key")
        parts = raw.split(b":", 4)
        if len(parts) != 5:
            raise BadRecord("not state:orig:version:proto:writer")
        state, orig, version, proto, writer = parts
        by_proto = _PROTO.get(proto)
        if by_proto is None or by_proto[0] != key[0]:
            raise BadRecord(f"protocol {proto[:8]!r} does not match the key's {key[0]}")
        s = by_proto[1].get(state)
        if s is None:
            raise BadRecord(f"state {state[:8]!r} unknown for protocol {key[0]}")
        v = _VERSION.get(version)
        if v is None:
            raise BadRecord(f"version {version[:8]!r} not in 0..{VERSION_MOD - 1}")
        if orig not in _ORIG:
            raise BadRecord(f"orig_is_lo {orig[:8]!r} not 0 or 1")
        if _WRITER.fullmatch(writer) is None:
            raise BadRecord(f"writer not 1..{WRITER_MAX} printable ASCII characters")
        return _new(cls, (key, s, orig == b"1", v, key[0], writer.decode("ascii")))

    @classmethod
    def from_change(cls, ev: StateChange, writer: str) -> FlowRecord:
        return cls(ev.key, ev.after, ev.orig_is_lo, ev.version, ev.proto, writer)


class BadRecords:
    """Records refused by the strict decoder, counted by source (``by_source``): ``feed`` (feed
    entries), ``lookup`` (answers to look-ups), ``load`` (snapshots: joins, refills, resyncs),
    ``write-answer`` (what a clean write reports the store holds), ``members`` (the membership,
    follow = "backup": unreadable, or entries that are no ASCII). One log line per source at
    most every ``guard.LOG_INTERVAL`` seconds."""

    SOURCES = ("feed", "lookup", "load", "write-answer", "members")

    def __init__(self) -> None:
        self._log = CountedLog(log, self.SOURCES, event="bad-record", key="source")
        self.by_source = self._log.counts

    def decode(self, source: str, key: object, raw: object) -> FlowRecord | None:
        """The record, or None (counted) when it is bad."""
        try:
            return FlowRecord.decode(key, raw)
        except BadRecord as e:
            self.note(source, key, str(e))
            return None

    def note(self, source: str, key: object, why: str) -> None:
        shown = key[:40].hex() if isinstance(key, bytes) else type(key).__name__
        self._log.note(
            source, "skipped a bad store record (%s, key %s): %s", source, shown, why, key=shown, error=why
        )


def clean_allows(current: FlowRecord | None, new: FlowRecord) -> bool:
    """May a clean (conditional) write replace ``current`` with ``new``?

    - a flow nobody stored yet: yes;
    - a new SYN on a connection that is closed in the store (TIME_WAIT, CLOSE): yes, a reopen;
      so is any newer state over a closed connection (at ``established`` the SYN of the next
      life is not shared, its first write is ESTABLISHED: a lower rank than TIME_WAIT);
    - a newer SYN_SENT over a connection still closing in the store (FIN_WAIT, CLOSE_WAIT,
      LAST_ACK: ``CLOSING``): with ECMP steering the next life of a close the store did not see
      end (core/states.py);
    - otherwise only a newer version (serial-number arithmetic, the versions wrap) that does not
      move the flow backwards.
    The Redis backend runs the same rule server-side (statetable/redis_store.py, CLEAN_WRITE),
    where a current value that is no record counts as none (it is replaced).
    """
    if current is None:
        return True
    if current.state in REOPENABLE and (
        new.state == S.SYN_SENT or version_newer(new.version, current.version)
    ):
        return True  # the connection's next life (at a level that does not share the SYN: its first state)
    if not version_newer(new.version, current.version):
        return False
    return RANK[new.state] >= RANK[current.state] or (new.state == S.SYN_SENT and current.state in CLOSING)


def reopened_version(current: FlowRecord, new: FlowRecord) -> int:
    """The version a reopen is stored with: its own when that is newer, else one past the store's
    (wrapping), so that the flow keeps moving forward for every follower."""
    if version_newer(new.version, current.version):
        return new.version
    return (current.version + 1) % VERSION_MOD
