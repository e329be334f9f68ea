"""Helpers for the namespace tests: fetch URLs from inside a namespace, read nft sets."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from fwcluster.testbed import TestbedState, netns_exec

CURL_TIMEOUT = 2.0  # seconds; a blocked connection fails after this long

# The ``testbed`` fixture: builds a testbed with up()'s arguments.
Builder = Callable[..., TestbedState]


@dataclass
class Curl:
    returncode: int
    body: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def curl(netns: str, url: str, timeout: float = CURL_TIMEOUT) -> Curl:
    """Fetch ``url`` from inside ``netns``; curl's exit status (28: timed out, 7: refused) and body."""
    argv = ["ip", "netns", "exec", netns, "curl", "-s", "-g", "-m", f"{timeout:g}", "-o", "-", url]
    p = subprocess.run(argv, capture_output=True, timeout=timeout + 5, check=False)
    return Curl(p.returncode, p.stdout)


def url(state: TestbedState, family: int, path: str = "/index.html", port: int | None = None) -> str:
    host = state.server_addr if family == 4 else f"[{state.server_addr6}]"
    return f"http://{host}:{port or state.http_port}{path}"


def nft_set(netns: str, table: str, name: str) -> set[int]:
    """The elements of an nft set (of integers) in ``netns``."""
    out = netns_exec(netns, ["nft", "-j", "list", "set", "inet", table, name], check=True).stdout
    for item in json.loads(out)["nftables"]:
        if "set" in item:
            return {int(e) for e in item["set"].get("elem", [])}
    raise AssertionError(f"no set {name} in {netns}")
