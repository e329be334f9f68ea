"""The one TOML configuration file: load it and validate every field before anything starts.

A mistake is a :class:`ConfigError` whose message names the field and what it allows, on one
line, so the command line can print it and exit with status 2.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from fwcluster.core.rules import ACTION_BY_NAME, PROTO_BY_NAME, Action, Network, Rule, RuleSet
from fwcluster.core.timeouts import Timeouts
from fwcluster.statetable.settings import Access, Confirm, Follow, SyncLevel, SyncSettings
from fwcluster.storeurl import check_service, is_sentinel_url, parse_address, parse_sentinel_url

E = TypeVar("E", bound=StrEnum)

MAX_BUCKETS = 4096  # symmetric steering: nft map elements
# ecmp steering: iproute2 builds `ip nexthop add ... group` in a 1 KiB request buffer (8 bytes
# per member, one member per bucket), which holds at most 124 members; the ecmp driver allows
# 120 (steering.ecmp.MAX_BUCKETS, kept equal by a unit test: config sits below steering).
ECMP_MAX_BUCKETS = 120
MIN_TIMEOUT_S = 0.001  # the core keeps expiries in whole milliseconds
MAX_TIMEOUT_S = 10_000_000
# The heartbeat key lives heartbeat_ms * misses and is renewed every heartbeat_ms plus a round
# trip: with 1 it lapses before every renewal, so a healthy instance would be failed over; 2 is
# the least that lets one beat be late.
MIN_MISSES = 2
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class ConfigError(Exception):
    """A configuration mistake; the message is one line naming the field."""


class SteeringKind(StrEnum):
    SYMMETRIC = "symmetric"  # nft symhash: both directions of a flow cross one instance
    ECMP = "ecmp"  # resilient nexthop groups: each direction hashed on its own


class StoreBackend(StrEnum):
    REDIS = "redis"  # a real redis-server, shared by all instances
    MEMORY = "memory"  # one instance, nothing shared


class HeldVerdict(StrEnum):
    DROP = "drop"
    ACCEPT = "accept"


class OutagePolicy(StrEnum):
    REFUSE = "refuse"  # no new flows while the store is unreachable
    LOCAL = "local"  # new flows are tracked locally and written back once the store is back


# The name "local" had before (issue 11); still read, as "local".
DEPRECATED_OUTAGE = {"accept": OutagePolicy.LOCAL}


class StoreHa(StrEnum):
    SENTINEL = "sentinel"  # the testbed runs a primary, two replicas and three sentinels
    NONE = "none"  # one redis-server


@dataclass(frozen=True, slots=True)
class StoreConfig:
    backend: StoreBackend = StoreBackend.REDIS
    url: str = ""  # empty: the testbed's own redis-server in fwc-mgmt
    timeout_ms: int = 50  # bound on a sync write or a miss look-up
    on_timeout: HeldVerdict = HeldVerdict.DROP  # verdict for a held packet the store did not confirm in time
    outage: OutagePolicy = OutagePolicy.LOCAL
    replicas: int = 0  # sync confirm also waits for this many replicas (Redis WAIT)
    lookup_rate: int = 2000  # store look-ups per second on a local miss; beyond it the packet is invalid
    # ECMP: how long a packet that may answer another instance's opening step (a SYN-ACK, the
    # client's ACK) waits for that instance's async write, asked again 1, 2, 4 ... ms apart
    handshake_wait_ms: int = 250
    # The testbed's own redis-server: maxmemory in MiB, with maxmemory-policy noeviction (a write
    # beyond it is refused, never a flow silently evicted). A flow costs about 210 bytes there
    # (key, value, TTL, its feed entry): 256 MiB hold over a million, 4x the default max_flows.
    maxmemory_mb: int = 256
    ha: StoreHa = StoreHa.SENTINEL  # the testbed's own store: Sentinel-managed, or one server
    # An external Sentinel-managed store: its sentinels ("host:port") and service name; the
    # store URL then only brings the user, password and database (fwcluster/storeurl.py).
    sentinels: tuple[str, ...] = ()
    service: str = "fwc"


@dataclass(frozen=True, slots=True)
class ConntrackConfig:
    max_flows: int = 262_144
    timeouts: Timeouts = field(default_factory=Timeouts)
    # As the kernel's nf_conntrack_tcp_be_liberal: true judges TCP by flags and state only;
    # false (the default) also tracks sequence windows (core/window.py).
    be_liberal: bool = False


@dataclass(frozen=True, slots=True)
class SteeringConfig:
    kind: SteeringKind = SteeringKind.SYMMETRIC
    buckets: int = 64


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    masters: int = 2  # master processes the testbed starts (one leads)
    standby: int = 0  # instances kept ready with no traffic, first in line on a failure
    heartbeat_ms: int = 100  # instance heartbeat interval
    misses: int = 5  # heartbeats missed before an instance counts as failed
    lease_ms: int = 1000  # leader lease; a standby master takes over at most this long after

    @property
    def heartbeat_ttl_ms(self) -> int:
        return self.heartbeat_ms * self.misses


@dataclass(frozen=True, slots=True)
class DatapathConfig:
    # Once a flow is ESTABLISHED (UDP/ICMP: REPLIED) and that change is committed, mark it in the
    # kernel's conntrack so that the rest of it is forwarded without a trip to user space (SYN,
    # FIN and RST still come up). false: every packet is inspected in user space.
    fast_path: bool = True
    # With the fast path on and nothing shared (level none): the engine decides a flow's first
    # packet by the rules and the kernel's conntrack tracks the rest of it (handshake, data,
    # close); what conntrack calls new or invalid still comes up. No effect when the level shares.
    kernel_tracking: bool = True


MAX_DENIED_PER_SECOND = 10_000


@dataclass(frozen=True, slots=True)
class LogConfig:
    # Denied new connections logged per second at most (a token bucket: the lines beyond it are
    # counted, not written); 0: none are logged.
    denied_per_second: int = 10


@dataclass(frozen=True, slots=True)
class Config:
    sync: SyncSettings = field(default_factory=SyncSettings)
    ruleset: RuleSet = field(default_factory=RuleSet)
    conntrack: ConntrackConfig = field(default_factory=ConntrackConfig)
    steering: SteeringConfig = field(default_factory=SteeringConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    datapath: DatapathConfig = field(default_factory=DatapathConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = "<defaults>"


# The configuration the testbed and the demo use when no file is given: the study's workload
# (HTTP to the server) is allowed, everything else that would open a connection is dropped.
DEFAULT_TOML = """\
[sync]
level = "established"   # none | established | full
access = "dirty"        # dirty | clean
confirm = "async"       # async | sync
follow = "backup"       # backup | all: whose changes an instance applies (all: the seed's design)

