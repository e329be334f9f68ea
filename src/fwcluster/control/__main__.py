"""``python -m fwcluster.control``: run one master (the testbed starts these in fwc-mgmt)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from fwcluster.config import ConfigError, load_config
from fwcluster.control.master import Master
from fwcluster.steering.base import SteeringError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fwcluster.control", description="Run one master.")
    ap.add_argument("--id", required=True, help="master id, e.g. m1")
    ap.add_argument("--config", help="TOML config file (default: built-in)")
    ap.add_argument("--run-dir", type=Path, default=Path("/run/fwcluster"), help="the testbed's run dir")
    ap.add_argument("--store-url", required=True, help="redis:// URL of the store (lease, heartbeats)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(args.config)
        master = Master(args.id, config, args.run_dir, args.store_url)
    except (ConfigError, SteeringError) as e:
        print(f"fwcluster master: {e}", file=sys.stderr)
        return 2
    asyncio.run(master.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
