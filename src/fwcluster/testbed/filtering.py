"""What decides about forwarded packets in an instance namespace: the filter mode.

- ``fwcluster``: every forwarded packet goes to NFQUEUE (iptables/ip6tables, no ``--queue-bypass``):
  while no instance reads the queue nothing passes (fail closed). The kernel's conntrack is
  switched off (NOTRACK) so that only the instance decides.
- ``kernel``: the Linux kernel's own stateful firewall with the configured rules (the baseline).
- ``direct``: plain forwarding, no filtering.

Each mode owns its tables; switching replaces the previous mode's tables completely. The
management guard (no forwarding from or to the management link) lives in a table of its own that
every mode keeps, at a priority before all of them.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from fwcluster.config import Config
from fwcluster.core.rules import RuleSet
from fwcluster.steering.netns import CommandError, nft, nft_json, run_in
from fwcluster.testbed.errors import TestbedError
from fwcluster.testbed.nftrules import KERNEL_TABLE, kernel_ruleset

GUARD_TABLE = "fwc_guard"
_GUARD_PRIORITY = -200  # after raw (-300), before every filter (0)
# Tables iptables-nft makes for the fwcluster mode.
_IPTABLES_TABLES = (("ip", "filter"), ("ip", "raw"), ("ip6", "filter"), ("ip6", "raw"))


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


def _iptables_restore_input(queue: int) -> str:
    return (
        "*raw\n"
        ":PREROUTING ACCEPT [0:0]\n"
        ":OUTPUT ACCEPT [0:0]\n"
        "-A PREROUTING -j NOTRACK\n"
        "COMMIT\n"
        "*filter\n"
        ":INPUT ACCEPT [0:0]\n"
        ":FORWARD ACCEPT [0:0]\n"
        ":OUTPUT ACCEPT [0:0]\n"
        f"-A FORWARD -j NFQUEUE --queue-num {queue}\n"
        "COMMIT\n"
    )


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
                run_in(netns, [tool], input=_iptables_restore_input(queue))
            except CommandError as e:
                raise TestbedError(str(e)) from None
        _nft(netns, _drop_tables((("inet", KERNEL_TABLE),)))
    elif mode is FilterMode.KERNEL:
        _nft(netns, _drop_tables(_IPTABLES_TABLES) + kernel_ruleset(ruleset))
    else:
        _nft(netns, _drop_tables((("inet", KERNEL_TABLE), *_IPTABLES_TABLES)))


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


def _nft(netns: str, script: str) -> None:
    try:
        nft(netns, script)
    except CommandError as e:
        raise TestbedError(str(e)) from None
