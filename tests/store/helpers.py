"""Small helpers shared by the store tests."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fwcluster.core.states import FlowState
from fwcluster.statetable.record import FlowRecord

Run = Callable[[Coroutine[Any, Any, Any]], Any]

S = FlowState
LONG_TTL = 60_000


def fk(name: bytes) -> bytes:
    """A TCP flow key named ``name``: a valid key is itself, a shorter name is padded to 13 bytes
    behind the protocol byte (the store hands back flow keys only: record.py's strict decoder)."""
    if len(name) in (13, 37) and name[0] == 6:
        return name
    assert len(name) <= 12, name
    return b"\x06" + name.ljust(12, b"\x00")


def rec(key: bytes, state: FlowState, version: int, writer: str = "t", orig_is_lo: bool = True) -> FlowRecord:
    return FlowRecord(fk(key), state, orig_is_lo, version, 6, writer)


def pos(position: str) -> tuple[int, ...]:
    """A feed position as something ordered: Redis stream ids ``ms-seq``, memory ``seq``."""
    return tuple(int(part) for part in position.split("-"))
