"""The store interface the shared state table talks to (async; one implementation per backend)."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from fwcluster.statetable.record import BadRecords, FlowRecord


@dataclass(frozen=True, slots=True)
class WriteResult:
    applied: bool  # False: a clean write was refused (the store holds something newer), or ...
    current: FlowRecord | None  # what the store holds after the write (None: nothing, or unknown)
    refused: str | None = None  # ... the server refused the write itself (its error: OOM, NOPERM)


class StoreError(Exception):
    """The store did not answer (down, unreachable, timed out)."""


class ReplicaLagError(StoreError):
    """The primary applied the writes, but fewer replicas than asked acknowledged them in time.
    Not an outage: the writes are simply not confirmed."""


class Store(abc.ABC):
    """An authoritative copy of the state table plus a change feed.

    Records read back from the store that fail the strict decoder are skipped (``get`` answers
    None for them) and counted in ``bad_records``."""

    bad_records: BadRecords
    # ``[sync] follow = "backup"``: each writer's changes go to a stream of its own, and the
    # store keeps an index of each writer's flows (``owned``); else one feed for everybody.
    per_writer: bool = False

    @abc.abstractmethod
    async def write(
        self, records: list[tuple[FlowRecord, int]], clean: bool, replicas: int = 0
    ) -> list[WriteResult]:
        """Store each (record, ttl_ms) and append it to the feed; in one round trip where possible.

        ``clean``: atomic conditional update by :func:`record.clean_allows`; else a blind write.
        ``replicas``: wait until that many replicas acknowledged (where the store has replicas).
        A REMOVED record deletes the flow.
        """

    @abc.abstractmethod
    async def get(self, keys: list[bytes]) -> list[FlowRecord | None]:
        """The current records of ``keys`` (None where the store has none)."""

    @abc.abstractmethod
    async def snapshot(self) -> tuple[list[FlowRecord], str]:
        """Every stored flow, and the feed position to follow from so nothing is missed."""

    @abc.abstractmethod
    async def feed(self, position: str, block_ms: int, count: int) -> tuple[list[FlowRecord], str]:
        """Changes after ``position`` (waiting up to ``block_ms`` for one); the new position."""

    @abc.abstractmethod
    async def follow(
        self, positions: dict[str, str], block_ms: int, count: int
    ) -> tuple[list[FlowRecord], dict[str, str]]:
        """Changes written by the writers in ``positions`` (writer id -> stream position) after
        those positions (waiting up to ``block_ms`` for one); the new positions (``per_writer``)."""

    @abc.abstractmethod
    async def position(self, writer: str) -> str:
        """The position of ``writer``'s stream now: following from it misses nothing later."""

    @abc.abstractmethod
    async def owned(self, writer: str) -> list[FlowRecord]:
        """The current records of the live flows ``writer`` wrote (its index; a flow another
        writer changed since may be among them, with its current record)."""

    @abc.abstractmethod
    async def members(self) -> dict[str, str]:
        """The membership the leading master publishes (instance id -> role); empty if none."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreError unless the store answers."""

    @abc.abstractmethod
    async def clear(self) -> None:
        """Remove every flow and the feed (tests and benchmarks)."""

    @abc.abstractmethod
    async def close(self) -> None: ...
