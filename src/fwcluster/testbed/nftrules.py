"""Translate the configured rule set into an nftables ruleset for the kernel's own firewall.

This is the baseline the benchmarks compare fwcluster with: the Linux kernel's stateful filter.
Packets of known connections pass (``ct state established,related``), invalid ones are dropped,
and packets that open a connection meet the configured rules in order, then the default policy,
the same first-match semantics the core applies. REJECT answers like the core does: a TCP RST
for TCP, an ICMP(v6) port unreachable for everything else.
"""

from __future__ import annotations

from fwcluster.core.rules import PROTO_TCP, Action, Network, Rule, RuleSet

KERNEL_TABLE = "fwc_filter"
_FAMILY_KEYWORD = {4: "ip", 6: "ip6"}


def _set(items: list[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _ports(ranges: tuple[tuple[int, int], ...]) -> str:
    return _set([str(a) if a == b else f"{a}-{b}" for a, b in ranges])


def _addresses(nets: list[Network]) -> str:
    return _set([str(n) for n in nets])


def _verdicts(action: Action, proto: int | None, match: str) -> list[str]:
    """The rule lines for one match; REJECT of any protocol needs a TCP line and a generic one."""
    prefix = f"{match} " if match else ""
    if action is Action.ACCEPT:
        return [prefix + "accept"]
    if action is Action.DROP:
        return [prefix + "drop"]
    if proto == PROTO_TCP:
        return [prefix + "reject with tcp reset"]
    if proto is None:
        return [f"meta l4proto {PROTO_TCP} {prefix}reject with tcp reset", prefix + "reject"]
    return [prefix + "reject"]


def rule_lines(rule: Rule) -> list[str]:
    """nft rule lines (without a chain) that match what ``rule`` matches and do what it does."""
    common: list[str] = []
    if rule.proto is not None:
        common.append(f"meta l4proto {rule.proto}")
    if rule.sport:
        common.append(f"th sport {_ports(rule.sport)}")
    if rule.dport:
        common.append(f"th dport {_ports(rule.dport)}")

    if not rule.src and not rule.dst:
        return _verdicts(rule.action, rule.proto, " ".join(common))

    lines: list[str] = []
    for version in (4, 6):
        src = [n for n in rule.src if n.version == version]
        dst = [n for n in rule.dst if n.version == version]
        # An address condition with no network of this family never matches this family.
        if (rule.src and not src) or (rule.dst and not dst):
            continue
        kw = _FAMILY_KEYWORD[version]
        parts: list[str] = []
        if src:
            parts.append(f"{kw} saddr {_addresses(src)}")
        if dst:
            parts.append(f"{kw} daddr {_addresses(dst)}")
        lines.extend(_verdicts(rule.action, rule.proto, " ".join(parts + common)))
    return lines


def kernel_ruleset(ruleset: RuleSet) -> str:
    """The nft script that (re)creates the kernel-mode filter table (one atomic transaction)."""
    body = [
        "ct state established,related accept",
        "ct state invalid drop",
    ]
    for rule in ruleset.rules:
        body.extend(rule_lines(rule))
    body.extend(_verdicts(ruleset.default, None, ""))
    policy = "accept" if ruleset.default is Action.ACCEPT else "drop"
    lines = [
        f"add table inet {KERNEL_TABLE}",
        f"delete table inet {KERNEL_TABLE}",
        f"table inet {KERNEL_TABLE} {{",
        "    chain forward {",
        f"        type filter hook forward priority filter; policy {policy};",
        *(f"        {line}" for line in body),
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"
