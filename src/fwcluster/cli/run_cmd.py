"""``fwcluster instance run`` and ``fwcluster master run``: the processes of a cluster.

Both read the one TOML file (``--config``, default /etc/fwcluster/fwcluster.toml): the cluster's
config and the process's own section, ``[instance]`` or ``[master]`` (hostconfig.py); a flag
overrides the field of the same name. Everything is checked before the kernel is touched or the
queue bound; a mistake is one line on stderr and exit status 2, a failure to start exit status 1.
The testbed starts its instances and masters with exactly these commands (testbed/instances.py,
testbed/masters.py), and deploy/ has the systemd units that start them on a host.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from fwcluster import credentials, eventlog, hostconfig
from fwcluster.config import ConfigError
from fwcluster.control.master import Master
from fwcluster.instance.metrics import MetricsServer
from fwcluster.instance.process import Instance
from fwcluster.statetable.factory import StoreConfigError
from fwcluster.steering.base import SteeringError
from fwcluster.storeurl import with_sentinels

CONFIG_HELP = f"the TOML config file (default {hostconfig.DEFAULT_CONFIG})"


def add_instance_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=hostconfig.DEFAULT_CONFIG, help=CONFIG_HELP)
    p.add_argument("--id", help="instance id, e.g. fw1 (overrides [instance] id)")
    p.add_argument("--queue", type=int, help="NFQUEUE number to read (overrides [instance] queue; default 0)")
    p.add_argument("--run-dir", help=f"where the control socket goes (default {hostconfig.DEFAULT_RUN_DIR})")
    p.add_argument("--metrics", metavar="ADDR:PORT", help="serve Prometheus /metrics there ([ADDR6]:PORT)")
    p.add_argument(
        "--store-url-file",
        metavar="FILE",
        help="read the store URL from FILE (mode 0600, first line); "
        "else $FWCLUSTER_STORE_URL, else [store] url",
    )
    p.add_argument("--store-url", help=argparse.SUPPRESS)  # refused: see _no_url_in_argv
    p.set_defaults(func=instance_run)


def add_master_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=hostconfig.DEFAULT_CONFIG, help=CONFIG_HELP)
    p.add_argument("--id", help="master id, e.g. m1 (overrides [master] id)")
    p.add_argument("--run-dir", help=f"status file and API socket (default {hostconfig.DEFAULT_RUN_DIR})")
    p.add_argument("--metrics", metavar="ADDR:PORT", help="serve Prometheus /metrics there ([ADDR6]:PORT)")
    p.add_argument(
        "--listen-api",
        metavar="ADDR:PORT",
        help="also serve the admin API on ADDR:PORT (overrides [master] api; needs a token file)",
    )
    p.add_argument("--api-token-file", metavar="FILE", help="the token network clients must send (mode 0600)")
    p.add_argument("--store-url-file", metavar="FILE", help="read the store URL from FILE (mode 0600)")
    p.add_argument(
        "--steering", metavar="FILE", help="the steering description (default <run_dir>/steering.json)"
    )
    p.add_argument("--store-url", help=argparse.SUPPRESS)
    p.set_defaults(func=master_run)


def _overrides(args: argparse.Namespace, names: dict[str, str]) -> dict[str, Any]:
    return {field: getattr(args, attr) for attr, field in names.items()}


def _no_url_in_argv(args: argparse.Namespace) -> None:
    """A store URL may carry a password: never from the command line (``ps`` shows it)."""
    if args.store_url is not None:
        raise ConfigError(
            "--store-url: a URL on the command line is readable by every local user: use "
            f"--store-url-file FILE (mode 0600), ${credentials.STORE_URL_ENV} or [store] url"
        )


def _fail(prog: str, message: str, code: int) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return code


def instance_run(args: argparse.Namespace) -> int:
    prog = "fwcluster instance run"
    names = {"id": "id", "queue": "queue", "run_dir": "run_dir", "metrics": "metrics"}
    names["store_url_file"] = "store_url_file"
    try:
        _no_url_in_argv(args)
        config, host = hostconfig.load_instance(args.config, _overrides(args, names))
        instance = Instance(host.id, config, host.queue, host.run_dir, host.store_url, host.metrics)
    except (ConfigError, StoreConfigError) as e:
        return _fail(prog, str(e), 2)
    eventlog.setup("instance", host.id)
    try:
        asyncio.run(instance.run())
    except OSError as e:
        return _fail(prog, f"cannot start {host.id}: {e}", 1)
    return 0


def master_run(args: argparse.Namespace) -> int:
    prog = "fwcluster master run"
    names = {"id": "id", "run_dir": "run_dir", "metrics": "metrics", "listen_api": "api"}
    names |= {"api_token_file": "api_token_file", "store_url_file": "store_url_file", "steering": "steering"}
    try:
        _no_url_in_argv(args)
        config, host = hostconfig.load_master(args.config, _overrides(args, names))
        store_url = with_sentinels(host.store_url, config.store.sentinels, config.store.service)
        master = Master(host.id, config, host.run_dir, store_url, host.steering)
    except (ConfigError, SteeringError) as e:
        return _fail(prog, str(e), 2)
    master.api_addr = (host.api.host, host.api.port) if host.api else None
    master.api_token = host.api_token
    eventlog.setup("master", host.id)
    server: MetricsServer | None = None
    if host.metrics is not None:
        try:
            server = MetricsServer(host.metrics, master.metrics.registry)
        except OSError as e:
            return _fail(prog, str(e.strerror or e), 1)
    try:
        asyncio.run(master.run())
    except OSError as e:
        return _fail(prog, f"cannot start {host.id}: {e}", 1)
    finally:
        if server is not None:
            server.close()
    return 0
