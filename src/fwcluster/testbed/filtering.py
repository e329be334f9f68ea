"""What decides about forwarded packets in an instance namespace: the filter mode.

- ``fwcluster``: every forwarded packet goes to NFQUEUE (iptables/ip6tables, no ``--queue-bypass``):
  while no instance reads the queue nothing passes (fail closed), except the packets of flows
  the instance put on the fast path (below). The rules are deploy/fwcluster.rules, the file a
  firewall host loads too (iptables-restore input: this kernel has no nft ``queue`` statement).
The fast path (the engine's ``FAST_PATH_MARK``): the instance accepts a packet of an ESTABLISHED
(UDP/ICMP: REPLIED) flow with packet mark 1; mangle POSTROUTING saves it into the packet's
conntrack entry; in FORWARD, a packet whose conntrack entry carries the mark is accepted by the
kernel unless it is a TCP segment with SYN, FIN or RST, which clears the mark and goes to the
queue like every unmarked packet. No fast-path rule looks at ``ct state``: the kernel's conntrack carries
the mark and never decides. A packet it calls invalid (out of its window) has no entry, so no
mark, and goes to the engine, which judges it; ``nf_conntrack_tcp_loose=1`` lets it pick up a
flow mid-stream (after a failover, or with ECMP steering where it sees one direction only) so
that the engine can mark that flow again.
Kernel tracking (the engine's ``KERNEL_MARK``, level ``none`` only): the instance accepts the
first packet of a new flow with packet mark 2 after the rules; saved in conntrack the same way,
it makes FORWARD accept every packet conntrack calls established or related, so the handshake,
the data and the close are tracked (window included) by the kernel; what conntrack calls new or
invalid goes to the queue.
- ``kernel``: the Linux kernel's own stateful firewall with the configured rules (the baseline).
- ``direct``: plain forwarding, no filtering.

Each mode owns its tables; switching replaces the previous mode's tables completely. The
management guard (no forwarding from or to the management link) lives in a table of its own that
every mode keeps, at a priority before all of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import Any

from fwcluster.config import Config
from fwcluster.core.rules import RuleSet
from fwcluster.steering.netns import CommandError, nft, nft_json, run_in
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.nftrules import KERNEL_TABLE, kernel_ruleset
from fwcluster.testbed.state import InstanceState

_PARALLEL = 16  # namespaces programmed at once (each step is a few short tool runs)
GUARD_TABLE = "fwc_guard"
_GUARD_PRIORITY = -200  # after raw (-300), before every filter (0)
# Tables iptables-nft makes for the fwcluster mode.
_IPTABLES_TABLES = (
    ("ip", "filter"), ("ip", "raw"), ("ip", "mangle"), ("ip6", "filter"), ("ip6", "raw"), ("ip6", "mangle"),
)  # fmt: skip


class FilterMode(StrEnum):
    FWCLUSTER = "fwcluster"
    KERNEL = "kernel"
    DIRECT = "direct"


def parse_mode(mode: FilterMode | str) -> FilterMode:
    """``mode`` as a FilterMode; TestbedError naming the allowed ones otherwise."""
    try:
        return FilterMode(mode)
    except ValueError:
        allowed = " | ".join(m.value for m in FilterMode)
        raise TestbedError(f"unknown filter mode {mode!r} (allowed: {allowed})") from None


def _drop_tables(tables: tuple[tuple[str, str], ...]) -> str:
    """nft lines that delete tables whether they exist or not (``add`` first makes delete safe)."""
    return "".join(f"add table {fam} {name}\ndelete table {fam} {name}\n" for fam, name in tables)


# The kernel's conntrack in an instance namespace carries marks; what it doubts comes up (see the doc).
FWCLUSTER_SYSCTLS = (
    ("net.netfilter.nf_conntrack_tcp_be_liberal", "0"),
    ("net.netfilter.nf_conntrack_tcp_loose", "1"),
)
KERNEL_SYSCTLS = (
    ("net.netfilter.nf_conntrack_tcp_be_liberal", "0"),
    ("net.netfilter.nf_conntrack_tcp_loose", "1"),
)


RULES_FILE = Path(__file__).with_name("fwcluster.rules")  # -> deploy/fwcluster.rules
_QUEUE_RULE = "-A FORWARD -j NFQUEUE --queue-num 0\n"


def fwcluster_rules(queue: int) -> str:
    """The fail-closed filter of an instance namespace, with the fast path: deploy/fwcluster.rules
    (iptables-restore input, the same for IPv4 and IPv6; a host loads it as it is) with its one
    queue rule reading ``queue``. One source of truth for the testbed and the hosts."""
    text = RULES_FILE.read_text()
    if text.count(_QUEUE_RULE) != 1:
        raise TestbedError(f"{RULES_FILE}: expected exactly one line {_QUEUE_RULE.strip()!r}")
    return text.replace(_QUEUE_RULE, f"-A FORWARD -j NFQUEUE --queue-num {queue}\n")


def install_guard(netns: str, mgmt_if: str) -> None:
    """Keep the management network apart from the data plane (kept across mode switches): drop
    everything forwarded from or to the management interface, and every TCP or UDP packet that
    arrives on a data interface for the namespace itself (the instance's metrics endpoint and
    anything else it serves listen for the management network only; ICMP stays, for neighbour
    discovery and errors)."""
    script = (
        f"add table inet {GUARD_TABLE}\n"
        f"delete table inet {GUARD_TABLE}\n"
        f"table inet {GUARD_TABLE} {{\n"
        "    chain forward {\n"
        f"        type filter hook forward priority {_GUARD_PRIORITY}; policy accept;\n"
        f'        iifname "{mgmt_if}" drop\n'
        f'        oifname "{mgmt_if}" drop\n'
        "    }\n"
        "    chain input {\n"
        f"        type filter hook input priority {_GUARD_PRIORITY}; policy accept;\n"
        f'        iifname {{ "lo", "{mgmt_if}" }} accept\n'
        "        meta l4proto { tcp, udp } drop\n"
        "    }\n"
        "}\n"
    )
    _nft(netns, script)


def set_filter_mode(netns: str, mode: FilterMode | str, rules: Config | RuleSet, queue: int = 0) -> None:
    """Put ``netns`` into ``mode``, replacing whatever mode it was in.

    ``rules`` (a Config or its ``.ruleset``) is what the kernel mode enforces; ``queue`` is the
    NFQUEUE number of the fwcluster mode.
    """
    ruleset = rules.ruleset if isinstance(rules, Config) else rules
    mode = parse_mode(mode)
    if mode is FilterMode.FWCLUSTER:
        # Queue first, then drop the kernel table: in between both filter, never neither.
        for tool in ("iptables-restore", "ip6tables-restore"):
            try:
                run_in(netns, [tool], input=fwcluster_rules(queue))
            except CommandError as e:
                raise TestbedError(str(e)) from None
        _sysctls(netns, FWCLUSTER_SYSCTLS)
        _nft(netns, _drop_tables((("inet", KERNEL_TABLE),)))
    elif mode is FilterMode.KERNEL:
        _nft(netns, _drop_tables(_IPTABLES_TABLES) + kernel_ruleset(ruleset))
        _sysctls(netns, KERNEL_SYSCTLS)  # the kernel's own firewall at its defaults
    else:
        _nft(netns, _drop_tables((("inet", KERNEL_TABLE), *_IPTABLES_TABLES)))


def each_instance(records: Iterable[InstanceState], step: Callable[[InstanceState], None]) -> None:
    """Run ``step`` for every instance namespace, several at a time; the first error propagates."""
    with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
        for future in [pool.submit(step, rec) for rec in records]:
            future.result()


def switch_modes(records: Sequence[InstanceState], mode: FilterMode | str, rules: Config | RuleSet) -> None:
    """Put every given instance namespace into ``mode`` and record it in its record."""

    def step(rec: InstanceState) -> None:
        set_filter_mode(rec.netns, mode, rules, rec.queue)
        rec.mode = parse_mode(mode).value

    each_instance(records, step)


def current_mode(netns: str) -> FilterMode:
    """The mode ``netns`` is in, read from its kernel."""
    try:
        doc: dict[str, Any] = json.loads(nft_json(netns, ["list", "tables"]))
    except CommandError as e:
        raise TestbedError(str(e)) from None
    tables = {(t["table"]["family"], t["table"]["name"]) for t in doc.get("nftables", []) if "table" in t}
    if ("inet", KERNEL_TABLE) in tables:
        return FilterMode.KERNEL
    if ("ip", "filter") in tables or ("ip6", "filter") in tables:
        return FilterMode.FWCLUSTER
    return FilterMode.DIRECT


def _sysctls(netns: str, values: tuple[tuple[str, str], ...]) -> None:
    try:
        run_in(netns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values)])
    except CommandError as e:
        raise TestbedError(str(e)) from None


def _nft(netns: str, script: str) -> None:
    try:
        nft(netns, script)
    except CommandError as e:
        raise TestbedError(str(e)) from None
