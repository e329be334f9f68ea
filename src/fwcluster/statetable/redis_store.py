"""The ``redis`` backend: a real redis-server holds the table, expires it, and carries the feed.

Data model (docs/architecture.md has the full description):

- one string per flow: key ``fwc:f:<flow key bytes>``, value ``state:orig:version:proto:writer``,
  with a TTL (PX) equal to the conntrack timeout of the state, so the store never leaks;
- with ``[sync] follow = "all"`` (the seed's design): one stream ``fwc:feed`` (capped with
  ``MAXLEN ~``): every applied write appends ``k`` (flow key) and ``v`` (value); every instance
  follows it to keep its replica warm;
- with ``follow = "backup"`` (``per_writer``): one stream per writer, ``fwc:feed:<writer id>``
  (same entries, same cap), which only the writer's backup follows; and an index per writer,
  the sorted set ``fwc:o:<writer id>`` of the flow keys it wrote, scored by when that write's TTL
  ends (ms, the writer's clock), so a failed instance's flows can be loaded in bulk. A REMOVED
  write takes the key out; each batch prunes the entries whose TTL has passed (a flow the store
  expired) and keeps the index's own TTL at least that of its newest entry, so the index of an
  instance that never comes back expires too; a reader skips the entries past their score.

Dirty writes are a pipelined SET + XADD (last writer wins). Clean writes run ``CLEAN_WRITE``
server-side: read, compare by version and rank, write and append to the feed atomically. A
current value that is no flow record (junk, a key of another type) counts as none there: the
write replaces it (refusing would leave the flow unsharable until the junk expired, if ever).

Everything read back (values, feed entries, a clean write's answer) goes through the strict
decoder (``record.py``); a bad record is skipped and counted in ``bad_records`` by source. A
write the server refuses on its own (an error reply such as ``OOM`` under ``maxmemory`` with
``noeviction``, or ``NOPERM``) comes back as ``WriteResult.refused``; only errors that say the
server as a whole cannot serve (loading, read-only replica, ...) are a :class:`StoreError`.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import hiredis
from redis.exceptions import RedisError, ResponseError

from fwcluster.core.flowtable import VERSION_HALF, VERSION_MOD
from fwcluster.core.rules import PROTO_TCP
from fwcluster.core.states import CLOSING, RANK, TCP_STATES, FlowState
from fwcluster.statetable.discovery import async_client
from fwcluster.statetable.record import WRITER_MAX, BadRecord, BadRecords, FlowRecord
from fwcluster.statetable.resp import Arg, RespConnection, RespError
from fwcluster.statetable.store import ReplicaLagError, Store, StoreError, WriteResult

PREFIX = b"fwc:f:"
FEED = b"fwc:feed"
FEED_PREFIX = b"fwc:feed:"  # + writer id: the writer's own stream (follow = "backup")
INDEX_PREFIX = b"fwc:o:"  # + writer id: the flows it wrote (a sorted set by TTL end, ms)
MEMBERS = b"fwc:members"  # instance id -> role, published by the leading master (control/master.py)
INDEX_BATCH = 5000  # keys per ZRANGE step and MGET while loading a writer's flows
FEED_MAXLEN = 100_000
SNAPSHOT_BATCH = 5000  # keys per SCAN step and per MGET while a joining instance loads the table
_REMOVED = int(FlowState.REMOVED)
# Error replies that mean the server cannot serve at all (an outage), not that it refused one write.
OUTAGE_ERRORS = (b"LOADING", b"READONLY", b"MASTERDOWN", b"BUSY", b"NOAUTH", b"CLUSTERDOWN", b"TRYAGAIN")
# The states a stored value may carry, by protocol (as record.py's decoder allows them).
_TCP_STATES = ", ".join(f"[{int(s)}] = true" for s in (*TCP_STATES[1:], FlowState.REMOVED))
_OTHER_STATES = ", ".join(
    f"[{int(s)}] = true" for s in (FlowState.UNREPLIED, FlowState.REPLIED, FlowState.REMOVED)
)

_RANKS = ", ".join(f"[{int(s)}] = {r}" for s, r in RANK.items())
_CLOSING = ", ".join(f"[{int(s)}] = true" for s in sorted(CLOSING))
CLEAN_WRITE = f"""
-- KEYS[1] flow, KEYS[2] feed, KEYS[3] the writer's index (only with follow = "backup")
-- ARGV: value, ttl_ms, state, version, flow key, feed maxlen, index score (TTL end, ms)
local RANK = {{{_RANKS}}}
local TCP_STATES = {{{_TCP_STATES}}}
local OTHER_STATES = {{{_OTHER_STATES}}}
local CLOSING = {{{_CLOSING}}}
local value = ARGV[1]
local state = tonumber(ARGV[3])
local version = tonumber(ARGV[4])
local renumbered = false
-- A current value that is no record by record.py's rules (junk, a key of another type: GET
-- fails) counts as none: it is replaced.
local cur = redis.pcall('GET', KEYS[1])
local cs, cv
if type(cur) == 'string' then
  local s, v, p, w = string.match(cur, '^(%d+):[01]:(%d+):(%d+):([!-~]+)$')
  cs = tonumber(s)
  cv = tonumber(v)
  local proto = string.byte(ARGV[5], 1)
  local states = (proto == {PROTO_TCP}) and TCP_STATES or OTHER_STATES
  if not (cs and tostring(cs) == s and states[cs] and tostring(cv) == v and cv < {VERSION_MOD}
      and tonumber(p) == proto and tostring(proto) == p and #w <= {WRITER_MAX}) then
    cur = false
  end
else
  cur = false
end
if cur then
  if state == {int(FlowState.SYN_SENT)} and (cs == {int(FlowState.TIME_WAIT)}
      or cs == {int(FlowState.CLOSE)}) then
    -- a reopen: the flow starts a new life, its version keeps counting up
    -- (versions wrap in 12 bits: serial-number arithmetic, as core/flowtable.version_newer)
    local ahead = (version - cv) % {VERSION_MOD}
    if not (ahead > 0 and ahead < {VERSION_HALF}) then
      version = (cv + 1) % {VERSION_MOD}
      value = string.gsub(value, '^(%d+:%d+:)%d+', '%1' .. version, 1)
      renumbered = true
    end
  else
    -- newer, and not backwards; over a closed connection any newer state is its next life,
    -- and so is a newer SYN_SENT over one still closing (states.CLOSING: ECMP's next life)
    local ahead = (version - cv) % {VERSION_MOD}
    local closed = cs == {int(FlowState.TIME_WAIT)} or cs == {int(FlowState.CLOSE)}
    local reopen = state == {int(FlowState.SYN_SENT)} and CLOSING[cs]
    if not (ahead > 0 and ahead < {VERSION_HALF} and (closed or reopen or RANK[state] >= RANK[cs])) then
      return {{0, cur}}
    end
  end
end
if state == {_REMOVED} then
  redis.call('DEL', KEYS[1])
  if #KEYS == 3 then redis.call('ZREM', KEYS[3], ARGV[5]) end
else
  redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
  if #KEYS == 3 then redis.call('ZADD', KEYS[3], ARGV[7], ARGV[5]) end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'k', ARGV[5], 'v', value)
if renumbered then
  return {{2, value}}
end
return 1
"""


class RedisStore(Store):
    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.url = url
        # redis-py's type hints allow str or bytes everywhere; with decode_responses=False every
        # reply is bytes, so the client is used untyped here and the results are typed below.
        # A redis+sentinel:// URL: every connection goes to the service's primary (discovery.py).
        self._r: Any = async_client(url, timeout, decode_responses=False)
        self._sha = hashlib.sha1(CLEAN_WRITE.encode()).hexdigest()
        # The two hot paths (batched writes, the feed) use lean connections (statetable/resp.py).
        self._timeout = timeout
        self._wait_ms = max(1, int(timeout * 500))  # WAIT for replicas: half the round-trip bound
        self._writes = RespConnection(url, timeout)
        self._feed = RespConnection(url, timeout)
        self._reads = RespConnection(url, timeout)  # look-ups: a held packet waits for each
        self.bad_records = BadRecords()

    async def write(
        self, records: list[tuple[FlowRecord, int]], clean: bool, replicas: int = 0
    ) -> list[WriteResult]:
        try:
            return await self._write(records, clean, replicas)
        except (RedisError, OSError) as e:
            raise StoreError(str(e)) from e

    async def _write(
        self, records: list[tuple[FlowRecord, int]], clean: bool, replicas: int
    ) -> list[WriteResult]:
        replies = await self._send(records, clean, replicas)
        if clean:
            # EVALSHA fails with NOSCRIPT when the server does not know the script yet (first
            # write, restart, SCRIPT FLUSH, failover); such a command did nothing: load and resend.
            lost = [i for i, r in enumerate(replies[: len(records)]) if _is_error(r, b"NOSCRIPT")]
            if lost:
                self._sha = await self._r.script_load(CLEAN_WRITE)
                again = await self._send([records[i] for i in lost], clean, replicas)
                for i, reply in zip(lost, again, strict=False):
                    replies[i] = reply
        for reply in replies:
            if _is_error(reply) and str(reply).encode().startswith(OUTAGE_ERRORS):
                self._writes.close()  # a demoted primary (READONLY): find the primary anew
                raise StoreError(f"store cannot write: {reply}")
        if not clean:
            return [
                WriteResult(False, None, str(reply)) if _is_error(reply) else WriteResult(True, rec)
                for (rec, _), reply in zip(records, replies, strict=False)
            ]
        out = []
        for (rec, _), reply in zip(records, replies, strict=False):
            if reply == 1:  # applied as it was sent: no need to decode anything
                out.append(WriteResult(True, rec))
            elif _is_error(reply):  # refused by the server itself (OOM, NOPERM, ...)
                out.append(WriteResult(False, None, str(reply)))
            else:  # refused (0, what the store holds) or renumbered reopen (2, what it stored)
                out.append(self._answer(rec, reply))
        return out

    def _answer(self, rec: FlowRecord, reply: Any) -> WriteResult:
        """A clean write's answer that carries a value: ``[0, held]`` refused, ``[2, stored]``
        a renumbered reopen. An answer that is no record counts as bad (``write-answer``)."""
        if isinstance(reply, list) and len(reply) == 2 and reply[0] in (0, 2):
            return WriteResult(reply[0] == 2, self.bad_records.decode("write-answer", rec.key, reply[1]))
        self.bad_records.note("write-answer", rec.key, f"unexpected answer {str(reply)[:40]!r}")
        return WriteResult(False, None)

    async def _send(self, records: list[tuple[FlowRecord, int]], clean: bool, replicas: int) -> list[Any]:
        """One pipelined round trip; error replies come back in the list, in place."""
        commands: list[tuple[Arg, ...]] = []
        per_writer = self.per_writer
        now_ms = int(time.time() * 1000)
        indexes: dict[bytes, int] = {}  # index key -> the latest TTL end written to it (ms)
        for rec, ttl_ms in records:
            value = rec.encode()
            rkey = PREFIX + rec.key
            ttl = max(1, ttl_ms)
            feed = FEED_PREFIX + rec.writer.encode() if per_writer else FEED
            if per_writer:
                index = INDEX_PREFIX + rec.writer.encode()
                indexes[index] = max(indexes.get(index, 0), ttl)
            if clean:
                keys: tuple[Arg, ...] = (3, rkey, feed, index) if per_writer else (2, rkey, feed)
                args: tuple[Arg, ...] = (value, ttl, int(rec.state), rec.version, rec.key, FEED_MAXLEN)
                commands.append(
                    ("EVALSHA", self._sha, *keys, *args, *((now_ms + ttl,) if per_writer else ()))
                )
            else:
                if rec.state == FlowState.REMOVED:
                    commands.append(("DEL", rkey))
                else:
                    commands.append(("SET", rkey, value, "PX", ttl))
                commands.append(("XADD", feed, "MAXLEN", "~", FEED_MAXLEN, "*", b"k", rec.key, b"v", value))
                if per_writer:
                    if rec.state == FlowState.REMOVED:
                        commands.append(("ZREM", index, rec.key))
                    else:
                        commands.append(("ZADD", index, now_ms + ttl, rec.key))
        for index, ttl in indexes.items():
            # prune what the store has expired; the index outlives its newest entry, no longer
            commands.append(("ZREMRANGEBYSCORE", index, "-inf", now_ms))
            commands.append(("PEXPIRE", index, ttl, "NX"))
            commands.append(("PEXPIRE", index, ttl, "GT"))
        upkeep = 3 * len(indexes)
        if replicas:
            commands.append(("WAIT", replicas, self._wait_ms))
        try:
            replies = await self._writes.call(commands, timeout=self._timeout + self._wait_ms / 1000)
        except RespError as e:
            raise StoreError(str(e)) from e
        if replicas:
            acked = replies.pop()
            if not isinstance(acked, int) or acked < replicas:
                raise ReplicaLagError(
                    f"{acked} of {replicas} replicas acknowledged within {self._wait_ms} ms"
                )
        if upkeep:
            del replies[-upkeep:]  # the index upkeep: nobody waits for its answers
        if clean:
            return replies
        # dirty: two or three replies per record (SET/DEL, XADD, index); the first error of each
        per = 3 if per_writer else 2
        out = []
        for i in range(len(records)):
            group = replies[per * i : per * i + per]
            out.append(next((r for r in group if _is_error(r)), group[1]))
        return out

    async def get(self, keys: list[bytes]) -> list[FlowRecord | None]:
        if not keys:
            return []
        try:
            (values,) = await self._reads.call([("MGET", *[PREFIX + k for k in keys])])
        except RespError as e:
            raise StoreError(str(e)) from e
        if isinstance(values, hiredis.ReplyError):
            self._reads.close()
            raise StoreError(f"get: {values}")
        decode = self.bad_records.decode
        return [None if v is None else decode("lookup", k, v) for k, v in zip(keys, values, strict=True)]

    async def snapshot(self) -> tuple[list[FlowRecord], str]:
        """Feed position first, then every flow: SCAN and MGET on the lean connection, one
        batch of ``SNAPSHOT_BATCH`` keys per round trip (a joining instance waits for this)."""
        conn = RespConnection(self.url, self._timeout)
        try:
            (last,) = await conn.call([("XREVRANGE", FEED, "+", "-", "COUNT", 1)])
            position = last[0][0].decode() if last else "0-0"
            records: list[FlowRecord] = []
            decode = self.bad_records.decode
            skip = len(PREFIX)
            cursor = b"0"
            while True:
                (reply,) = await conn.call(
                    [("SCAN", cursor, "MATCH", PREFIX + b"*", "COUNT", SNAPSHOT_BATCH)]
                )
                if isinstance(reply, hiredis.ReplyError):
                    raise StoreError(f"snapshot: {reply}")
                cursor, keys = reply
                if keys:
                    (values,) = await conn.call([("MGET", *keys)])
                    if isinstance(values, hiredis.ReplyError):
                        raise StoreError(f"snapshot: {values}")
                    for k, v in zip(keys, values, strict=True):
                        if v is not None and (r := decode("load", k[skip:], v)) is not None:
                            records.append(r)
                if cursor == b"0":
                    return records, position
        except RespError as e:
            raise StoreError(str(e)) from e
        finally:
            conn.close()

    async def _xread(self, command: tuple[Arg, ...], block_ms: int) -> Any:
        """One XREAD on the feed connection (the one stream, or the followed writers' streams)."""
        try:
            # XREAD BLOCK answers when an entry arrives or the block ends: allow for that wait.
            (reply,) = await self._feed.call([command], timeout=block_ms / 1000 + self._timeout)
        except RespError as e:
            raise StoreError(str(e)) from e
        if isinstance(reply, hiredis.ReplyError):
            self._feed.close()  # e.g. UNBLOCKED when the server became a replica: connect anew
            raise StoreError(f"feed: {reply}")
        return reply

    async def feed(self, position: str, block_ms: int, count: int) -> tuple[list[FlowRecord], str]:
        command: tuple[Arg, ...] = ("XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", FEED, position)
        if not block_ms:
            command = ("XREAD", "COUNT", count, "STREAMS", FEED, position)
        reply = await self._xread(command, block_ms)
        records: list[FlowRecord] = []
        for _stream, entries in reply or ():
            if entries:
                position = self._entries(entries, records)
        return records, position

    async def follow(
        self, positions: dict[str, str], block_ms: int, count: int
    ) -> tuple[list[FlowRecord], dict[str, str]]:
        """XREAD over the streams of the writers in ``positions`` (one round trip)."""
        writers = sorted(positions)
        streams = [FEED_PREFIX + w.encode() for w in writers]
        command: tuple[Arg, ...] = (
            "XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", *streams, *(positions[w] for w in writers),
        )  # fmt: skip
        reply = await self._xread(command, block_ms)
        moved = dict(positions)
        skip = len(FEED_PREFIX)
        records: list[FlowRecord] = []
        for stream, entries in reply or ():
            if entries:
                writer = bytes(stream[skip:]).decode("ascii", "replace")
                if writer in moved:
                    moved[writer] = self._entries(entries, records)
        return records, moved

    def _entries(self, entries: list[Any], records: list[FlowRecord]) -> str:
        """Decode stream entries into ``records``; returns the last entry's id."""
        position = ""
        bad = self.bad_records
        decode = FlowRecord.decode
        for entry_id, fields in entries:
            position = entry_id.decode()
            # fields: [b"k", key, b"v", value]; anything else is a bad entry
            try:
                if len(fields) != 4 or fields[0] != b"k" or fields[2] != b"v":
                    raise BadRecord("fields are not k, v")
                records.append(decode(fields[1], fields[3]))
            except (BadRecord, TypeError) as e:
                key = fields[1] if isinstance(fields, list) and len(fields) > 1 else None
                bad.note("feed", key, str(e) or type(e).__name__)
        return position

    async def position(self, writer: str) -> str:
        try:
            (last,) = await self._reads.call(
                [("XREVRANGE", FEED_PREFIX + writer.encode(), "+", "-", "COUNT", 1)]
            )
        except RespError as e:
            raise StoreError(str(e)) from e
        if isinstance(last, hiredis.ReplyError):
            raise StoreError(f"position: {last}")
        return str(last[0][0].decode()) if last else "0-0"

    async def owned(self, writer: str) -> list[FlowRecord]:
        """The writer's index (entries whose TTL has not ended), read in batches, then the
        current record of each flow: on a connection of its own (look-ups do not wait for it)."""
        conn = RespConnection(self.url, self._timeout)
        index = INDEX_PREFIX + writer.encode()
        records: list[FlowRecord] = []
        decode = self.bad_records.decode
        offset = 0
        try:
            while True:
                now_ms = int(time.time() * 1000)
                (keys,) = await conn.call(
                    [("ZRANGE", index, now_ms, "+inf", "BYSCORE", "LIMIT", offset, INDEX_BATCH)]
                )
                if isinstance(keys, hiredis.ReplyError):
                    raise StoreError(f"owned: {keys}")
                if keys:
                    (values,) = await conn.call([("MGET", *[PREFIX + k for k in keys])])
                    if isinstance(values, hiredis.ReplyError):
                        raise StoreError(f"owned: {values}")
                    for k, v in zip(keys, values, strict=True):
                        if v is not None and (r := decode("load", k, v)) is not None:
                            records.append(r)
                if len(keys) < INDEX_BATCH:
                    return records
                offset += INDEX_BATCH
        except RespError as e:
            raise StoreError(str(e)) from e
        finally:
            conn.close()

    async def members(self) -> dict[str, str]:
        try:
            raw = await self._r.hgetall(MEMBERS)
        except ResponseError as e:
            # The server answered, but no hash (WRONGTYPE) or no right to read it (NOPERM, a store
            # whose ACL predates follow = "backup"): no membership, counted; the store is up.
            self.bad_records.note("members", MEMBERS, str(e)[:80])
            return {}
        except (RedisError, OSError) as e:
            raise StoreError(str(e)) from e
        out = {}
        for k, v in raw.items():
            try:
                out[k.decode("ascii")] = v.decode("ascii")
            except UnicodeDecodeError:
                self.bad_records.note("members", k, "not ascii")
        return out

    async def ping(self) -> None:
        try:
            await self._r.ping()
            # Load the clean-write script now, so the first held packet does not pay for it.
            await self._r.script_load(CLEAN_WRITE)
        except (RedisError, OSError) as e:
            raise StoreError(str(e)) from e

    async def clear(self) -> None:
        try:
            keys = [k async for k in self._r.scan_iter(match=PREFIX + b"*", count=1000)]
            for i in range(0, len(keys), 1000):
                await self._r.delete(*keys[i : i + 1000])
            await self._r.delete(FEED)
            for pattern in (FEED_PREFIX + b"*", INDEX_PREFIX + b"*"):
                async for k in self._r.scan_iter(match=pattern, count=1000):
                    await self._r.delete(k)
        except (RedisError, OSError) as e:
            raise StoreError(str(e)) from e

    async def close(self) -> None:
        self._writes.close()
        self._feed.close()
        self._reads.close()
        await self._r.aclose()


def _is_error(reply: Any, prefix: bytes = b"") -> bool:
    return isinstance(reply, hiredis.ReplyError) and str(reply).encode().startswith(prefix)
