"""Store URLs that name a Redis Sentinel service instead of one server (pure: no I/O).

``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``: the sentinels
(port 26379 when none is given) that watch the service's primary and its replicas. The user and
password open both the sentinels and the data nodes (the testbed gives every user to every node).
A config may instead list ``[store] sentinels`` and ``service``; the store URL then only brings
the user, the password and the database (:func:`with_sentinels`), so the secret stays in the
0600 URL file or the environment and the topology in the config.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
SERVICE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
MAX_SENTINELS = 16


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    username: str | None = None
    password: str | None = None
    db: int = 0


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SCHEME + "://")


def parse_address(text: str, default_port: int = DEFAULT_SENTINEL_PORT) -> tuple[str, int]:
    """``host[:port]`` or ``[v6]:port``; ValueError (one line, naming ``text``) when it is not one."""
    if text.startswith("["):
        host, close, tail = text[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise ValueError(f"{text!r}: an IPv6 host needs brackets: [2001:2::1]:26379")
        port_text = tail[1:] if tail else ""
        _ip(host, text)
    else:
        host, colon, port_text = text.partition(":")
        if ":" in port_text:
            raise ValueError(f"{text!r}: an IPv6 host needs brackets: [2001:2::1]:26379")
        if colon and not port_text:
            raise ValueError(f"{text!r}: no port after ':'")
        if not host:
            raise ValueError(f"{text!r}: no host")
        if host.replace(".", "").isdigit():
            _ip(host, text)
        elif len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
            raise ValueError(f"{text!r}: host is not a DNS name or an IP address")
    if not port_text:
        return host, default_port
    if not (port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise ValueError(f"{text!r}: port is not 1..65535")
    return host, int(port_text)


def _ip(host: str, text: str) -> None:
    if "%" in host:
        raise ValueError(f"{text!r}: a link-local address with a zone id (%...) is not supported")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: host is not an IP address") from None


def check_service(service: str) -> None:
    if not SERVICE.fullmatch(service):
        raise ValueError(f"service {service!r} is not a name (1-64 letters, digits, _ . -)")


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, service, credentials and database of a ``redis+sentinel://`` URL; a
    ValueError whose message never repeats the URL (it may hold a password)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != SCHEME:
        raise ValueError(f"not a {SCHEME}:// URL")
    if "#" in rest or "?" in rest:
        raise ValueError("no query or fragment is read")
    netloc, slash, path = rest.partition("/")
    username, password, hosts = _userinfo(netloc)
    if not hosts:
        raise ValueError("no sentinel host")
    # Split on the commas outside brackets (an IPv6 address holds no comma anyway).
    addresses = tuple(parse_address(h) for h in hosts.split(","))
    if len(addresses) > MAX_SENTINELS:
        raise ValueError(f"more than {MAX_SENTINELS} sentinels")
    parts = path.split("/") if slash else []
    if not parts or not parts[0]:
        raise ValueError("no service name after the sentinels (…/SERVICE[/DB])")
    check_service(parts[0])
    db_text = "/".join(parts[1:]).strip("/")
    if db_text and not (db_text.isdigit() and int(db_text) < 2**31):
        raise ValueError(f"database {db_text!r} is not a number")
    return SentinelTarget(addresses, parts[0], username, password, int(db_text) if db_text else 0)


def _userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    """User, password (unquoted; None when absent) and the rest of a URL's netloc."""
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return None, None, hosts
    user, colon, pw = userinfo.partition(":")
    return unquote(user) or None, unquote(pw) if colon else None, hosts


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def sentinel_url(
    sentinels: Sequence[tuple[str, int]],
    service: str,
    username: str | None = None,
    password: str | None = None,
    db: int = 0,
) -> str:
    """The ``redis+sentinel://`` URL of these sentinels and service."""
    auth = ""
    if username is not None or password is not None:
        auth = quote(username or "", safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        auth += "@"
    hosts = ",".join(format_address(h, p) for h, p in sentinels)
    return f"{SCHEME}://{auth}{hosts}/{service}/{db}"


def _credentials(url: str) -> tuple[str | None, str | None, int]:
    """User, password and database of a ``redis://`` URL (the host is not read)."""
    rest = url.partition("://")[2]
    netloc, _, path = rest.partition("/")
    user, password, _ = _userinfo(netloc)
    db = path.strip("/")
    return user, password, int(db) if db.isdigit() else 0


def with_sentinels(url: str, sentinels: Sequence[str], service: str) -> str:
    """The URL clients use: ``url`` as it is when no sentinels are configured or it names
    sentinels itself; else a sentinel URL of ``sentinels`` and ``service`` with the user,
    password and database of ``url`` (its host and port are not used)."""
    if not sentinels or is_sentinel_url(url):
        return url
    user, password, db = _credentials(url) if url else (None, None, 0)
    return sentinel_url([parse_address(s) for s in sentinels], service, user, password, db)
