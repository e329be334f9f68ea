"""The cluster-wide policy: the ``[policy] default`` and the ``[[rules]]`` of the config, given on
their own in a policy file (``fwcluster policy apply FILE``), versioned and kept in the store.

A policy file has the config's syntax for those two sections and nothing else; it is checked by
the config's own code (``config.parse_policy_tables``) and must name its default (an empty file by
mistake would otherwise drop every new connection). What the store keeps is the canonical form of
a policy (:meth:`Policy.render`: the same TOML, normalized: addresses as networks, ports as
numbers and ranges), so two files that mean the same policy are the same record and a new version
is made only when something changed.

The record: the hash ``fwc:policy`` with ``version`` (1, 2, ...: the leading master adds one on
each change, atomically: control/policy_store.py) and ``body`` (the canonical text). Version 0
stands for "no policy stored": each instance then uses its config's rules. An instance reads the
record as bad input (:func:`decode_record`): a bad one is refused whole, counted and logged, and
the instance keeps what it applied (instance/policy_watch.py).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fwcluster.config import ConfigError, parse_policy_tables, parse_toml
from fwcluster.core.rules import PROTO_BY_NAME, Action, Rule, RuleSet

POLICY_KEY = b"fwc:policy"
VERSION_FIELD = b"version"
BODY_FIELD = b"body"
MAX_POLICY_BYTES = 32 * 1024  # a policy text, in a file or the store (the admin API takes 64 KiB)
MAX_RULES = 4096  # rules are matched one after the other: beyond this, use fewer, wider rules
MAX_VERSION = 10**15 - 1
NO_POLICY = 0  # the version of "no policy stored: the config's rules"
_PROTO_NAME = {v: k for k, v in PROTO_BY_NAME.items()}


class PolicyError(ValueError):
    """A policy file or record that is not a valid policy; the message is one line."""


@dataclass(frozen=True, slots=True)
class Policy:
    ruleset: RuleSet
    comments: tuple[str, ...] = ()  # one per rule ("" for none): kept, shown, never matched

    def lines(self) -> list[str]:
        """One line per rule, in order, as ``show`` and ``diff`` print them."""
        return [rule_line(r, c) for r, c in zip(self.ruleset.rules, self._comments(), strict=True)]

    def render(self) -> str:
        """The canonical TOML text of this policy (what the store keeps)."""
        out = ["[policy]", f'default = "{_action(self.ruleset.default)}"']
        for rule, comment in zip(self.ruleset.rules, self._comments(), strict=True):
            out += ["", "[[rules]]", f'action = "{_action(rule.action)}"']
            if rule.proto is not None:
                out.append(f'proto = "{_PROTO_NAME[rule.proto]}"')
            for name, items in _matches(rule, _quote, _port_value):
                out.append(f"{name} = [{', '.join(items)}]")
            if comment:
                out.append(f"comment = {_quote(comment)}")
        return "\n".join(out) + "\n"

    def _comments(self) -> tuple[str, ...]:
        n = len(self.ruleset.rules)
        return (self.comments + ("",) * n)[:n]


def _action(a: Action) -> str:
    return a.name.lower()


def _port_value(first: int, last: int) -> str:
    """A port or range as a TOML value: a range is a string."""
    text = _port_range(first, last)
    return text if first == last else f'"{text}"'


def _port_range(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _matches(
    rule: Rule, net: Callable[[str], str], port: Callable[[int, int], str]
) -> Iterator[tuple[str, list[str]]]:
    """The address and port matches a rule has, each as (field, its items written by ``net`` and
    ``port``), in the order the config lists them: one walk for both renderings."""
    for name, nets in (("src", rule.src), ("dst", rule.dst)):
        if nets:
            yield name, [net(str(n)) for n in nets]
    for name, ports in (("sport", rule.sport), ("dport", rule.dport)):
        if ports:
            yield name, [port(a, b) for a, b in ports]


def rule_line(rule: Rule, comment: str = "") -> str:
    """``accept tcp dst=198.18.0.0/15 dport=80`` (and ``# comment``)."""
    parts = [_action(rule.action), _PROTO_NAME[rule.proto]]
    for label, items in _matches(rule, str, _port_range):
        parts.append(f"{label}={','.join(items)}")
    if comment:
        parts.append(f"# {_printable(comment)}")
    return " ".join(parts)


def _quote(text: str) -> str:
    """A TOML basic string."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def parse_policy(text: str, source: str) -> Policy:
    """Check a policy text whole; a PolicyError (one line, naming ``source``) for anything wrong."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise PolicyError(f"{source}: over {MAX_POLICY_BYTES} bytes")
    try:
        data = parse_toml(text, source)
        policy = data.get("policy")
        if "policy" not in data or (isinstance(policy, dict) and "default" not in policy):
            raise PolicyError(
                f"{source}: policy.default: missing (a policy file must say its default: "
                f"{' | '.join(_action(a) for a in Action)})"
            )
        ruleset = parse_policy_tables(data, source)
    except ConfigError as e:
        raise PolicyError(str(e)) from None
    if len(ruleset.rules) > MAX_RULES:
        raise PolicyError(f"{source}: {len(ruleset.rules)} rules (at most {MAX_RULES})")
    raw = data.get("rules", [])
    comments = tuple(str(r.get("comment", "")) for r in raw)
    return Policy(ruleset, comments)


def load_policy(path: str | Path) -> Policy:
    """Read and check a policy file."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise PolicyError(f"{p}: no such policy file") from None
    except OSError as e:
        raise PolicyError(f"{p}: cannot read policy file: {e.strerror}") from None
    if len(text) > MAX_POLICY_BYTES:
        raise PolicyError(f"{p}: over {MAX_POLICY_BYTES} bytes")
    try:
        return parse_policy(text.decode("utf-8"), str(p))
    except UnicodeDecodeError as e:
        raise PolicyError(f"{p}: not valid TOML: not UTF-8 ({e.reason})") from None


def decode_record(version: object, body: object) -> tuple[int, Policy]:
    """The version and policy of a record read from the store; PolicyError when it is not one
    (the reader refuses it whole and keeps what it has)."""
    if not isinstance(version, bytes) or not version.isdigit() or len(version) > 15:
        raise PolicyError(f"version {_show(version)} is not a number")
    number = int(version)
    if not 1 <= number <= MAX_VERSION:
        raise PolicyError(f"version {number} is out of range (1..{MAX_VERSION})")
    if not isinstance(body, bytes):
        raise PolicyError(f"version {number}: no body")
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyError(f"version {number}: body over {MAX_POLICY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"version {number}: body is not UTF-8") from None
    return number, parse_policy(text, f"version {number}")


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return repr(value[:40].decode("ascii", "replace"))
    return "(none)" if value is None else type(value).__name__


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    removed: tuple[str, ...]  # rule lines ("[i] ...", old positions)
    added: tuple[str, ...]  # rule lines ("[j] ...", new positions)
    default: tuple[str, str] | None  # (old, new) when the default changes

    @property
    def changed(self) -> bool:
        return bool(self.removed or self.added or self.default)

    def lines(self) -> list[str]:
        out = [f"- {line}" for line in self.removed] + [f"+ {line}" for line in self.added]
        if self.default is not None:
            out.append(f"default: {self.default[0]} -> {self.default[1]}")
        return out


def diff(old: Policy, new: Policy) -> PolicyDiff:
    """What changes from ``old`` to ``new``: rule lines removed and added (order counts: the first
    match wins, so a moved rule is removed and added), and the default."""
    a, b = old.lines(), new.lines()
    removed: list[str] = []
    added: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op in ("replace", "delete"):
            removed += [f"[{i}] {a[i]}" for i in range(i1, i2)]
        if op in ("replace", "insert"):
            added += [f"[{j}] {b[j]}" for j in range(j1, j2)]
    d_old, d_new = _action(old.ruleset.default), _action(new.ruleset.default)
    return PolicyDiff(tuple(removed), tuple(added), (d_old, d_new) if d_old != d_new else None)


DENY_ALL = Policy(RuleSet(rules=(), default=Action.DROP))  # an instance that cannot know its policy
