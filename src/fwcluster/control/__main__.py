"""``python -m fwcluster.control``: run one master (the testbed starts these in fwc-mgmt)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from fwcluster.config import ConfigError, load_config
from fwcluster.control.master import Master
from fwcluster.instance.metrics import ListenAddr, MetricsServer, listen_option
from fwcluster.steering.base import SteeringError


def _api_options(api: str | None, token_file: Path | None) -> tuple[ListenAddr | None, str | None]:
    """The admin API's network address and token; ValueError with a one-line message when wrong."""
    addr = listen_option("--api", api)
    if addr is None:
        return None, None
    if token_file is None:
        raise ValueError("--api needs --api-token-file (no network API without a token)")
    try:
        token = token_file.read_text().strip()
    except OSError as e:
        raise ValueError(f"--api-token-file: {e.strerror or e}") from None
    if len(token) < 16:
        raise ValueError("--api-token-file: the token must be at least 16 characters")
    return addr, token


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fwcluster.control", description="Run one master.")
    ap.add_argument("--id", required=True, help="master id, e.g. m1")
    ap.add_argument("--config", help="TOML config file (default: built-in)")
    ap.add_argument("--run-dir", type=Path, default=Path("/run/fwcluster"), help="the testbed's run dir")
    ap.add_argument("--store-url", required=True, help="redis:// URL of the store (lease, heartbeats)")
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
    ap.add_argument("--api-token-file", type=Path, metavar="FILE", help="the token network clients must send")
    args = ap.parse_args(argv)
    try:
        api_addr, token = _api_options(args.api, args.api_token_file)
        metrics_addr = listen_option("--metrics", args.metrics)
    except ValueError as e:
        print(f"fwcluster master: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(args.config)
        master = Master(args.id, config, args.run_dir, args.store_url)
        master.api_addr = (api_addr.host, api_addr.port) if api_addr else None
        master.api_token = token
    except (ConfigError, SteeringError) as e:
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