[policy]
default = "drop"        # accept | drop | reject

[[rules]]
action = "accept"
proto = "tcp"
dst = ["198.18.0.0/15", "2001:2::/48"]
dport = 80
"""

# [instance] and [master]: what one process on a host needs, read by hostconfig.py
_TOP = (
    "sync",
    "policy",
    "rules",
    "conntrack",
    "steering",
    "store",
    "cluster",
    "datapath",
    "log",
    "instance",
    "master",
)
_RULE_FIELDS = ("action", "proto", "src", "dst", "sport", "dport", "comment")


def load_config(path: str | Path | None) -> Config:
    """Read and validate a config file; ``None`` gives the built-in default."""
    if path is None:
        return parse_config(tomllib.loads(DEFAULT_TOML), "<defaults>")
    return parse_config(load_toml(path), str(path))


def load_toml(path: str | Path) -> dict[str, Any]:
    """The TOML document of a config file; a ConfigError line when it cannot be read or parsed."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file: {e.strerror}") from None
    return parse_toml(text, str(p))


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """The tables of a TOML text; a ConfigError naming ``source`` when it is not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{source}: not valid TOML: arrays or tables nested too deeply") from None


def parse_config(data: dict[str, Any], source: str) -> Config:
    try:
        _only(data, _TOP, "")
        return Config(
            sync=_sync(_table(data, "sync")),
            ruleset=_ruleset(_table(data, "policy"), data.get("rules", [])),
            conntrack=_conntrack(_table(data, "conntrack")),
            steering=_steering(_table(data, "steering")),
            store=_store(_table(data, "store")),
            cluster=_cluster(_table(data, "cluster")),
            datapath=_datapath(_table(data, "datapath")),
            log=_log(_table(data, "log")),
            source=source,
        )
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


POLICY_SECTIONS = ("policy", "rules")


def parse_policy_tables(data: dict[str, Any], source: str) -> RuleSet:
    """The ``[policy]`` and ``[[rules]]`` of a policy file (``fwcluster policy apply``): the same
    fields as in a config, checked by the same code; any other section is refused."""
    try:
        _only(data, POLICY_SECTIONS, "")
        return _ruleset(_table(data, "policy"), data.get("rules", []))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _only(table: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            name = f"{where}.{key}" if where else key
            raise ConfigError(f"unknown field {name!r} (allowed: {', '.join(allowed)})")


def _table(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a table [{name}], got {type(value).__name__}")
    return value


def _choice(table: dict[str, Any], where: str, key: str, enum: type[E], default: E) -> E:
    value = table.get(key, default.value)
    allowed = [e.value for e in enum]
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{where}.{key}: {value!r} is not allowed (allowed: {' | '.join(allowed)})")
    return enum(value)


def _sync(t: dict[str, Any]) -> SyncSettings:
    _only(t, ("level", "access", "confirm", "follow"), "sync")
    return SyncSettings(
        level=_choice(t, "sync", "level", SyncLevel, SyncLevel.ESTABLISHED),
        access=_choice(t, "sync", "access", Access, Access.DIRTY),
        confirm=_choice(t, "sync", "confirm", Confirm, Confirm.ASYNC),
        follow=_choice(t, "sync", "follow", Follow, Follow.BACKUP),
    )


def _action(value: Any, where: str) -> Action:
    if not isinstance(value, str) or value not in ACTION_BY_NAME:
        raise ConfigError(f"{where}: {value!r} is not allowed (allowed: {' | '.join(ACTION_BY_NAME)})")
    return ACTION_BY_NAME[value]


def _ruleset(policy: dict[str, Any], rules: Any) -> RuleSet:
    _only(policy, ("default",), "policy")
    default = _action(policy.get("default", "drop"), "policy.default")
    if not isinstance(rules, list):
        raise ConfigError("rules: expected an array of tables [[rules]]")
    return RuleSet(rules=tuple(_rule(r, f"rules[{i}]") for i, r in enumerate(rules)), default=default)


def _rule(r: Any, where: str) -> Rule:
    if not isinstance(r, dict):
        raise ConfigError(f"{where}: expected a table")
    _only(r, _RULE_FIELDS, where)
    if "action" not in r:
        raise ConfigError(f"{where}.action: missing (allowed: {' | '.join(ACTION_BY_NAME)})")
    if "comment" in r and not isinstance(r["comment"], str):
        raise ConfigError(f"{where}.comment: expected a string")
    proto_name = r.get("proto", "any")
    if not isinstance(proto_name, str) or proto_name not in PROTO_BY_NAME:
        raise ConfigError(
            f"{where}.proto: {proto_name!r} is not allowed (allowed: {' | '.join(PROTO_BY_NAME)})"
        )
    proto = PROTO_BY_NAME[proto_name]
    sport = _ports(r.get("sport"), f"{where}.sport")
    dport = _ports(r.get("dport"), f"{where}.dport")
    if (sport or dport) and proto_name not in ("tcp", "udp"):
        raise ConfigError(f'{where}: sport/dport need proto = "tcp" or "udp", not {proto_name!r}')
    return Rule(
        action=_action(r["action"], f"{where}.action"),
        proto=proto,
        src=_networks(r.get("src"), f"{where}.src"),
        dst=_networks(r.get("dst"), f"{where}.dst"),
        sport=sport,
        dport=dport,
    )


def _networks(value: Any, where: str) -> tuple[Network, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{where}: empty list (leave the field out to match any address)")
    nets: list[Network] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{where}: {item!r} is not an address or CIDR string")
        if "%" in item:  # ipaddress takes "fe80::1%eth0"; a packet carries no zone, so it never matches
            raise ConfigError(f"{where}: {item!r} has a zone id (%...): rules match addresses only")
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{where}: {item!r} is not an IPv4/IPv6 address or CIDR") from None
    return tuple(nets)


def _ports(value: Any, where: str) -> tuple[tuple[int, int], ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{where}: empty list (leave the field out to match any port)")
    out: list[tuple[int, int]] = []
    for item in items:
        out.append(_port_range(item, where))
    return tuple(out)


def _port_range(item: Any, where: str) -> tuple[int, int]:
    bad = ConfigError(f'{where}: {item!r} is not a port (0-65535), a range "a-b" or a list of those')
    if isinstance(item, bool):
        raise bad
    if isinstance(item, int):
        first = last = item
    elif isinstance(item, str):
        parts = item.split("-")
        if len(parts) == 1:
            parts = [parts[0], parts[0]]
        if len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
            raise bad
        first, last = int(parts[0]), int(parts[1])
    else:
        raise bad
    if not (0 <= first <= last <= 65535):
        raise bad
    return first, last


def _positive_int(t: dict[str, Any], where: str, key: str, default: int, lo: int, hi: int) -> int:
    value = t.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{where}.{key}: {value!r} is not allowed (allowed: an integer {lo}..{hi})")
    return value


def _conntrack(t: dict[str, Any]) -> ConntrackConfig:
    _only(t, ("max_flows", "timeouts", "be_liberal"), "conntrack")
    max_flows = _positive_int(t, "conntrack", "max_flows", 262_144, 1, 50_000_000)
    be_liberal = t.get("be_liberal", False)
    if not isinstance(be_liberal, bool):
        raise ConfigError(f"conntrack.be_liberal must be true or false, not {be_liberal!r}")
    tt = t.get("timeouts", {})
    if not isinstance(tt, dict):
        raise ConfigError("conntrack.timeouts: expected a table")
    names = Timeouts.names()
    _only(tt, names, "conntrack.timeouts")
    values: dict[str, float] = {}
    for key, value in tt.items():
        # The core keeps expiries in whole milliseconds (int(seconds * 1000)): below 1 ms a timeout
        # would be 0 and every flow would expire as it is made.
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not MIN_TIMEOUT_S <= value <= MAX_TIMEOUT_S
        ):
            raise ConfigError(
                f"conntrack.timeouts.{key}: {value!r} is not allowed "
                f"(allowed: seconds > 0, from {MIN_TIMEOUT_S:g} to {MAX_TIMEOUT_S:g})"
            )
        values[key] = float(value)
    return ConntrackConfig(max_flows=max_flows, timeouts=Timeouts(**values), be_liberal=be_liberal)


def _steering(t: dict[str, Any]) -> SteeringConfig:
    _only(t, ("kind", "buckets"), "steering")
    kind = _choice(t, "steering", "kind", SteeringKind, SteeringKind.SYMMETRIC)
    most = ECMP_MAX_BUCKETS if kind is SteeringKind.ECMP else MAX_BUCKETS
    buckets = _positive_int(t, "steering", "buckets", 64, 1, most)
    return SteeringConfig(kind=kind, buckets=buckets)


def _datapath(t: dict[str, Any]) -> DatapathConfig:
    _only(t, ("fast_path", "kernel_tracking"), "datapath")
    flags = {name: t.get(name, True) for name in ("fast_path", "kernel_tracking")}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"datapath.{name} must be true or false, not {value!r}")
    return DatapathConfig(**flags)


def _log(t: dict[str, Any]) -> LogConfig:
    _only(t, ("denied_per_second",), "log")
    rate = _positive_int(t, "log", "denied_per_second", 10, 0, MAX_DENIED_PER_SECOND)
    return LogConfig(denied_per_second=rate)


_URL_FORMS = (
    "redis[s]://[[user]:password@]host[:port][/db], unix://[[user]:password@]/path or "
    "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]"
)


def check_store_url(url: str, where: str = "store.url") -> None:
    """Raise a one-line ConfigError unless ``url`` is a store URL both clients (redis-py and the
    lean RESP connection) read the same way: scheme, host (a DNS name or an IP address without a
    zone id), port 1..65535, database number; unix:// with an absolute socket path. The message
    never repeats the URL: it may hold a password."""

    def bad(what: str) -> ConfigError:
        return ConfigError(f"{where}: {what} (allowed: {_URL_FORMS})")

    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        raise bad("not a URL (spaces, control or non-ASCII characters)")
    if is_sentinel_url(url):
        try:
            parse_sentinel_url(url)
        except ValueError as e:
            raise bad(str(e)) from None
        return
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss", "unix"):
        raise bad("not a redis://, rediss://, unix:// or redis+sentinel:// URL")
    if "#" in rest or "?" in rest:
        raise bad("no query or fragment is read")
    netloc, slash, path = rest.partition("/")
    hostport = netloc.rpartition("@")[2]
    if scheme == "unix":
        if hostport or not slash or not path.strip("/"):
            raise bad("unix:// needs an absolute socket path and no host")
        return
    if hostport.startswith("["):
        host, close, tail = hostport[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise bad("an IPv6 host needs brackets: [2001:2::1]:6379")
        port = tail[1:] if tail else None
        _check_ip(host, bad)
    else:
        host, colon, port_text = hostport.partition(":")
        port = port_text if colon else None
        if ":" in port_text:
            raise bad("an IPv6 host needs brackets: [2001:2::1]:6379")
        if not host:
            raise bad("no host")
        if host.replace(".", "").isdigit():
            _check_ip(host, bad)
        elif len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
            raise bad(f"host {host!r} is not a DNS name or an IP address")
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise bad(f"port {port!r} is not 1..65535")
    db = path.strip("/") if slash else ""
    if db and not (db.isdigit() and int(db) < 2**31):
        raise bad(f"database {db!r} is not a number")


def _check_ip(host: str, bad: Callable[[str], ConfigError]) -> None:
    if "%" in host:
        raise bad("a link-local address with a zone id (%...) is not supported")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise bad(f"host {host!r} is not an IP address") from None


def _store(t: dict[str, Any]) -> StoreConfig:
    _only(
        t,
        (
            "backend", "url", "timeout_ms", "on_timeout", "outage", "replicas", "lookup_rate",
            "handshake_wait_ms", "maxmemory_mb", "ha", "sentinels", "service",
        ),
        "store",
    )  # fmt: skip
    url = t.get("url", "")
    if not isinstance(url, str):
        raise ConfigError(f'store.url: expected a string ("" or {_URL_FORMS})')
    if url:
        check_store_url(url)
    sentinels, service = _sentinels(t, url)
    return StoreConfig(
        backend=_choice(t, "store", "backend", StoreBackend, StoreBackend.REDIS),
        url=url,
        timeout_ms=_positive_int(t, "store", "timeout_ms", 50, 1, 60_000),
        on_timeout=_choice(t, "store", "on_timeout", HeldVerdict, HeldVerdict.DROP),
        outage=_outage(t),
        replicas=_positive_int(t, "store", "replicas", 0, 0, 16),
        lookup_rate=_positive_int(t, "store", "lookup_rate", 2000, 1, 1_000_000),
        handshake_wait_ms=_positive_int(t, "store", "handshake_wait_ms", 250, 1, 60_000),
        maxmemory_mb=_positive_int(t, "store", "maxmemory_mb", 256, 16, 1_048_576),
        ha=_choice(t, "store", "ha", StoreHa, StoreHa.SENTINEL),
        sentinels=sentinels,
        service=service,
    )


def _outage(t: dict[str, Any]) -> OutagePolicy:
    value = t.get("outage")
    if isinstance(value, str) and value in DEPRECATED_OUTAGE:
        return DEPRECATED_OUTAGE[value]
    return _choice(t, "store", "outage", OutagePolicy, OutagePolicy.LOCAL)


def _sentinels(t: dict[str, Any], url: str) -> tuple[tuple[str, ...], str]:
    raw = t.get("sentinels", [])
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise ConfigError('store.sentinels: expected a list of "host:port" strings')
    if len(raw) > 16:
        raise ConfigError("store.sentinels: at most 16 sentinels")
    for s in raw:
        try:
            parse_address(s)
        except ValueError as e:
            raise ConfigError(f"store.sentinels: {e}") from None
    service = t.get("service", "fwc")
    if not isinstance(service, str):
        raise ConfigError("store.service: expected a string (the Sentinel service name)")
    try:
        check_service(service)
    except ValueError as e:
        raise ConfigError(f"store.service: {e}") from None
    if raw and is_sentinel_url(url):
        raise ConfigError("store.sentinels: give the sentinels in store.url or in store.sentinels, not both")
    return tuple(raw), service


def _cluster(t: dict[str, Any]) -> ClusterConfig:
    _only(t, ("masters", "standby", "heartbeat_ms", "misses", "lease_ms"), "cluster")
    return ClusterConfig(
        masters=_positive_int(t, "cluster", "masters", 2, 0, 8),
        standby=_positive_int(t, "cluster", "standby", 0, 0, 8),
        heartbeat_ms=_positive_int(t, "cluster", "heartbeat_ms", 100, 5, 10_000),
        misses=_positive_int(t, "cluster", "misses", 5, MIN_MISSES, 100),
        lease_ms=_positive_int(t, "cluster", "lease_ms", 1000, 100, 60_000),
    )
