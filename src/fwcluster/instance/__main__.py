"""``python -m fwcluster.instance``: run one firewall instance (the testbed starts these)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from fwcluster.config import ConfigError, load_config
from fwcluster.instance.metrics import listen_option
from fwcluster.instance.process import Instance
from fwcluster.statetable.factory import StoreConfigError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fwcluster.instance", description="Run one firewall instance."
    )
    ap.add_argument("--id", required=True, help="instance id, e.g. fw1")
    ap.add_argument("--config", help="TOML config file (default: built-in)")
    ap.add_argument("--queue", type=int, default=0, help="NFQUEUE number to read (default 0)")
    ap.add_argument(
        "--run-dir", type=Path, default=Path("/run/fwcluster"), help="where the control socket goes"
    )
    ap.add_argument(
        "--store-url", default="", help="redis:// URL of the shared store (overrides [store] url)"
    )
    ap.add_argument(
        "--metrics",
        metavar="ADDR:PORT",
        help="serve Prometheus /metrics on ADDR:PORT ([ADDR6]:PORT for IPv6; default: off)",
    )
    args = ap.parse_args(argv)
    try:
        metrics_addr = listen_option("--metrics", args.metrics)
    except ValueError as e:
        print(f"fwcluster instance: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"fwcluster instance: {e}", file=sys.stderr)
        return 2
    try:
        instance = Instance(args.id, config, args.queue, args.run_dir, args.store_url, metrics_addr)
        asyncio.run(instance.run())
    except (OSError, StoreConfigError) as e:
        print(f"fwcluster instance: cannot start {args.id}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
