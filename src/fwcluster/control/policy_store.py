"""The masters' side of the stored policy (fwcluster/policy.py): read it, and store a new version.

A new version is stored by one Lua script, so it is atomic: it reads the record, leaves it as it
is when the canonical body is the same (no new version for no change), else writes ``version + 1``
and the body together. Two applies never get the same version, and an instance never reads a
version with another version's body. The script is fenced: it writes only while the lease (``fwc:leader``)
is the caller's, at its epoch, so a master that lost the lead without knowing it yet changes
nothing (as its steering writes are fenced by the epoch gate).

A store that lost the record (restarted without persistence) gets it back from the leader, which
keeps the last version it read or stored (:meth:`PolicyStore.restore`, control/master.py).
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from fwcluster.control.lease import LEADER_KEY
from fwcluster.policy import BODY_FIELD, POLICY_KEY, VERSION_FIELD, Policy, PolicyError, decode_record

# KEYS: fwc:policy, fwc:leader; ARGV: the canonical body, the caller's lease (<id>:<epoch>).
# Returns {version, changed (0/1)}; -1: the lease is not the caller's (not the leader); -2: a record that
# is not one (the version no number): nothing is written over it without an operator.
APPLY = """
if redis.call('TYPE', KEYS[2]).ok ~= 'string' or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return {-1, 0}
end
local cur = redis.call('HMGET', KEYS[1], 'version', 'body')
local version = 0
if cur[1] then
  version = tonumber(cur[1])
  if version == nil or version < 1 or version ~= math.floor(version) then
    return {-2, 0}
  end
  if cur[2] == ARGV[1] then
    return {version, 0}
  end
end
version = version + 1
redis.call('HSET', KEYS[1], 'version', tostring(version), 'body', ARGV[1])
return {version, 1}
"""

# A store that lost the record (a restart without persistence): the leader writes back the
# version it knows, unless a record exists meanwhile. KEYS as APPLY; ARGV: version, body, lease.
RESTORE = """
if redis.call('TYPE', KEYS[2]).ok ~= 'string' or redis.call('GET', KEYS[2]) ~= ARGV[3] then
  return -1
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'body', ARGV[2])
return 1
"""


class NotLeader(Exception):
    """The epoch moved on: another master leads."""


class StoredPolicyError(Exception):
    """The stored record is no policy record (one line)."""


class PolicyStore:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._apply = redis.register_script(APPLY)
        self._restore = redis.register_script(RESTORE)

    async def read(self) -> tuple[int, Policy] | None:
        """The stored version and policy; None when none is stored. StoredPolicyError for a record
        that is not one."""
        try:
            version, body = await self.redis.hmget(POLICY_KEY, [VERSION_FIELD, BODY_FIELD])
        except ResponseError as e:  # WRONGTYPE: not a hash
            raise StoredPolicyError(f"the stored policy ({POLICY_KEY.decode()}) is not valid: {e}") from None
        if version is None and body is None:
            return None
        try:
            return decode_record(version, body)
        except PolicyError as e:
            raise StoredPolicyError(f"the stored policy ({POLICY_KEY.decode()}) is not valid: {e}") from None

    async def store(self, policy: Policy, master_id: str, epoch: int) -> tuple[int, bool]:
        """(version, changed): the policy stored as the next version, or the version that already
        holds it. NotLeader when the lease is not ``master_id``'s at ``epoch``."""
        try:
            version, changed = await self._apply(
                keys=[POLICY_KEY, LEADER_KEY], args=[policy.render(), f"{master_id}:{epoch}"]
            )
        except ResponseError as e:  # WRONGTYPE: the record is not a hash
            raise StoredPolicyError(f"the stored policy ({POLICY_KEY.decode()}) is not valid: {e}") from None
        if version == -1:
            raise NotLeader()
        if version == -2:
            raise StoredPolicyError(f"the stored policy ({POLICY_KEY.decode()}) has no valid version")
        return int(version), bool(changed)

    async def restore(self, version: int, policy: Policy, master_id: str, epoch: int) -> bool:
        """Write ``version`` back when the store holds no record at all (it lost it); whether it
        did. The instances that applied it change nothing, one that starts applies it, not its
        config's rules."""
        done = await self._restore(
            keys=[POLICY_KEY, LEADER_KEY], args=[str(version), policy.render(), f"{master_id}:{epoch}"]
        )
        if done == -1:
            raise NotLeader()
        return bool(done)
