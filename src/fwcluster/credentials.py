"""Secrets a process is handed: the store URL (it may carry a password) and the admin API token.

Neither ever goes on a command line, where every local user reads it (``ps``,
``/proc/<pid>/cmdline``): a process takes it from a file only its owner can read (mode 0600, the
way ssh treats a private key) or from its environment (``/proc/<pid>/environ`` is readable by
the owner and root only). A URL without a password may still be given on the command line.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from fwcluster.config import Config, ConfigError, check_store_url

STORE_URL_ENV = "FWCLUSTER_STORE_URL"
TOKEN_ENV = "FWCLUSTER_TOKEN"
MAX_SECRET = 4096  # bytes read from a secret file


class CredentialError(ValueError):
    """A secret cannot be had the safe way; the message is one line for the user."""


def write_secret(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` with mode 0600 (also when the file existed with another mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text if text.endswith("\n") else text + "\n")
    return path


def read_secret(path: Path, option: str) -> str:
    """The first line of a secret file, which must be a regular file that only its owner (this
    user or root) can read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise CredentialError(f"{option} {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CredentialError(f"{option} {path}: not a regular file")
        if st.st_mode & 0o077:
            mode = stat.S_IMODE(st.st_mode)
            raise CredentialError(
                f"{option} {path}: readable by others (mode {mode:04o}): `chmod 600 {path}` first"
            )
        if st.st_uid not in (0, os.geteuid()):
            raise CredentialError(f"{option} {path}: owned by another user (uid {st.st_uid})")
        raw = f.read(MAX_SECRET + 1)
    if len(raw) > MAX_SECRET:
        raise CredentialError(f"{option} {path}: longer than {MAX_SECRET} bytes")
    try:
        lines = raw.decode().strip().splitlines()
    except UnicodeDecodeError:
        raise CredentialError(f"{option} {path}: not UTF-8 text") from None
    if not lines:
        raise CredentialError(f"{option} {path}: empty")
    return lines[0].strip()


def has_password(url: str) -> bool:
    """Does the URL carry a password (``scheme://[user]:password@...``)?"""
    netloc = url.partition("://")[2].partition("/")[0]
    userinfo, at, _ = netloc.rpartition("@")
    return bool(at) and ":" in userinfo


def store_url(url: str | None, url_file: Path | None, environ: Mapping[str, str] | None = None) -> str:
    """The store URL from ``--store-url`` (no password), ``--store-url-file`` (mode 0600) or
    ``$FWCLUSTER_STORE_URL``, checked as config.check_store_url does; "" when none is given."""
    env = os.environ if environ is None else environ
    if url and url_file is not None:
        raise CredentialError("give --store-url or --store-url-file, not both")
    if url_file is not None:
        value, where = read_secret(url_file, "--store-url-file"), f"--store-url-file {url_file}"
    elif url:
        if has_password(url):
            raise CredentialError(
                "--store-url: a password on the command line is readable by every local user: "
                f"put the URL in a file only you can read (--store-url-file FILE) or in ${STORE_URL_ENV}"
            )
        value, where = url, "--store-url"
    else:
        value, where = env.get(STORE_URL_ENV, ""), f"${STORE_URL_ENV}"
    if value:
        try:
            check_store_url(value, where)
        except ConfigError as e:
            raise CredentialError(str(e)) from None
    return value


def api_token(
    token_file: Path | None,
    option: str = "--token-file",
    min_length: int = 0,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The admin API token from a file (mode 0600) or ``$FWCLUSTER_TOKEN``; "" when neither."""
    env = os.environ if environ is None else environ
    if token_file is not None:
        token, where = read_secret(token_file, option), f"{option} {token_file}"
    else:
        token, where = env.get(TOKEN_ENV, "").strip(), f"${TOKEN_ENV}"
    if token and len(token) < min_length:
        raise CredentialError(f"{where}: the token must be at least {min_length} characters")
    return token


def check_config_secrets(config: Config, path: str | Path | None) -> None:
    """A config whose store.url carries a password must be a file only its owner can read."""
    if path is None or not has_password(config.store.url):
        return
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise CredentialError(
            f"{path}: store.url holds a password and the file is readable by others (mode {mode:04o}): "
            f"`chmod 600 {path}`, or leave the password out and use --store-url-file or ${STORE_URL_ENV}"
        )
