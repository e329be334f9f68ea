"""The testbed's own store in fwc-mgmt, on the management bridge: one redis-server
(``[store] ha = "none"``) or, by default (``ha = "sentinel"``), a primary and two replicas with
three sentinels (testbed/sentinel.py runs them; this module writes their files and users).

It listens on the bridge address (198.18.255.1, and 2001:2:0:fff::1 when it can) port 6379, with
no snapshots and no append-only file (a restart starts empty) and a memory bound (``[store]
maxmemory_mb``) past which writes are refused (``noeviction``: no flow is silently dropped).
Nobody gets in without a user and password (Redis ACL users, the ``default`` user is off):
``admin`` (the testbed, the benchmarks, ``redis-cli``) may do anything, ``master`` and each
``inst-<id>`` only what their role needs (store_acl.py). Passwords never appear on
a command line: redis-server reads its users from an ACL file (0600, passwords only as SHA-256
hashes), redis-cli gets its password in ``REDISCLI_AUTH``, the testbed's processes read their URL
from a file of their own (0600). Config, ACL file, log and pid file live in the run dir (0700).
The instances reach the store over their management link; the client and server namespaces have
no route to the management network.

With Sentinel, every node has its own config, ACL file, log, pid file and data dir (the first
data node keeps the single server's names). ACLs are not replicated, so every user goes to every
node (data nodes and sentinels, each with the rules of its kind): ``repl`` (replicas to their
primary, ``masteruser``/``masterauth``) and ``sentinel`` (sentinels to the data nodes,
``auth-user``/``auth-pass``, and to each other, ``sentinel-user``/``sentinel-pass``); their
passwords are in the 0600 configs only. Clients reach the sentinels with the same user and
password as the data nodes (on a sentinel, a client user may only ask where the primary is).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from fwcluster.config import StoreConfig
from fwcluster.credentials import read_secret, write_secret
from fwcluster.steering.netns import CommandError, inside, netns_argv, run_in
from fwcluster.storeurl import sentinel_url
from fwcluster.testbed import addressing as a
from fwcluster.testbed import store_acl
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.processes import alive, spawn_detached, terminate

REDIS_PORT = 6379
REDIS_DB = 0
START_TIMEOUT = 5.0  # seconds until redis must answer PING
PING_TIMEOUT = 1.0  # seconds for one PING
CONF_FILE = "redis.conf"
ACL_FILE = "redis.acl"  # the users, passwords as SHA-256 hashes (0600)
PASSWORD_FILE = "store.pass"  # the admin user's password (0600): redis-cli and store_password()
MASTER_PASSWORD_FILE = "store-master.pass"  # the master user's (0600)
ADMIN = store_acl.ADMIN
MAXMEMORY_MB = StoreConfig().maxmemory_mb
LOG_FILE = "redis.log"
PID_FILE = "redis.pid"
DATA_DIR = "redis"
REPL_PASSWORD_FILE = "store-repl.pass"  # the replication user's (0600; also in the configs)
SENTINEL_PASSWORD_FILE = "store-sentinel.pass"  # the sentinels' own user's (0600; also in the configs)
SERVICE = "fwc"  # the Sentinel service name
DATA_PORTS = (6379, 6380, 6381)  # primary first (at the start), then the replicas
SENTINEL_PORTS = (26379, 26380, 26381)
QUORUM = 2  # sentinels that must agree the primary is down
# Sentinel timings, for a busy 2-core host: a primary is down after 1 s without a valid reply
# (sentinels PING every second, or every down-after if shorter; below ~1 s a scheduling hiccup of
# a loaded host can already look like a dead primary and start a needless failover), and one
# failover attempt may take 5 s before another sentinel tries again. A SIGKILLed primary is
# replaced in about 1-3 s: 1 s to SDOWN, ODOWN at once with the quorum, the leader election
# (randomized within a second), promotion.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


@dataclass(frozen=True, slots=True)
class Node:
    """One process of the testbed's store: a data node (redis-server) or a sentinel."""

    kind: str  # "data" | "sentinel"
    port: int

    @property
    def name(self) -> str:
        if self.kind == "data" and self.port == REDIS_PORT:
            return "redis"  # the single server's names
        return f"{'redis' if self.kind == 'data' else 'sentinel'}-{self.port}"

    def conf(self, run_dir: Path) -> Path:
        return run_dir / f"{self.name}.conf"

    def acl(self, run_dir: Path) -> Path:
        return run_dir / f"{self.name}.acl"

    def log(self, run_dir: Path) -> Path:
        return run_dir / f"{self.name}.log"

    def pidfile(self, run_dir: Path) -> Path:
        return run_dir / f"{self.name}.pid"

    def data_dir(self, run_dir: Path) -> Path:
        return run_dir / (DATA_DIR if self.name == "redis" else self.name)


