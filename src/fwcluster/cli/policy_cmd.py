"""``fwcluster policy show | diff FILE | apply FILE [--wait]``: the cluster policy
(fwcluster/policy.py), through the leading master's admin API (control/api.py).

The file is checked here first, by the same code the master runs again before it stores
anything, so a bad file is one line (exit 2) even when no master answers. ``apply --wait``
returns only once every instance that is not failed reports, in its heartbeat registration as
the leader read it, the stored version or a later one (exit 1 with the laggards named when
``--timeout`` passes first): a change script can then rely on the new rules being in force."""

from __future__ import annotations

import argparse
import json
import time
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
    if args.wait:
        version = doc.get("version")
        if not isinstance(version, int):
            raise UserError(f"the master answered no policy version: {doc!r}", code=1)
        waited, applied = _wait_applied(args, version)
        doc["applied"] = {"instances": applied, "seconds": round(waited, 3)}
        head += f"\napplied by every instance ({', '.join(applied) or 'none running'}) after {waited:.1f} s"
    return _print(args, doc, [head, *doc.get("lines", [])])


WAIT_POLL = 0.2  # seconds between two reads of the leader's status while waiting


def lagging(status: dict[str, Any], version: int) -> tuple[list[str], list[str]]:
    """(instances at ``version`` or later, instances behind it) of a leader's ``/v1/status``.
    Failed instances count in neither: they run no rules. An instance whose version is not
    known (it fails closed with none, or its beat has not been read) lags."""
    done: list[str] = []
    behind: list[str] = []
    for row in status.get("instances", []):
        if not isinstance(row, dict) or row.get("role") == "failed":
            continue
        v = row.get("policy_version")
        (done if isinstance(v, int) and v >= version else behind).append(str(row.get("id")))
    return done, behind


def _wait_applied(args: argparse.Namespace, version: int) -> tuple[float, list[str]]:
    """Poll the leader's status until no instance lags; (seconds waited, the instances)."""
    t0 = time.monotonic()
    while True:
        status = call("GET", "/v1/status", api=args.api, token=args.token)
        done, behind = lagging(status, version)
        waited = time.monotonic() - t0
        if not behind:
            return waited, done
        if waited >= args.timeout:
            raise UserError(
                f"policy version {version} is stored, but after {waited:.1f} s these instances "
                f"do not report it yet: {', '.join(behind)}",
                code=1,
            )
        time.sleep(WAIT_POLL)


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
        if name == "apply":
            p.add_argument(
                "--wait",
                action="store_true",
                help="return once every instance that is not failed reports this version (else exit 1)",
            )
            p.add_argument(
                "--timeout",
                type=_seconds,
                default=10.0,
                metavar="S",
                help="how long --wait waits, in seconds (default 10)",
            )
        p.set_defaults(func=func)


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < v <= 3600:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 3600 seconds: {text!r}")
    return v
