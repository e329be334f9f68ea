"""A lean Redis connection for the store's hot path: pipelined commands, replies parsed by hiredis.

redis-py's pipelines cost more CPU per write than the rest of an instance's packet path together
(profiled with py-spy under ``bench sync``): command objects, response callbacks, connection-pool
bookkeeping. The two hot operations, the batched writes and the feed's XREAD, go through this
asyncio protocol instead: commands are encoded straight to RESP bytes, sent in one write per batch,
and hiredis (C) splits the replies. Everything else (snapshots, look-ups, admin) keeps redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

Arg = bytes | str | int


def encode(args: tuple[Arg, ...] | list[Arg]) -> bytes:
    """One command in RESP: ``*N`` then ``$len`` + bytes per argument."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for a in args:
        if a.__class__ is bytes:
            append(b"$%d\r\n%b\r\n" % (len(a), a))
        elif a.__class__ is int:
            b = b"%d" % a
            append(b"$%d\r\n%b\r\n" % (len(b), b))
        else:
            b = str(a).encode()
            append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(parts)


class RespError(Exception):
    """The connection failed or closed; every waiting command gets this."""


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.waiters
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not waiters:  # a reply nobody asked for: the stream is out of step
                self._fail(RespError("unexpected reply"))
                return
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RespError(f"connection lost: {exc}" if exc else "connection closed"))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


class RespConnection:
    """One connection; ``call`` pipelines a list of commands and returns their replies.

    Error replies come back in place as ``hiredis.ReplyError`` instances, not raised."""

    def __init__(self, url: str, timeout: float) -> None:
        u = urlsplit(url)
        self._scheme = u.scheme
        self._host = u.hostname or "127.0.0.1"
        self._port = u.port or 6379
        self._path = u.path if u.scheme == "unix" else ""
        self._password = unquote(u.password) if u.password else None
        self._user = unquote(u.username) if u.username else None
        db = u.path.lstrip("/") if u.scheme != "unix" else ""
        self._db = int(db) if db.isdigit() else 0
        self.timeout = timeout
        self._proto: _Protocol | None = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._scheme == "unix":
            coro = loop.create_unix_connection(_Protocol, self._path)
        else:
            ctx = ssl.create_default_context() if self._scheme == "rediss" else None
            coro = loop.create_connection(_Protocol, self._host, self._port, ssl=ctx)
        try:
            _, proto = await asyncio.wait_for(coro, self.timeout)
        except (OSError, TimeoutError) as e:
            raise RespError(f"cannot connect: {e or 'timed out'}") from e
        hello: list[tuple[Arg, ...]] = []
        if self._password is not None:
            hello.append(("AUTH", self._user, self._password) if self._user else ("AUTH", self._password))
        if self._db:
            hello.append(("SELECT", self._db))
        self._proto = proto
        if hello:
            for reply in await self._send(proto, hello, self.timeout):
                if isinstance(reply, hiredis.ReplyError):
                    self.close()
                    raise RespError(str(reply))
        return proto

    async def call(self, commands: list[tuple[Arg, ...]], timeout: float | None = None) -> list[Any]:
        proto = self._proto
        if proto is None or proto.closed:
            proto = await self._connect()
        return await self._send(proto, commands, self.timeout if timeout is None else timeout)

    async def _send(self, proto: _Protocol, commands: list[tuple[Arg, ...]], timeout: float) -> list[Any]:
        assert proto.transport is not None
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in commands]
        proto.waiters.extend(futs)
        proto.transport.write(b"".join([encode(c) for c in commands]))
        try:
            return await asyncio.wait_for(asyncio.gather(*futs), timeout)
        except TimeoutError:
            # Replies may still come; the stream is no longer trustworthy: start afresh next time.
            self.close()
            raise RespError(f"no answer within {timeout:.3f} s") from None

    def close(self) -> None:
        if self._proto is not None:
            self._proto._fail(RespError("closed"))
            self._proto = None
