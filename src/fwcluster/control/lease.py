"""Leadership: one master holds a lease in the store; every new holder gets a higher epoch.

``fwc:leader`` holds ``<master id>:<epoch>`` with a TTL. A master acquires it when it is free
(and takes the next value of ``fwc:epoch``) or renews it when it is its own, in one server-side
script, so two masters can never both believe they hold it with the same epoch. The epoch goes
with every steering write (steering/fencing.py), which refuses older ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

LEADER_KEY = b"fwc:leader"
EPOCH_KEY = b"fwc:epoch"

# A record that is not a lease (any other value or type) is replaced, and so is an epoch counter
# that is not a number in range: the script reports them in its second value (1: the lease,
# 2: the epoch), and the master counts them (``fwcluster_master_bad_records_total``).
ACQUIRE_OR_RENEW = """
local bad = 0
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'none' and kind ~= 'string' then
  redis.call('DEL', KEYS[1])
  bad = 1
elseif kind == 'string' then
  local cur = redis.call('GET', KEYS[1])
  local id, epoch = string.match(cur, '^([%w_.-]+):(%d+)$')
  if id == nil or #id > 64 or #epoch > 12 then
    bad = 1
  elseif id == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {tonumber(epoch), 0}
  else
    return {-1, 0}
  end
end
local epoch = 0
kind = redis.call('TYPE', KEYS[2]).ok
if kind == 'string' then
  local raw = redis.call('GET', KEYS[2])
  if string.match(raw, '^%d+$') and #raw <= 12 then
    epoch = tonumber(raw)
  else
    bad = bad + 2
  end
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[2])
  bad = bad + 2
end
epoch = epoch + 1
local floor = tonumber(ARGV[3])
if epoch <= floor then
  -- the store lost its counter (restart, flush): never hand out an epoch that already wrote
  epoch = floor + 1
end
redis.call('SET', KEYS[2], epoch)
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
return {epoch, bad}
"""

RELEASE = """
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then
  return 0
end
local cur = redis.call('GET', KEYS[1])
if string.match(cur, '^([%w_.-]+):%d+$') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_HOLDER = re.compile(rb"([A-Za-z0-9_.-]{1,64}):([0-9]{1,12})")


def parse_holder(raw: object) -> tuple[str, int] | None:
    """(master id, epoch) of a ``fwc:leader`` value; None when it is not one."""
    if not isinstance(raw, bytes):
        return None
    m = _HOLDER.fullmatch(raw)
    return (m[1].decode(), int(m[2])) if m else None


class LeaderLease:
    def __init__(
        self, redis: Any, master_id: str, ttl_ms: int, on_bad: Callable[[str], None] | None = None
    ) -> None:
        self._r = redis
        self.id = master_id
        self.ttl_ms = ttl_ms
        self._on_bad = on_bad or (lambda source: None)  # a bad record replaced: "leader" or "epoch"
        self._acquire = redis.register_script(ACQUIRE_OR_RENEW)
        self._release = redis.register_script(RELEASE)

    async def acquire_or_renew(self, floor: int = 0) -> int | None:
        """Our epoch while we lead (acquired now or renewed), else None. A new epoch is always
        above ``floor`` (the newest epoch the steering gate has seen)."""
        epoch, bad = await self._acquire(keys=[LEADER_KEY, EPOCH_KEY], args=[self.id, self.ttl_ms, floor])
        if int(bad) & 1:
            self._on_bad("leader")
        if int(bad) & 2:
            self._on_bad("epoch")
        return int(epoch) if int(epoch) >= 0 else None

    async def release(self) -> None:
        await self._release(keys=[LEADER_KEY], args=[self.id])

    @staticmethod
    async def holder(redis: Any) -> tuple[str, int] | None:
        """The lease's holder, or None (no lease, or a record that is not one)."""
        try:
            raw = await redis.get(LEADER_KEY)
        except ResponseError:  # not a string
            return None
        return parse_holder(raw)
