"""What one process on a host needs beyond the cluster's config: the ``[instance]`` and
``[master]`` sections of the same TOML file, checked whole before anything starts.

``fwcluster instance run`` and ``fwcluster master run`` read one file; command-line flags of the
same names override a section's fields, so that one file can serve several processes of a host
(``--id fw2 --queue 1``). Everything is validated here, before the kernel is touched or a queue
bound: the cluster config (config.py), every field of the section, the files they name (a secret
file must be a regular file only its owner can read: credentials.py) and the addresses. A mistake
is one :class:`~fwcluster.config.ConfigError` line naming the file and the field.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fwcluster import credentials
from fwcluster.config import Config, ConfigError, _only, _positive_int, _table, load_toml, parse_config
from fwcluster.control.master import STEERING_SPEC
from fwcluster.instance.metrics import ListenAddr, parse_listen

DEFAULT_CONFIG = Path("/etc/fwcluster/fwcluster.toml")
DEFAULT_RUN_DIR = Path("/run/fwcluster")
MIN_TOKEN = 16  # characters of an admin API token
MAX_QUEUE = 65535
# Ids name files in the run dir, store keys (fwc:hb:<id>) and store users (inst-<id>).
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
INSTANCE_FIELDS = ("id", "queue", "run_dir", "metrics", "store_url_file")
MASTER_FIELDS = ("id", "run_dir", "api", "api_token_file", "metrics", "store_url_file", "steering")


@dataclass(frozen=True, slots=True)
class InstanceHost:
    id: str
    queue: int
    run_dir: Path
    metrics: ListenAddr | None
    store_url: str  # from store_url_file, $FWCLUSTER_STORE_URL or [store] url ("" = none)


@dataclass(frozen=True, slots=True)
class MasterHost:
    id: str
    run_dir: Path
    api: ListenAddr | None
    api_token: str | None
    metrics: ListenAddr | None
    store_url: str
    steering: Path


def load_instance(path: str | Path, overrides: dict[str, Any]) -> tuple[Config, InstanceHost]:
    """The cluster config and the ``[instance]`` section of ``path`` (flags in ``overrides``
    win over the file's fields; None values are not given)."""
    config, t, where = _section(path, "instance", INSTANCE_FIELDS, overrides)
    try:
        iid = _id(t, where)
        queue = _positive_int(t, where, "queue", 0, 0, MAX_QUEUE)
        run_dir = _run_dir(t, where)
        metrics = _listen(t, where, "metrics")
        url = _store_url(t, where, config)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return config, InstanceHost(id=iid, queue=queue, run_dir=run_dir, metrics=metrics, store_url=url)


def load_master(path: str | Path, overrides: dict[str, Any]) -> tuple[Config, MasterHost]:
    """The cluster config and the ``[master]`` section of ``path`` (as :func:`load_instance`)."""
    config, t, where = _section(path, "master", MASTER_FIELDS, overrides)
    try:
        mid = _id(t, where)
        run_dir = _run_dir(t, where)
        metrics = _listen(t, where, "metrics")
        api = _listen(t, where, "api")
        token = None
        if "api_token_file" in t:
            token = credentials.api_token(
                _path(t, where, "api_token_file"), f"{where}.api_token_file", MIN_TOKEN
            )
        elif api is not None:
            token = credentials.api_token(None, min_length=MIN_TOKEN) or None
        if api is not None and not token:
            raise ConfigError(
                f"{where}.api needs {where}.api_token_file (mode 0600) or ${credentials.TOKEN_ENV}: "
                "no network API without a token"
            )
        url = _store_url(t, where, config)
        if not url:
            raise ConfigError(
                f"a store URL is needed: {where}.store_url_file, ${credentials.STORE_URL_ENV} or [store] url"
            )
        steering = _path(t, where, "steering") if "steering" in t else run_dir / STEERING_SPEC
        if not steering.is_file():
            raise ConfigError(f"{where}.steering: {steering}: no such file (the steering description)")
    except (ConfigError, credentials.CredentialError) as e:
        raise ConfigError(f"{path}: {e}") from None
    host = MasterHost(
        id=mid, run_dir=run_dir, api=api, api_token=token, metrics=metrics, store_url=url, steering=steering
    )
    return config, host


def check_sections(data: dict[str, Any], source: str) -> None:
    """The fields of ``[instance]`` and ``[master]`` (names and types only: ``check-config``),
    without reading the files they name."""
    for name, allowed in (("instance", INSTANCE_FIELDS), ("master", MASTER_FIELDS)):
        try:
            _only(_table(data, name), allowed, name)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None


def _section(
    path: str | Path, name: str, allowed: tuple[str, ...], overrides: dict[str, Any]
) -> tuple[Config, dict[str, Any], str]:
    data = load_toml(path)
    config = parse_config(data, str(path))
    check_sections(data, str(path))
    try:
        credentials.check_config_secrets(config, path)
    except credentials.CredentialError as e:
        raise ConfigError(str(e)) from None
    t = dict(_table(data, name))
    t.update({k: v for k, v in overrides.items() if v is not None})
    try:
        _only(t, allowed, name)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return config, t, name


def _id(t: dict[str, Any], where: str) -> str:
    value = t.get("id")
    if value is None:
        raise ConfigError(f"{where}.id: missing (give it in the file or with --id)")
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ConfigError(
            f"{where}.id: {value!r} is not allowed (allowed: 1-32 letters, digits, '-' or '_', "
            "starting with a letter or digit)"
        )
    return value


def _path(t: dict[str, Any], where: str, key: str) -> Path:
    value = t[key]
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise ConfigError(f"{where}.{key}: {value!r} is not an absolute path")
    return Path(value)


def _run_dir(t: dict[str, Any], where: str) -> Path:
    """The run dir (created 0700 if missing): a directory nobody else may write to."""
    run = _path(t, where, "run_dir") if "run_dir" in t else DEFAULT_RUN_DIR
    try:
        run.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(run)
    except OSError as e:
        raise ConfigError(f"{where}.run_dir: {run}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{where}.run_dir: {run}: not a directory")
    if st.st_mode & 0o022:
        mode = stat.S_IMODE(st.st_mode)
        raise ConfigError(f"{where}.run_dir: {run}: writable by others (mode {mode:04o}): `chmod 700 {run}`")
    return run


def _listen(t: dict[str, Any], where: str, key: str) -> ListenAddr | None:
    value = t.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f'{where}.{key}: expected a string "ADDR:PORT"')
    try:
        return parse_listen(value)
    except ValueError as e:
        raise ConfigError(f"{where}.{key}: {e}") from None


def _store_url(t: dict[str, Any], where: str, config: Config) -> str:
    """From the section's store_url_file (0600), else $FWCLUSTER_STORE_URL, else [store] url."""
    url_file = _path(t, where, "store_url_file") if "store_url_file" in t else None
    try:
        url = credentials.store_url(None, url_file)
    except credentials.CredentialError as e:
        raise ConfigError(str(e).replace("--store-url-file", f"{where}.store_url_file", 1)) from None
    return url or config.store.url
