"""``fwcluster testbed up|down|steer``."""

from __future__ import annotations

import argparse

from rich.console import Console

from fwcluster.cli.errors import UserError
from fwcluster.cli.status_cmd import require_root


def up(args: argparse.Namespace) -> int:
    from fwcluster.config import load_config
    from fwcluster.testbed import up as testbed_up
    from fwcluster.testbed.errors import TestbedError

    load_config(args.config)  # a broken file stops us before anything is built
    require_root("testbed up")
    try:
        state = testbed_up(args.instances, args.config)
    except TestbedError as e:
        raise UserError(str(e), code=1) from None
    Console().print(
        f"testbed up: {len(state.instances)} instance(s) "
        f"({', '.join(i.id for i in state.instances)}), "
        f"server http://{state.server_addr}/ and http://[{state.server_addr6}]/ "
        f"reachable from netns {state.client_netns}"
    )
    return 0


def down(args: argparse.Namespace) -> int:
    from fwcluster.testbed import down as testbed_down

    require_root("testbed down")
    testbed_down()
    Console().print("testbed down")
    return 0


def _ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def steer(args: argparse.Namespace) -> int:
    """``fwcluster testbed steer``: show or move the balancers' bucket -> instance tables by hand."""
    import json

    from fwcluster.testbed import (
        require_state,
        steer_buckets,
        steer_move,
        steer_spread,
        steer_table,
    )
    from fwcluster.testbed.errors import TestbedError

    require_root("testbed steer")
    try:
        state = require_state()
    except TestbedError as e:
        raise UserError(str(e), code=1) from None
    known = [i.id for i in state.instances]
    targets = _ids(args.to) if args.to is not None else None
    if (args.move is not None or args.bucket is not None) and targets is None:
        raise UserError("--move and --bucket need --to INSTANCE[,INSTANCE...]")
    if targets is not None and args.move is None and args.bucket is None and not args.spread:
        raise UserError("--to goes with --move, --bucket or --spread")
    if targets is not None and not targets:
        raise UserError("the target list (--to) is empty")
    for i in [*(targets or []), *([args.move] if args.move is not None else [])]:
        if i not in known:
            raise UserError(f"unknown instance {i!r} (known: {', '.join(known)})")
    if args.bucket is not None and not 0 <= args.bucket < state.buckets:
        raise UserError(f"bucket {args.bucket} is out of range 0..{state.buckets - 1}")
    if args.bucket is not None and targets is not None and len(targets) != 1:
        raise UserError("--bucket moves one bucket: give exactly one instance with --to")
    if args.move is not None and targets is not None and args.move in targets:
        raise UserError(f"cannot move the buckets of {args.move} to {args.move} itself")

    try:
        if args.move is not None:
            assert targets is not None
            moved = steer_move(args.move, targets, args.direction)
            done = "; ".join(f"{d}: {len(m)} bucket(s)" for d, m in moved.items())
            print(f"moved the buckets of {args.move} to {','.join(targets)} ({done})")
        elif args.bucket is not None:
            assert targets is not None
            steer_buckets({args.bucket: targets[0]}, args.direction)
            print(f"bucket {args.bucket} -> {targets[0]} ({args.direction})")
        elif args.spread:
            mapping = steer_spread(targets, args.direction)
            print(f"spread {len(mapping)} buckets over {','.join(targets or known)} ({args.direction})")
        tables = steer_table()
    except TestbedError as e:
        raise UserError(str(e), code=1) from None
    if args.json:
        print(json.dumps({d: {str(b): i for b, i in t.items()} for d, t in tables.items()}, sort_keys=True))
    elif args.show or (args.move is None and args.bucket is None and not args.spread):
        _print_tables(tables, known, state.buckets, state.steering_kind)
    return 0


def _print_tables(tables: dict[str, dict[int, str]], known: list[str], buckets: int, kind: str) -> None:
    # Plain print: one line per instance however long (rich would wrap at the terminal width).
    print(f"steering: {kind}, {buckets} buckets")
    for direction, table in tables.items():
        print(f"{direction}:")
        for inst in known:
            mine = [b for b, i in sorted(table.items()) if i == inst]
            print(f"  {inst:>5} ({len(mine):>3}): {' '.join(map(str, mine)) or '-'}")
        free = [b for b in range(buckets) if b not in table]
        if free:
            print(f"  {'none':>5} ({len(free):>3}): {' '.join(map(str, free))}")


def scale(args: argparse.Namespace) -> int:
    """``fwcluster scale N``: new instances join, then take a fair share of buckets; leaving ones
    hand theirs over first. With masters, the leading master does it (admin API); without, the CLI
    scales the testbed itself."""
    import json
    import time

    from fwcluster.cli.api_client import call
    from fwcluster.testbed import TestbedError
    from fwcluster.testbed import scale as testbed_scale
    from fwcluster.testbed.state import load_state

    t0 = time.monotonic()
    state = None if args.api else load_state()
    if args.api or (state is not None and state.masters):
        doc = call("POST", "/v1/scale", {"active": args.instances}, api=args.api, token=args.token)
        active, moved = list(doc.get("active", [])), dict(doc.get("moved", {}))
        extra = {k: v for k, v in doc.items() if k not in ("active", "moved")}  # added, promoted, times
    else:
        require_root("scale")
        try:
            state, moves = testbed_scale(args.instances)
        except TestbedError as e:
            raise UserError(str(e), code=1) from None
        active = [i.id for i in state.instances if i.role == "active"]
        moved = {d: {str(b): i for b, i in m.items()} for d, m in moves.items()}
        extra = {}
    took = time.monotonic() - t0
    out = {"active": active, "seconds": round(took, 3), "moved": moved, **extra}
    if args.json:
        print(json.dumps(out))
        return 0
    n = {d: len(m) for d, m in moved.items()}
    names = ", ".join(active)
    Console().print(f"scaled to {len(active)} active ({names}) in {took:.2f} s; buckets moved: {n}")
    return 0


def instance(args: argparse.Namespace) -> int:
    """``fwcluster instance drain|stop ID``, carried out by the leading master."""
    import json

    from fwcluster.cli.api_client import call

    doc = call("POST", f"/v1/instances/{args.id}/{args.action}", {}, api=args.api, token=args.token)
    if args.json:
        print(json.dumps(doc))
        return 0
    n = {d: len(m) for d, m in dict(doc.get("moved", {})).items()}
    done = "drained (up, carrying nothing)" if args.action == "drain" else "stopped and removed"
    Console().print(f"{args.id} {done}; buckets moved: {n}")
    return 0
