"""Small helpers shared by the store tests."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fwcluster.core.states import FlowState
from fwcluster.statetable.record import FlowRecord

Run = Callable[[Coroutine[Any, Any, Any]], Any]

S = FlowState
LONG_TTL = 60_000


def rec(key: bytes, state: FlowState, version: int, writer: str = "t", orig_is_lo: bool = True) -> FlowRecord:
    return FlowRecord(key, state, orig_is_lo, version, 6, writer)


def pos(position: str) -> tuple[int, ...]:
    """A feed position as something ordered: Redis stream ids ``ms-seq``, memory ``seq``."""
    return tuple(int(part) for part in position.split("-"))