PRIMARY = Node("data", REDIS_PORT)
HA_NODES = (*(Node("data", p) for p in DATA_PORTS), *(Node("sentinel", p) for p in SENTINEL_PORTS))


def nodes(run_dir: Path) -> list[Node]:
    """The nodes the testbed's store has (their configs are in the run dir)."""
    return [n for n in HA_NODES if n.conf(run_dir).exists()]


def is_ha(run_dir: Path) -> bool:
    return Node("sentinel", SENTINEL_PORTS[0]).conf(run_dir).exists()


def new_password() -> str:
    return secrets.token_hex(16)


def store_url(password: str, host: str | None = None, user: str = ADMIN, ha: bool = False) -> str:
    """``redis://USER:PASSWORD@198.18.255.1:6379/0``; with ``ha`` the sentinels' URL,
    ``redis+sentinel://USER:PASSWORD@198.18.255.1:26379,...:26381/fwc/0``."""
    ip = host or a.mgmt_bridge_addr().ip4
    if ha:
        return sentinel_url([(ip, p) for p in SENTINEL_PORTS], SERVICE, user, password, REDIS_DB)
    where = f"{ip}:{REDIS_PORT}/{REDIS_DB}"
    return f"redis://{quote(user, safe='')}:{quote(password, safe='')}@{where}"


