"""``fwcluster policy show | diff FILE | apply FILE``: the cluster policy (fwcluster/policy.py),
through the leading master's admin API (control/api.py).

The file is checked here first, by the same code the master runs again before it stores
anything, so a bad file is one line (exit 2) even when no master answers."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fwcluster.cli.api_client import call
from fwcluster.cli.errors import UserError
from fwcluster.policy import PolicyError, load_policy


def _text(path: str) -> str:
    try:
        return load_policy(path).render()
    except PolicyError as e:
        raise UserError(f"policy error: {e}") from None


def _print(args: argparse.Namespace, doc: dict[str, Any], lines: list[str]) -> int:
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(lines))
    return 0


def show(args: argparse.Namespace) -> int:
    doc = call("GET", "/v1/policy", api=args.api, token=args.token)
    version = doc.get("version")
    if doc.get("stored"):
        head = f"policy version {version}"
    else:
        head = "policy version 0: none stored; each instance uses its config's rules (the leading master's:)"
    rules = [f"[{i}] {line}" for i, line in enumerate(doc.get("rules", []))]
    return _print(args, doc, [head, f"default: {doc.get('default')}", *rules])


def diff(args: argparse.Namespace) -> int:
    text = _text(args.file)
    doc = call("POST", "/v1/policy/diff", {"policy": text}, api=args.api, token=args.token)
    lines = list(doc.get("lines", []))
    head = f"{args.file} against policy version {doc.get('version')}: " + (
        "changes" if doc.get("changed") else "no change"
    )
    return _print(args, doc, [head, *lines])


def apply(args: argparse.Namespace) -> int:
    text = _text(args.file)
    doc = call("POST", "/v1/policy", {"policy": text}, api=args.api, token=args.token)
    if doc.get("changed"):
        head = (
            f"policy version {doc.get('version')} stored (was {doc.get('previous')}); "
            "every instance applies it within 1 s (fwcluster status shows each one's version)"
        )
    else:
        head = f"policy unchanged: version {doc.get('version')} holds it already"
    return _print(args, doc, [head, *doc.get("lines", [])])


def add_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    pol = sub.add_parser(
        "policy", help="show, diff or apply the cluster-wide policy (rules and default) at run time"
    )
    acts = pol.add_subparsers(dest="action", metavar="ACTION", parser_class=parser_class, required=True)
    sh = acts.add_parser("show", help="the stored policy: its version, default and rules")
    sh.add_argument("--json", action="store_true", help="print one JSON object")
    sh.set_defaults(func=show)
    for name, func, what in (
        ("diff", diff, "what applying FILE would change (rules added/removed, default); changes nothing"),
        ("apply", apply, "check FILE whole and store it as the next version; every instance applies it"),
    ):
        p = acts.add_parser(name, help=what)
        p.add_argument("file", metavar="FILE", help="a TOML file with [policy] default and [[rules]] only")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(func=func)
