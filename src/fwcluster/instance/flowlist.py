"""The control socket's ``flows`` command: the instance's table as an operator reads it (what
``conntrack -L`` is for the kernel), filtered by port and bounded.

Request: ``{"cmd": "flows", "port": 80, "port_to": 90, "limit": 100}`` (all optional: every
flow, at most ``LIMIT_DEFAULT``; ``port_to`` makes ``port`` the start of a range, both ends
included; an answer goes out in one write, so it is bounded by ``LIMIT_MAX``). Answer:
``{"flows": [...], "matched": N, "truncated": bool}``, each flow
``{"proto": 6, "lo": "198.18.0.2:40000", "hi": "198.18.1.2:80", "state": "ESTABLISHED",
"version": 4, "orig_is_lo": true}`` (lo/hi: the key's two endpoints, ordered as the key orders
them; ``orig_is_lo``: the lo endpoint opened the flow). A request with a bad field gets
``{"error": ...}``, one line saying which.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from fwcluster.core.firewall import Flow
from fwcluster.core.packet import key_parts

LIMIT_DEFAULT = 100
LIMIT_MAX = 1000  # about 120 kB of JSON: what a local socket takes in one write


def _endpoint(addr: bytes, port: int) -> str:
    ip = ipaddress.ip_address(addr)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def _field(request: dict[str, Any], name: str, default: int, low: int, high: int) -> int | str:
    """An integer field within bounds, or the error line."""
    value = request.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"{name} must be an integer from {low} to {high}"
    return value


def flow_list(request: dict[str, Any], flows: Iterable[Flow]) -> dict[str, Any]:
    """Answer a ``flows`` request from the table's live flows (see the module doc)."""
    port = _field(request, "port", 0, 0, 65535)
    if isinstance(port, str):
        return {"error": port}
    port_to = _field(request, "port_to", port, port, 65535)
    limit = _field(request, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX)
    for bad in (port_to, limit):
        if isinstance(bad, str):
            return {"error": bad}
    assert isinstance(port_to, int) and isinstance(limit, int)
    out: list[dict[str, Any]] = []
    matched = 0
    for key, state, orig_is_lo, version, proto in flows:
        parts = key_parts(key)
        if parts is None or (
            port and not (port <= parts.port_lo <= port_to or port <= parts.port_hi <= port_to)
        ):
            continue
        matched += 1
        if len(out) < limit:
            out.append(
                {
                    "proto": proto,
                    "lo": _endpoint(parts.addr_lo, parts.port_lo),
                    "hi": _endpoint(parts.addr_hi, parts.port_hi),
                    "state": state.name,
                    "version": version,
                    "orig_is_lo": orig_is_lo,
                }
            )
    return {"flows": out, "matched": matched, "truncated": matched > len(out)}