def password_hash(password: str) -> str:
    """How an ACL file and ``ACL SETUSER`` name a password without holding it: ``#<sha256>``."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def acl_line(user: str, password: str | None, rules: list[str]) -> str:
    """One user of an ACL file (``user NAME on #HASH RULES...``); no password: the rules alone."""
    secret = ["on", password_hash(password)] if password is not None else []
    return " ".join(["user", user, *secret, *rules]) + "\n"


def acl_text(admin_password: str, master_password: str) -> str:
    """The users a single redis-server starts with (store_acl.py): ``default`` off, ``admin``,
    ``master``. Instances get theirs when they are started (:func:`instance_url`)."""
    return (
        acl_line("default", None, store_acl.default_rules())
        + acl_line(ADMIN, admin_password, store_acl.admin_rules())
        + acl_line(store_acl.MASTER, master_password, store_acl.master_rules())
    )


def ha_acl_text(node: Node, passwords: dict[str, str]) -> str:
    """The users a node of the Sentinel-managed store starts with, by its kind."""
    text = acl_line("default", None, store_acl.default_rules()) + acl_line(
        ADMIN, passwords[ADMIN], store_acl.admin_rules()
    )
    if node.kind == "data":
        return (
            text
            + acl_line(store_acl.MASTER, passwords[store_acl.MASTER], store_acl.master_rules())
            + acl_line(store_acl.REPLICATION, passwords[store_acl.REPLICATION], store_acl.replication_rules())
            + acl_line(store_acl.SENTINEL, passwords[store_acl.SENTINEL], store_acl.sentinel_rules())
        )
    return (
        text
        + acl_line(store_acl.MASTER, passwords[store_acl.MASTER], store_acl.sentinel_client_rules())
        + acl_line(store_acl.SENTINEL, passwords[store_acl.SENTINEL], store_acl.sentinel_peer_rules())
    )


def redis_conf(run_dir: Path, maxmemory_mb: int = MAXMEMORY_MB, node: Node = PRIMARY) -> str:
    addr = a.mgmt_bridge_addr()
    return f"""\
# generated by fwcluster.testbed; do not edit
bind {addr.ip4} -{addr.ip6}
port {node.port}
protected-mode yes
aclfile {node.acl(run_dir)}
maxmemory {maxmemory_mb}mb
maxmemory-policy noeviction
save ""
appendonly no
daemonize no
dir {node.data_dir(run_dir)}
pidfile {node.pidfile(run_dir)}
logfile {node.log(run_dir)}
proc-title-template "{{title}} {{listen-addr}} {{config-file}}"
"""


def data_node_conf(
    run_dir: Path, node: Node, repl_password: str, maxmemory_mb: int, primary_port: int | None
) -> str:
    """A data node of the Sentinel-managed store: a replica of ``primary_port`` (None: the
    primary). Every node can be a replica (after a failover), so each has the replication user."""
    conf = redis_conf(run_dir, maxmemory_mb, node) + (
        f"masteruser {store_acl.REPLICATION}\n"
        f"masterauth {repl_password}\n"
        "repl-diskless-sync yes\n"  # no snapshot on disk (there is none): stream it
        "repl-diskless-sync-delay 0\n"  # a replica (re)syncs at once after a failover
        "replica-read-only yes\n"
    )
    if primary_port is not None:
        conf += f"replicaof {a.mgmt_bridge_addr().ip4} {primary_port}\n"
    return conf


def sentinel_conf(run_dir: Path, node: Node, sentinel_password: str, primary_port: int) -> str:
    addr = a.mgmt_bridge_addr()
    return f"""\
# generated by fwcluster.testbed; sentinels rewrite it as they learn
bind {addr.ip4} -{addr.ip6}
port {node.port}
protected-mode yes
daemonize no
aclfile {node.acl(run_dir)}
dir {node.data_dir(run_dir)}
pidfile {node.pidfile(run_dir)}
logfile {node.log(run_dir)}
sentinel resolve-hostnames no
sentinel sentinel-user {store_acl.SENTINEL}
sentinel sentinel-pass {sentinel_password}
sentinel monitor {SERVICE} {addr.ip4} {primary_port} {QUORUM}
sentinel auth-user {SERVICE} {store_acl.SENTINEL}
sentinel auth-pass {SERVICE} {sentinel_password}
sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}
sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}
sentinel parallel-syncs {SERVICE} {len(DATA_PORTS) - 1}
"""


def write_conf(run_dir: Path, password: str, maxmemory_mb: int = MAXMEMORY_MB, ha: bool = False) -> Path:
    """Write the config, the ACL file, the admin and the master password (each 0600) and the data
    dir, for every node when ``ha``; return the (first data node's) config's path."""
    write_secret(run_dir / PASSWORD_FILE, password)
    master = new_password()
    write_secret(run_dir / MASTER_PASSWORD_FILE, master)
    if not ha:
        PRIMARY.data_dir(run_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        write_secret(PRIMARY.acl(run_dir), acl_text(password, master))
        return write_secret(PRIMARY.conf(run_dir), redis_conf(run_dir, maxmemory_mb))
    write_secret(run_dir / REPL_PASSWORD_FILE, new_password())
    write_secret(run_dir / SENTINEL_PASSWORD_FILE, new_password())
    passwords = {ADMIN: password, store_acl.MASTER: master}
    passwords[store_acl.REPLICATION] = read_secret(run_dir / REPL_PASSWORD_FILE, "replication password")
    passwords[store_acl.SENTINEL] = read_secret(run_dir / SENTINEL_PASSWORD_FILE, "sentinel password")
    for node in HA_NODES:
        write_secret(node.acl(run_dir), ha_acl_text(node, passwords))
    write_ha_confs(run_dir, maxmemory_mb)
    return PRIMARY.conf(run_dir)


def write_ha_confs(run_dir: Path, maxmemory_mb: int, primary_port: int = REDIS_PORT) -> None:
    """The configs of the Sentinel-managed store (not its ACL files): ``primary_port`` the
    primary, the other data nodes its replicas, the sentinels watching it afresh."""
    repl = read_secret(run_dir / REPL_PASSWORD_FILE, "replication password")
    sentinel = read_secret(run_dir / SENTINEL_PASSWORD_FILE, "sentinel password")
    for node in HA_NODES:
        node.data_dir(run_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        if node.kind == "data":
            of = None if node.port == primary_port else primary_port
            write_secret(node.conf(run_dir), data_node_conf(run_dir, node, repl, maxmemory_mb, of))
        else:
            write_secret(node.conf(run_dir), sentinel_conf(run_dir, node, sentinel, primary_port))


_MAXMEMORY = re.compile(r"^maxmemory (\d+)mb$", re.M)


def maxmemory_of(conf: Path) -> int:
    m = _MAXMEMORY.search(conf.read_text())
    return int(m[1]) if m else MAXMEMORY_MB


def owns(run_dir: Path) -> bool:
    """Does the testbed run this store (so that it hands out users of its own)?"""
    return (run_dir / ACL_FILE).exists()


def master_url(run_dir: Path) -> str:
    """The URL of the store's ``master`` user (lease, epoch, membership; reads heartbeats)."""
    password = read_secret(run_dir / MASTER_PASSWORD_FILE, "master password")
    return store_url(password, user=store_acl.MASTER, ha=is_ha(run_dir))


def instance_url(run_dir: Path, instance_id: str) -> str:
    """Make (or renew) instance ``instance_id``'s user with a new password; return its URL.

    Every node gets it (ACLs are not replicated; on a sentinel the user may only ask where the
    primary is): a running node with ``ACL SETUSER`` and writes its ACL file (``ACL SAVE``), so
    a restarted node still knows it; a stopped one finds it in its ACL file when it starts."""
    user = store_acl.instance_user(instance_id)
    password = new_password()
    for node in nodes(run_dir):
        rules = (
            store_acl.instance_rules(instance_id)
            if node.kind == "data"
            else store_acl.sentinel_client_rules()
        )
        _set_user(run_dir, node, user, ["SETUSER", user, "reset", "on", password_hash(password), *rules],
                  acl_line(user, password, rules))  # fmt: skip
    return store_url(password, user=user, ha=is_ha(run_dir))


def remove_instance_user(run_dir: Path, instance_id: str) -> None:
    """Revoke a removed instance's store user on every node: its credentials open nothing any more."""
    user = store_acl.instance_user(instance_id)
    for node in nodes(run_dir):
        _set_user(run_dir, node, user, ["DELUSER", user], "")


def _set_user(run_dir: Path, node: Node, user: str, command: list[str], acl_entry: str) -> None:
    """Run ``ACL <command>`` on a running node and save its ACL file; edit the file itself
    (``acl_entry`` replacing the user's line, "" to remove it) while the node is stopped."""
    if ping(password_file(run_dir), port=node.port):
        try:
            with inside(a.MGMT_NETNS):  # the connection is made (and used) in fwc-mgmt
                r: Any = admin_client(run_dir, node.port)
                try:
                    r.execute_command("ACL", *command)
                    r.execute_command("ACL", "SAVE")
                finally:
                    r.close()
        except (redis.RedisError, OSError) as e:
            raise TestbedError(f"cannot change the store user {user} on port {node.port}: {e}") from None
    else:
        acl = node.acl(run_dir)
        lines = [ln + "\n" for ln in acl.read_text().splitlines() if ln.split()[:2] != ["user", user]]
        write_secret(acl, "".join(lines) + acl_entry)


def admin_client(run_dir: Path, port: int, timeout: float = 5.0) -> Any:
    """A blocking redis-py client of one node as ``admin`` (make it inside fwc-mgmt)."""
    return redis.Redis(
        host=a.mgmt_bridge_addr().ip4,
        port=port,
        username=ADMIN,
        password=password_of(run_dir / CONF_FILE),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


def password_file(run_dir: Path) -> Path:
    """Where the admin password is (0600), for :func:`cli_argv`."""
    return run_dir / PASSWORD_FILE


def password_of(conf: Path) -> str:
    """The admin password of the store whose config :func:`write_conf` wrote."""
    return read_secret(password_file(conf.parent), "store password")


# redis-cli reads its password from REDISCLI_AUTH; a shell reads it from the 0600 file into the
# environment, so neither argv (ours, the shell's, redis-cli's) holds it.
_WITH_PASSWORD = 'IFS= read -r REDISCLI_AUTH < "$0" && export REDISCLI_AUTH && exec redis-cli "$@"'


def cli_argv(
    secret: Path, netns: str = a.MGMT_NETNS, host: str | None = None, port: int = REDIS_PORT
) -> list[str]:
    """``redis-cli`` inside ``netns`` as the admin user, its password read from ``secret``
    (:func:`password_file`) into ``REDISCLI_AUTH``; append a command."""
    where = ["-h", host or a.mgmt_bridge_addr().ip4, "-p", str(port)]
    return netns_argv(netns, ["sh", "-c", _WITH_PASSWORD, str(secret), "--user", ADMIN, *where])


def ping(secret: Path, netns: str = a.MGMT_NETNS, host: str | None = None, port: int = REDIS_PORT) -> bool:
    """Does the node answer PONG (from ``netns``, within :data:`PING_TIMEOUT`)?"""
    argv = cli_argv(secret, netns, host, port)[4:]  # without "ip netns exec NS"
    try:
        r = run_in(netns, [*argv, "ping"], timeout=PING_TIMEOUT, check=False)
    except CommandError:  # no answer in time
        return False
    return r.returncode == 0 and r.stdout.strip() == "PONG"


def start(run_dir: Path, conf: Path, timeout: float = START_TIMEOUT, node: Node = PRIMARY) -> int:
    """Start ``node`` (redis-server, or redis-sentinel) in fwc-mgmt with ``conf``; wait until it
    answers PING; return its pid. Whatever it writes (ACL file, rewritten config) is 0600."""
    secret = password_file(run_dir)
    node.pidfile(run_dir).unlink(missing_ok=True)
    binary = "redis-server" if node.kind == "data" else "redis-sentinel"
    log = node.log(run_dir)
    # `ip netns exec` execs the server, so the pid is redis's own.
    proc = spawn_detached(netns_argv(a.MGMT_NETNS, [binary, str(conf)]), log, umask=0o077)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TestbedError(f"{binary} exited during start-up (status {proc.returncode}); see {log}")
        if ping(secret, port=node.port):
            return proc.pid
        time.sleep(0.02)
    terminate([proc.pid])
    raise TestbedError(f"{binary} did not answer PING within {timeout:g} s; see {log}")


def stop(pid: int | None) -> None:
    """Stop a node (SIGTERM; it saves nothing) and wait until it is gone."""
    if pid is not None and alive(pid):
        terminate([pid])
