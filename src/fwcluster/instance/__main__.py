"""``python -m fwcluster.instance``: run one firewall instance (the testbed starts these).

The store URL comes from ``--store-url-file`` (mode 0600), ``$FWCLUSTER_STORE_URL``, ``--store-url``
(without a password) or the config's ``[store] url``, in that order of precedence.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from fwcluster import credentials, eventlog
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
        "--store-url",
        metavar="URL",
        help="redis:// URL of the shared store (overrides [store] url); one with a password is refused "
        "here (the command line is public): use --store-url-file or $FWCLUSTER_STORE_URL",
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
    args = ap.parse_args(argv)
    try:
        metrics_addr = listen_option("--metrics", args.metrics)
        store_url = credentials.store_url(args.store_url, args.store_url_file)
        config = load_config(args.config)
        credentials.check_config_secrets(config, args.config)
    except (ValueError, ConfigError) as e:  # CredentialError is a ValueError
        print(f"fwcluster instance: {e}", file=sys.stderr)
        return 2
    eventlog.setup("instance", args.id)
    try:
        instance = Instance(args.id, config, args.queue, args.run_dir, store_url, metrics_addr)
        asyncio.run(instance.run())
    except (OSError, StoreConfigError) as e:
        print(f"fwcluster instance: cannot start {args.id}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
