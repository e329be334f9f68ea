"""Asymmetric paths without retransmissions: with ECMP steering the two directions of a flow cross
different instances; at full / clean / sync the store always knows a state at least as new as the
one a packet answers, so no packet of a legitimate download may be dropped for want of state.
Idle, and with another process keeping one core busy for the whole run."""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from netns_helpers import WEB_RULES, Builder, tcp_counter

from fwcluster.bench.datapath import loadgen
from fwcluster.instance.control import query
from fwcluster.testbed import TestbedState, down

pytestmark = pytest.mark.netns

DOWNLOADS = 200


def config(tmp_path: Path, kind: str) -> Path:
    cfg = tmp_path / f"{kind}.toml"
    cfg.write_text(
        f'[sync]\nlevel = "full"\naccess = "clean"\nconfirm = "sync"\n[steering]\nkind = "{kind}"\n'
        # What is tested is state, not the store's speed: on a machine whose two cores are both
        # busy, a write's confirmation can take longer than the default 50 ms (a drop that says
        # store_failed, not no_flow), so a held packet may wait up to a second here.
        + "[store]\ntimeout_ms = 1000\n"
        + WEB_RULES
    )
    return cfg


def totals(state: TestbedState) -> dict[str, int]:
    out = {"drop": 0, "invalid": 0, "no_flow": 0, "lookup_misses": 0, "errors": 0}
    for inst in state.instances:
        s = query(inst.control_socket, {"cmd": "stats"})
        out["drop"] += int(s["verdicts"]["drop"])
        out["invalid"] += int(s["invalid"])
        out["no_flow"] += int(s["reasons"].get("no_flow", 0))
        out["errors"] += int(s["errors"])
        out["lookup_misses"] += int((s["store"] or {}).get("lookup_misses", 0))
        for reason, n in s["reasons"].items():  # every drop reason, for the assertion's message
            if not reason.startswith(("tracked", "rule_accept")) and n:
                out[f"reason_{reason}"] = out.get(f"reason_{reason}", 0) + int(n)
    return out


def retransmissions(state: TestbedState) -> int:
    """TCP segments the client and the server sent again."""
    return tcp_counter(state.client_netns, "RetransSegs") + tcp_counter(state.server_netns, "RetransSegs")


def run(state: TestbedState) -> tuple[dict[str, object], dict[str, int]]:
    before = totals(state)
    before["retransmissions"] = retransmissions(state)
    result = loadgen(state.client_netns, state.server_addr, 4, DOWNLOADS, timeout=5.0, duration=120)
    after = totals(state)
    after["retransmissions"] = retransmissions(state)
    return result, {k: after[k] - before.get(k, 0) for k in after}


@pytest.fixture(params=["idle", "one-core-busy"])
def load(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "idle":
        yield "idle"
        return
    # bounded: ends by itself after 300 s, and is ended by its pid when the test ends
    busy = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 300\nwhile time.time() < end: pass"]
    )
    try:
        yield "one-core-busy"
    finally:
        busy.kill()
        busy.wait()


def test_ecmp_downloads_at_full_sync_lose_no_packet(
    testbed: Builder, tmp_path: Path, load: str, record_property: Callable[[str, object], None]
) -> None:
    medians = {}
    for kind in ("symmetric", "ecmp"):
        state = testbed(3, config(tmp_path, kind), start_instances=True)
        loadgen(state.client_netns, state.server_addr, 2, 20, timeout=5.0)  # warm: ARP/ND, nginx
        result, delta = run(state)
        down()
        assert result["completed"] == DOWNLOADS and result["failed"] == 0, (kind, result["errors"])
        assert delta["drop"] == 0 and delta["invalid"] == 0 and delta["no_flow"] == 0, (kind, delta)
        assert delta["errors"] == 0
        # no packet was lost on the way, so neither end had to send anything twice
        assert delta["retransmissions"] == 0, (kind, delta)
        medians[kind] = statistics.median(result["total_us"])  # type: ignore[arg-type]
    # A figure, not a bound (speed lives in benchmarks): ECMP costs store round trips that
    # symmetric steering does not (a look-up on each side of the handshake).
    record_property("ecmp_over_symmetric_median", round(medians["ecmp"] / medians["symmetric"], 2))
    record_property("symmetric_median_us", medians["symmetric"])
