"""The run dir (``/run/fwcluster``): what the testbed keeps on disk, and who may read it.

The run dir is 0700 and every file in it that holds a secret is 0600: the state file
(``testbed.json``: the store's admin URL), the config copy (its ``[store] url`` may carry a
password), the store's ACL file and admin password, the admin API token and each process's
store URL file (``<id>.store-url``, read by that process at start, never put on its command line).
nginx's workers run as nobody and must read the document root, so what nginx serves lives in a
dir of its own beside the run dir, ``<run_dir>-www`` (0755), which holds no secret.
"""

from __future__ import annotations

import shutil
from contextlib import suppress
from pathlib import Path

from fwcluster.config import DEFAULT_TOML, Config, ConfigError, load_config, load_toml
from fwcluster.credentials import write_secret

CONFIG_FILE = "config.toml"
RUN_MODE = 0o700
WWW_MODE = 0o755
STORE_URL_SUFFIX = ".store-url"


def www_dir(run: Path) -> Path:
    """nginx's files (document root, temp dirs): readable by its workers, no secret in them."""
    return run.with_name(run.name + "-www")


def store_url_file(run: Path, process_id: str) -> Path:
    """Where instance or master ``process_id`` reads its store URL (0600)."""
    return run / f"{process_id}{STORE_URL_SUFFIX}"


def prepare(run: Path, config_path: str | Path | None) -> Path:
    """An empty run dir (0700) with the testbed's config in it (0600); return the config's path."""
    run.mkdir(mode=RUN_MODE, parents=True, exist_ok=True)
    run.chmod(RUN_MODE)
    clear(run, keep_logs=False)
    www = www_dir(run)
    www.mkdir(mode=WWW_MODE, exist_ok=True)
    www.chmod(WWW_MODE)
    return install_config(run, config_path)


def load_testbed_config(config_path: str | Path | None) -> Config:
    """The config the testbed runs with; its processes' own sections it makes itself."""
    config = load_config(config_path)
    if config_path is not None and {"instance", "master"} & load_toml(config_path).keys():
        raise ConfigError(
            f"{config_path}: the testbed gives its instances and masters their [instance] and "
            "[master] fields itself (flags of `fwcluster instance run`): leave those sections out"
        )
    return config


def install_config(run: Path, config_path: str | Path | None) -> Path:
    """Copy the config into the run dir (0600: its store URL may hold a password)."""
    text = DEFAULT_TOML if config_path is None else Path(config_path).read_text()
    return write_secret(run / CONFIG_FILE, text)


def clear(run: Path, keep_logs: bool) -> None:
    """Remove what the run dir holds (the logs too unless ``keep_logs``) and the www dir."""
    shutil.rmtree(www_dir(run), ignore_errors=True)
    if not run.is_dir():
        return
    for entry in run.iterdir():
        if keep_logs and entry.suffix == ".log":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with suppress(FileNotFoundError):
                entry.unlink()
