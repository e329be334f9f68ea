"""Leadership: one master holds a lease in the store; every new holder gets a higher epoch.

``fwc:leader`` holds ``<master id>:<epoch>`` with a TTL. A master acquires it when it is free
(and takes the next value of ``fwc:epoch``) or renews it when it is its own, in one server-side
script, so two masters can never both believe they hold it with the same epoch. The epoch goes
with every steering write (steering/fencing.py), which refuses older ones.
"""

from __future__ import annotations

from typing import Any

LEADER_KEY = b"fwc:leader"
EPOCH_KEY = b"fwc:epoch"

ACQUIRE_OR_RENEW = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local id, epoch = string.match(cur, '^(.*):(%d+)$')
  if id == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(epoch)
  end
  return -1
end
local epoch = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if epoch <= floor then
  -- the store lost its counter (restart, flush): never hand out an epoch that already wrote
  epoch = floor + 1
  redis.call('SET', KEYS[2], epoch)
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
return epoch
"""

RELEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^(.*):%d+$') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaderLease:
    def __init__(self, redis: Any, master_id: str, ttl_ms: int) -> None:
        self._r = redis
        self.id = master_id
        self.ttl_ms = ttl_ms
        self._acquire = redis.register_script(ACQUIRE_OR_RENEW)
        self._release = redis.register_script(RELEASE)

    async def acquire_or_renew(self, floor: int = 0) -> int | None:
        """Our epoch while we lead (acquired now or renewed), else None. A new epoch is always
        above ``floor`` (the newest epoch the steering gate has seen)."""
        epoch = int(await self._acquire(keys=[LEADER_KEY, EPOCH_KEY], args=[self.id, self.ttl_ms, floor]))
        return epoch if epoch >= 0 else None

    async def release(self) -> None:
        await self._release(keys=[LEADER_KEY], args=[self.id])

    @staticmethod
    async def holder(redis: Any) -> tuple[str, int] | None:
        raw = await redis.get(LEADER_KEY)
        if raw is None:
            return None
        master_id, _, epoch = raw.decode().rpartition(":")
        return master_id, int(epoch)
