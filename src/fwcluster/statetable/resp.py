"""A lean Redis connection for the store's hot path: pipelined commands, replies parsed by hiredis.

redis-py's pipelines cost more CPU per write than the rest of an instance's packet path together
(profiled with py-spy under ``bench sync``): command objects, response callbacks, connection-pool
bookkeeping. The two hot operations, the batched writes and the feed's XREAD, go through this
asyncio protocol instead: commands are encoded straight to RESP bytes, sent in one write per batch,
and hiredis (C) splits the replies. Everything else (snapshots, look-ups, admin) keeps redis-py.

Given a ``redis+sentinel://`` URL (fwcluster/storeurl.py), each (re)connection first asks the
sentinels, in turn, for the service's primary (``SENTINEL get-master-addr-by-name``) and then
checks with ``ROLE`` that the server it reached is a primary: after a failover the next call
lands on the new one. A connection that fails, or that the store layer closes on a ``READONLY``
reply, is made anew on the next call.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

from fwcluster.storeurl import is_sentinel_url, parse_sentinel_url

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
        self.timeout = timeout
        self._proto: _Protocol | None = None
        self._sentinels: list[tuple[str, int]] = []
        self._service = ""
        if is_sentinel_url(url):
            t = parse_sentinel_url(url)
            self._scheme, self._host, self._port, self._path = "redis", "", 0, ""
            self._password, self._user, self._db = t.password, t.username, t.db
            self._sentinels, self._service = list(t.sentinels), t.service
            return
        u = urlsplit(url)
        self._scheme = u.scheme
        self._host = u.hostname or "127.0.0.1"
        self._port = u.port or 6379
        self._path = u.path if u.scheme == "unix" else ""
        self._password = unquote(u.password) if u.password else None
        self._user = unquote(u.username) if u.username else None
        db = u.path.lstrip("/") if u.scheme != "unix" else ""
        self._db = int(db) if db.isdigit() else 0

    @property
    def address(self) -> tuple[str, int]:
        """Where the connection goes (with sentinels: the primary they named last)."""
        return self._host, self._port

    def _auth(self) -> list[tuple[Arg, ...]]:
        if self._password is None:
            return []
        return [("AUTH", self._user, self._password) if self._user else ("AUTH", self._password)]

    async def _open(self, host: str, port: int) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._scheme == "unix":
            coro = loop.create_unix_connection(_Protocol, self._path)
        else:
            ctx = ssl.create_default_context() if self._scheme == "rediss" else None
            coro = loop.create_connection(_Protocol, host, port, ssl=ctx)
        try:
            _, proto = await asyncio.wait_for(coro, self.timeout)
        except (OSError, TimeoutError) as e:
            raise RespError(f"cannot connect to {host}:{port}: {e or 'timed out'}") from e
        return proto

    async def _ask_sentinels(self) -> tuple[str, int]:
        """The primary's address, from the first sentinel that knows it (which then goes first)."""
        errors = []
        for i, (host, port) in enumerate(self._sentinels):
            proto: _Protocol | None = None
            try:
                proto = await self._open(host, port)
                command: tuple[Arg, ...] = ("SENTINEL", "get-master-addr-by-name", self._service)
                replies = await self._exchange(proto, [*self._auth(), command], self.timeout)
            except RespError as e:
                errors.append(f"{host}:{port}: {e}")
                continue
            finally:
                if proto is not None:
                    proto._fail(RespError("closed"))
            reply = replies[-1]
            bad = next((r for r in replies if isinstance(r, hiredis.ReplyError)), None)
            if bad is not None:
                errors.append(f"{host}:{port}: {bad}")
                continue
            if isinstance(reply, list) and len(reply) == 2 and reply[1].isdigit():
                self._sentinels.insert(0, self._sentinels.pop(i))
                return reply[0].decode(), int(reply[1])
            errors.append(f"{host}:{port}: knows no primary of {self._service!r}")
        raise RespError("no sentinel named a primary: " + "; ".join(errors))

    async def _connect(self) -> _Protocol:
        if self._sentinels:
            self._host, self._port = await self._ask_sentinels()
        proto = await self._open(self._host, self._port)
        hello = self._auth()
        if self._db:
            hello.append(("SELECT", self._db))
        if self._sentinels:
            hello.append(("ROLE",))  # a sentinel may still name a primary that was demoted
        self._proto = proto
        if hello:
            replies = await self._send(proto, hello, self.timeout)
            for reply in replies:
                if isinstance(reply, hiredis.ReplyError):
                    self.close()
                    raise RespError(str(reply))
            if self._sentinels:
                role = replies[-1]
                if not (isinstance(role, list) and role and role[0] == b"master"):
                    self.close()
                    name = role[0].decode() if isinstance(role, list) and role else "?"
                    raise RespError(f"{self._host}:{self._port} is no primary (role {name})")
        return proto

    async def call(self, commands: list[tuple[Arg, ...]], timeout: float | None = None) -> list[Any]:
        proto = self._proto
        if proto is None or proto.closed:
            proto = await self._connect()
        return await self._send(proto, commands, self.timeout if timeout is None else timeout)

    async def _send(self, proto: _Protocol, commands: list[tuple[Arg, ...]], timeout: float) -> list[Any]:
        try:
            return await self._exchange(proto, commands, timeout)
        except RespError:
            # Replies may still come; the stream is no longer trustworthy: start afresh next time.
            self.close()
            raise

    @staticmethod
    async def _exchange(proto: _Protocol, commands: list[tuple[Arg, ...]], timeout: float) -> list[Any]:
        assert proto.transport is not None
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in commands]
        proto.waiters.extend(futs)
        proto.transport.write(b"".join([encode(c) for c in commands]))
        replies = asyncio.gather(*futs)
        # the caller may be gone (timeout, cancelled at stop) when the connection then fails:
        # the error is seen here, not logged as "exception never retrieved"
        replies.add_done_callback(_seen)
        try:
            return await asyncio.wait_for(replies, timeout)
        except TimeoutError:
            raise RespError(f"no answer within {timeout:.3f} s") from None

    def close(self) -> None:
        if self._proto is not None:
            self._proto._fail(RespError("closed"))
            self._proto = None


def _seen(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
