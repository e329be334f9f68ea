"""``python -m fwcluster.control``: run one master (the testbed starts these in fwc-mgmt)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from fwcluster import credentials, eventlog
from fwcluster.config import ConfigError, load_config
from fwcluster.control.master import Master
from fwcluster.instance.metrics import ListenAddr, MetricsServer, listen_option
from fwcluster.steering.base import SteeringError
from fwcluster.storeurl import with_sentinels


def _api_options(api: str | None, token_file: Path | None) -> tuple[ListenAddr | None, str | None]:
    """The admin API's network address and token; ValueError with a one-line message when wrong."""
    addr = listen_option("--api", api)
    if addr is None:
        return None, None
    token = credentials.api_token(token_file, "--api-token-file", min_length=16)
    if not token:
        raise ValueError(
            f"--api needs --api-token-file or ${credentials.TOKEN_ENV} (no network API without a token)"
        )
    return addr, token


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fwcluster.control", description="Run one master.")
    ap.add_argument("--id", required=True, help="master id, e.g. m1")
    ap.add_argument("--config", help="TOML config file (default: built-in)")
    ap.add_argument("--run-dir", type=Path, default=Path("/run/fwcluster"), help="the testbed's run dir")
    ap.add_argument(
        "--store-url",
        metavar="URL",
        help="redis:// URL of the store (lease, heartbeats) without a password (the command line is "
        "public); with one: --store-url-file or $FWCLUSTER_STORE_URL",
    )
    ap.add_argument(
        "--store-url-file",
        type=Path,
        metavar="FILE",
        help="read the store URL from FILE (mode 0600, first line); the testbed passes this",
    )
    ap.add_argument(
        "--metrics",
        metavar="ADDR:PORT",
        help="serve Prometheus /metrics on ADDR:PORT ([ADDR6]:PORT for IPv6; default: off)",
    )
    ap.add_argument(
        "--api",
        metavar="ADDR:PORT",
        help="also serve the admin API on ADDR:PORT (needs --api-token-file; the Unix socket "
        "<run-dir>/<id>.api.sock is always served)",
    )
    ap.add_argument(
        "--api-token-file",
        type=Path,
        metavar="FILE",
        help="the token network clients must send (mode 0600; default: $FWCLUSTER_TOKEN)",
    )
    args = ap.parse_args(argv)
    try:
        api_addr, token = _api_options(args.api, args.api_token_file)
        metrics_addr = listen_option("--metrics", args.metrics)
        store_url = credentials.store_url(args.store_url, args.store_url_file)
        if not store_url:
            env = credentials.STORE_URL_ENV
            raise ValueError(f"a store URL is needed: --store-url-file FILE, ${env} or --store-url")
    except ValueError as e:  # CredentialError is a ValueError
        print(f"fwcluster master: {e}", file=sys.stderr)
        return 2
    eventlog.setup("master", args.id)
    try:
        config = load_config(args.config)
        credentials.check_config_secrets(config, args.config)
        store_url = with_sentinels(store_url, config.store.sentinels, config.store.service)
        master = Master(args.id, config, args.run_dir, store_url)
        master.api_addr = (api_addr.host, api_addr.port) if api_addr else None
        master.api_token = token
    except (ConfigError, SteeringError, credentials.CredentialError) as e:
        print(f"fwcluster master: {e}", file=sys.stderr)
        return 2
    server: MetricsServer | None = None
    if metrics_addr is not None:
        try:
            server = MetricsServer(metrics_addr, master.metrics.registry)
        except OSError as e:
            print(f"fwcluster master: {e.strerror or e}", file=sys.stderr)
            return 1
    try:
        asyncio.run(master.run())
    finally:
        if server is not None:
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
