"""The store's users, one per role, as Redis ACL rules (docs/architecture.md, "Threat model").

The key layout they follow (issue 10):

- ``fwc:f:<flow key>`` and the stream ``fwc:feed``: the instances read and write them;
- ``fwc:feed:<id>`` (instance ``<id>``'s own stream) and ``fwc:o:<id>`` (the index of the flows
  it wrote), with ``[sync] follow = "backup"``: written by instance ``<id>`` only, read by all
  instances (a backup follows its predecessor's stream and loads an index it takes over);
- ``fwc:hb:<id>`` (heartbeat) and ``fwc:reg:<id>`` (registration): written by instance ``<id>``
  only, read by the masters;
- ``fwc:leader``, ``fwc:epoch``, ``fwc:members`` (and ``fwc:instances``): the masters only;
  the instances may read ``fwc:members`` (who backs up whom follows from it: statetable/ring.py);
- ``fwc:policy`` (the cluster policy, fwcluster/policy.py): written by the leading master, read
  by the instances.

So ``inst-<id>`` may touch the flows, the feed and its own two keys, with only the commands an
instance sends (statetable/redis_store.py, resp.py, instance/heartbeat.py); ``master`` the lease,
epoch and membership, and only read heartbeats and registrations; ``admin`` (the testbed, the
benchmarks, an operator's redis-cli) everything; ``default`` (no password) is off. Pure: the
testbed writes these into the ACL file and ``ACL SETUSER`` (testbed/store.py).
"""

from __future__ import annotations

import re

ADMIN = "admin"
MASTER = "master"
INSTANCE_PREFIX = "inst-"
_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # as masters accept ids (no glob character in a key pattern)

# Every command an instance sends (and those its scripts call: a script runs with the caller's
# rights). (redis-py also sends CLIENT SETINFO on connecting to Redis 7.2+ and ignores a refusal;
# Redis 7.0 here does not know the command.)
INSTANCE_COMMANDS = (
    "ping", "select",
    "get", "mget", "set", "del", "scan",
    "xadd", "xread", "xrevrange", "xrange",
    "zadd", "zrem", "zremrangebyscore", "zrange", "pexpire", "hgetall", "hget", "hmget",
    "evalsha", "script|load", "wait", "role",
)  # fmt: skip
# Every command a master sends: the lease scripts (get, set, del, pexpire, type), the membership
# (hgetall; del + hset in one script), discovery (scan), the health watch (mget) and the policy
# (hget, hmget; the apply and restore scripts: type, get, hmget, hset, exists).
MASTER_COMMANDS = (
    "ping", "select",
    "get", "mget", "set", "del", "pexpire", "type", "scan",
    "hgetall", "hset", "hdel", "hget", "hmget", "exists",
    "evalsha", "script|load", "wait",
)  # fmt: skip
MASTER_KEYS = (
    "~fwc:leader", "~fwc:epoch", "~fwc:members", "~fwc:instances", "~fwc:takeover", "~fwc:policy",
    "%R~fwc:hb:*", "%R~fwc:reg:*",
)  # fmt: skip


def instance_user(instance_id: str) -> str:
    if not _ID.fullmatch(instance_id):
        raise ValueError(f"{instance_id!r} is not an instance id (letters, digits, _ . -)")
    return INSTANCE_PREFIX + instance_id


def _rules(commands: tuple[str, ...], keys: tuple[str, ...]) -> list[str]:
    return ["resetkeys", "resetchannels", "-@all", *(f"+{c}" for c in commands), *keys]


def instance_rules(instance_id: str) -> list[str]:
    """What instance ``instance_id`` may do (password rules not included)."""
    instance_user(instance_id)  # a valid id: no glob character reaches a key pattern
    keys = (
        "~fwc:f:*", "~fwc:feed", f"~fwc:hb:{instance_id}", f"~fwc:reg:{instance_id}",
        f"~fwc:feed:{instance_id}", f"~fwc:o:{instance_id}", "%R~fwc:feed:*", "%R~fwc:o:*",
        "%R~fwc:members", "%R~fwc:takeover", "%R~fwc:policy",
    )  # fmt: skip
    return _rules(INSTANCE_COMMANDS, keys)


def master_rules() -> list[str]:
    return _rules(MASTER_COMMANDS, MASTER_KEYS)


def admin_rules() -> list[str]:
    return ["~*", "&*", "+@all"]


def default_rules() -> list[str]:
    return ["off", "resetkeys", "resetchannels", "-@all"]


# Sentinel-managed store (testbed/sentinel.py): ACLs are not replicated, so every data node and
# every sentinel has every user, each in its own ACL file.
REPLICATION = "repl"  # replicas authenticate to the primary as this user (masteruser/masterauth)
SENTINEL = "sentinel"  # sentinels monitor and reconfigure the data nodes, and talk to each other


def replication_rules() -> list[str]:
    """On the data nodes: what a replica sends its primary."""
    return _rules(("psync", "replconf", "ping"), ())


def sentinel_rules() -> list[str]:
    """On the data nodes: what a sentinel sends to monitor, promote and reconfigure them (the
    list Redis documents for a Sentinel ACL user), and its hello channel."""
    commands = (
        "multi", "exec", "slaveof", "replicaof", "ping", "subscribe", "publish", "info", "role",
        "config|rewrite", "client|setname", "client|kill", "script|kill",
    )  # fmt: skip
    return ["resetkeys", "resetchannels", "-@all", *(f"+{c}" for c in commands), "&__sentinel__:hello"]


def sentinel_peer_rules() -> list[str]:
    """On the sentinels: the other sentinels (hello, votes, failover)."""
    return ["~*", "&*", "+@all"]


def sentinel_client_rules() -> list[str]:
    """On the sentinels: the masters and instances only ask where the primary is (the lean
    connection with get-master-addr-by-name, redis-py with masters and replicas)."""
    commands = ("ping", "sentinel|get-master-addr-by-name", "sentinel|masters", "sentinel|replicas",
                "sentinel|slaves", "sentinel|sentinels")  # fmt: skip
    return _rules(commands, ())
