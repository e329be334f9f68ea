"""``fwcluster flows ID``: one instance's flow table, as ``conntrack -L`` shows the kernel's.

The instance answers on its control socket (instance/flowlist.py): the testbed's instance of
that id, or on a host the socket in ``--run-dir`` (default ``/run/fwcluster``), or ``--socket``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fwcluster.cli.errors import UserError
from fwcluster.instance.control import query
from fwcluster.instance.flowlist import LIMIT_DEFAULT, LIMIT_MAX
from fwcluster.testbed import load_state
from fwcluster.testbed.state import DEFAULT_RUN_DIR


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "flows",
        help="list one instance's flow table (filter by port)",
        description="List the flows an instance tracks: endpoints, state, version (what conntrack -L is "
        "for the kernel). The testbed's instance of that id, else the socket in --run-dir.",
    )
    p.add_argument("id", metavar="ID", help="instance id, e.g. fw1")
    p.add_argument("--port", metavar="P[-Q]", help="only flows with an endpoint on port P (or in P..Q)")
    p.add_argument(
        "--limit", type=int, default=LIMIT_DEFAULT, metavar="N",
        help=f"at most N flows (1..{LIMIT_MAX}, default {LIMIT_DEFAULT})",
    )  # fmt: skip
    p.add_argument(
        "--run-dir", metavar="DIR", help=f"the instance's run_dir on a host (default {DEFAULT_RUN_DIR})"
    )
    p.add_argument("--socket", metavar="PATH", help="the instance's control socket (overrides the rest)")
    p.add_argument("--json", action="store_true", help="print the answer as one JSON object")
    p.set_defaults(func=flows)


def _ports(text: str | None) -> dict[str, int]:
    if text is None:
        return {}
    low, _, high = text.partition("-")
    try:
        ports = {"port": int(low), **({"port_to": int(high)} if high else {})}
    except ValueError:
        raise UserError(f"--port {text!r}: expected P or P-Q (port numbers)") from None
    if not all(1 <= p <= 65535 for p in ports.values()):
        raise UserError(f"--port {text!r}: ports are 1..65535")
    return ports


def _socket(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    if args.run_dir:
        return Path(args.run_dir) / f"{args.id}.sock"
    state = load_state()
    if state is not None:
        for inst in state.instances:
            if inst.id == args.id:
                return Path(inst.control_socket)
    return DEFAULT_RUN_DIR / f"{args.id}.sock"


def flows(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"cmd": "flows", "limit": args.limit, **_ports(args.port)}
    path = _socket(args)
    try:
        doc = query(path, request, timeout=5.0)
    except (OSError, ValueError) as e:
        raise UserError(f"instance {args.id}: no answer on {path} ({e})", code=1) from None
    if "error" in doc:
        raise UserError(f"instance {args.id}: {doc['error']}")
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    t = Table(
        title=f"flows of {args.id}: {doc['matched']} matched"
        + (", list truncated" if doc["truncated"] else "")
    )
    for column in ("proto", "opener", "other end", "state", "version"):
        t.add_column(column)
    for f in doc["flows"]:
        opener, other = (f["lo"], f["hi"]) if f["orig_is_lo"] else (f["hi"], f["lo"])
        t.add_row(str(f["proto"]), opener, other, f["state"], str(f["version"]))
    Console().print(t)
    return 0
