"""``fwcluster``: one entry point for the testbed, status, benchmarks and the demo.

Every user mistake (bad arguments, a broken config file, a testbed that is not up) ends in one
line on stderr naming what is wrong and a non-zero exit: 2 for bad input, 1 for a failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from fwcluster import __version__, credentials
from fwcluster.cli.errors import UserError
from fwcluster.config import ConfigError

Command = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviations: the top level's --token-file would otherwise swallow, or make
        # ambiguous, a subcommand's --to ("testbed steer --move fw1 --to fw2").
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: "fwcluster testbed up: error: ..."
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({lo}..{hi})")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    from fwcluster.cli import bench_cmd, demo_cmd, flows_cmd, policy_cmd, run_cmd, status_cmd, testbed_cmd

    ap = _Parser(prog="fwcluster", description="A stateful firewall as a cluster of VNF instances.")
    ap.add_argument("--version", action="version", version=f"fwcluster {__version__}")
    ap.add_argument(
        "--api",
        metavar="URL",
        help="talk to one master's admin API at http://ADDR:PORT (default: the local testbed's "
        "masters over their Unix sockets, leader first)",
    )
    ap.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="read the admin API token for --api from FILE (mode 0600; the testbed's is "
        "/run/fwcluster/api.token); default: $FWCLUSTER_TOKEN",
    )
    ap.add_argument("--token", metavar="T", help=argparse.SUPPRESS)  # refused in main(): see _token
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)

    tb = sub.add_parser("testbed", help="build, steer or remove the namespace testbed")
    tbs = tb.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    up = tbs.add_parser("up", help="build namespaces, start nginx and the firewall instances")
    up.add_argument("--instances", type=_positive(1, 32), default=3, help="number of instances (default 3)")
    up.add_argument("--config", metavar="FILE", help="TOML config file (default: built-in, see README)")
    up.set_defaults(func=testbed_cmd.up)
    down = tbs.add_parser("down", help="stop everything and remove all fwc-* namespaces (idempotent)")
    down.set_defaults(func=testbed_cmd.down)
    steer = tbs.add_parser("steer", help="show or move the load balancers' bucket -> instance tables")
    act = steer.add_mutually_exclusive_group()
    act.add_argument("--show", action="store_true", help="print the table of each direction (default)")
    act.add_argument("--move", metavar="ID", help="move every bucket of instance ID (spread over --to)")
    act.add_argument(
        "--bucket", type=_positive(0, 4095), metavar="N", help="move bucket N to the one --to instance"
    )
    act.add_argument(
        "--spread", action="store_true", help="spread every bucket evenly again (over --to or all)"
    )
    steer.add_argument("--to", metavar="ID[,ID...]", help="target instances, comma-separated")
    steer.add_argument(
        "--direction",
        choices=("forward", "reverse", "both"),
        default="both",
        help="which balancer(s) (default both)",
    )
    steer.add_argument("--json", action="store_true", help="print the tables as one JSON object")
    steer.set_defaults(func=testbed_cmd.steer)

    sc = sub.add_parser(
        "scale", help="change the number of active instances at run time (no connection breaks)"
    )
    sc.add_argument("instances", type=_positive(1, 32), metavar="N", help="active instances wanted")
    sc.add_argument("--json", action="store_true", help="print the moves as one JSON object")
    sc.set_defaults(func=testbed_cmd.scale)

    ins = sub.add_parser("instance", help="run one instance on this host, or drain or stop one")
    inss = ins.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    run_cmd.add_instance_run(
        inss.add_parser(
            "run",
            help="run one firewall instance (its [instance] section of the config; flags override)",
            description="Run one firewall instance: read NFQUEUE, share flows through the store.",
        )
    )
    for action, what in (
        ("drain", "move its buckets away (it stays up, carrying nothing)"),
        ("stop", "drain it, then stop and remove it"),
    ):
        p = inss.add_parser(action, help=f"{what} (through the leading master)")
        p.add_argument("id", metavar="ID", help="instance id, e.g. fw2")
        p.add_argument("--json", action="store_true", help="print the answer as one JSON object")
        p.set_defaults(func=testbed_cmd.instance)

    ms = sub.add_parser("master", help="run one master on this host")
    mss = ms.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    run_cmd.add_master_run(
        mss.add_parser(
            "run",
            help="run one master (its [master] section of the config; flags override)",
            description="Run one master: leader lease, failover, scaling, the admin API.",
        )
    )

    policy_cmd.add_parser(sub, _Parser)

    flows_cmd.add_parser(sub)

    st = sub.add_parser("status", help="instances, flows, sync settings and testbed addresses")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.set_defaults(func=status_cmd.status)

    chk = sub.add_parser("check-config", help="validate a config file and print what it means")
    chk.add_argument("file", metavar="FILE")
    chk.set_defaults(func=status_cmd.check_config)

    bench_cmd.add_parsers(
        sub.add_parser("bench", help="benchmarks (core, datapath, store, sync, failover, scale, study)"),
        _Parser,
        _positive,
    )

    demo = sub.add_parser(
        "demo",
        help="the whole story: allowed and blocked traffic, a policy change under load, then failover, "
        "scaling and a master takeover under load; a summary and a timeline plot",
    )
    demo.add_argument("--instances", type=_positive(1, 26), default=3, help="active instances (default 3)")
    demo.add_argument(
        "--out", default="out/demo", metavar="DIR", help="where the plot goes (default out/demo)"
    )
    demo.set_defaults(func=demo_cmd.demo)
    return ap


def _token(args: argparse.Namespace) -> str | None:
    """The admin API token: from --token-file or $FWCLUSTER_TOKEN, never from the command line."""
    if args.token is not None:
        raise UserError(
            "--token: a token on the command line is readable by every local user: "
            f"use --token-file FILE or ${credentials.TOKEN_ENV}"
        )
    try:
        return credentials.api_token(args.token_file) or None
    except credentials.CredentialError as e:
        raise UserError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        args.token = _token(args)
        return func(args)
    except ConfigError as e:
        print(f"fwcluster: config error: {e}", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"fwcluster: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("fwcluster: interrupted", file=sys.stderr)
        return 130
