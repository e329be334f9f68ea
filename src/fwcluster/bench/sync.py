"""``fwcluster bench sync``: the price of each synchronization setting on the real testbed.

Connection rate and TCP connect time through N instances (default 3, symmetric steering) for all
12 combinations of level x access x confirm, at each load level (default 25 and 100 concurrent
downloads), beside the kernel's own stateful firewall in the same instance namespaces, in one
run. Setups are interleaved round by round (the order rotates each round), so drift on a shared
machine spreads over all of them; the store is emptied between setups.
"""

from __future__ import annotations

import itertools
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from rich.progress import Progress

from fwcluster.bench.datapath import loadgen
from fwcluster.bench.stats import summarize
from fwcluster.testbed import down, reconfigure, set_mode, store_client_argv, up

LEVELS = ("none", "established", "full")
ACCESS = ("dirty", "clean")
CONFIRM = ("async", "sync")
SETTINGS = tuple(itertools.product(LEVELS, ACCESS, CONFIRM))
KERNEL = "kernel"
WARMUP = 200


def setup_name(level: str, access: str, confirm: str) -> str:
    return f"{level}/{access}/{confirm}"


def config_text(level: str, access: str, confirm: str, follow: str = "backup") -> str:
    return (
        f'[sync]\nlevel = "{level}"\naccess = "{access}"\nconfirm = "{confirm}"\nfollow = "{follow}"\n'
        "[cluster]\nmasters = 0\n"  # instances restart between setups: no failover wanted
        '[policy]\ndefault = "drop"\n'
        '[[rules]]\naction = "accept"\nproto = "tcp"\ndport = 80\n'
    )


def flush_store(state: Any) -> None:
    """Empty the testbed's store between setups, so every setup starts from the same table."""

    if state.store_conf:
        subprocess.run(
            [*store_client_argv(state=state), "FLUSHALL"], capture_output=True, timeout=10, check=False
        )


def run(
    instances: int,
    loads: tuple[int, ...],
    count: int,
    rounds: int,
    settings: tuple[tuple[str, str, str], ...] = SETTINGS,
    rate: float | None = None,
) -> dict[str, Any]:
    """``rate``: an open loop at that many new connections per second (each load is then the bound
    on open connections), so a stall cannot hide the arrivals behind it; None: closed loop."""

    setups: list[str] = [setup_name(*s) for s in settings] + [KERNEL]
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {(s, load): [] for s in setups for load in loads}
    with tempfile.TemporaryDirectory(prefix="fwcluster-bench-") as tmp:
        configs = {}
        for level, access, confirm in settings:
            f = Path(tmp) / f"{level}-{access}-{confirm}.toml"
            f.write_text(config_text(level, access, confirm))
            configs[setup_name(level, access, confirm)] = f
        down()
        state = up(instances, str(next(iter(configs.values()))))
        try:
            with Progress(transient=True) as progress:
                task = progress.add_task("bench sync", total=rounds * len(setups))
                for r in range(rounds):
                    shift = r % len(setups)
                    for setup in setups[shift:] + setups[:shift]:
                        progress.update(task, description=f"round {r + 1}/{rounds}: {setup}")
                        if setup == KERNEL:
                            set_mode("kernel")
                        else:
                            set_mode("fwcluster")
                            flush_store(state)
                            state = reconfigure(configs[setup])
                        for load in loads:
                            loadgen(state.client_netns, state.server_addr, load, WARMUP, rate=rate)
                            samples[(setup, load)].append(
                                loadgen(state.client_netns, state.server_addr, load, count, rate=rate)
                            )
                        progress.advance(task)
        finally:
            down()
    return summarize_runs(samples, setups, loads, instances, count, rounds)


def summarize_runs(
    samples: dict[tuple[str, int], list[dict[str, Any]]],
    setups: list[str],
    loads: tuple[int, ...],
    instances: int,
    count: int,
    rounds: int,
) -> dict[str, Any]:
    rows = []
    for setup in setups:
        for load in loads:
            runs = samples[(setup, load)]
            connect = [us for r in runs for us in r["connect_us"]]
            c = summarize(connect)
            level, access, confirm = setup.split("/") if setup != KERNEL else (None, None, None)
            rows.append(
                {
                    "name": setup,
                    "level": level,
                    "access": access,
                    "confirm": confirm,
                    "instances": instances,
                    "load": load,
                    "connections_per_second": statistics.median(r["connections_per_second"] for r in runs),
                    "connect_us_p50": c["p50"],
                    "connect_us_p90": c["p90"],
                    "connect_us_p99": c["p99"],
                    "samples": c["samples"],
                    "failed": sum(r["failed"] for r in runs),
                }
            )
    # "none" shares nothing, whatever access and confirm say: its four runs pool into one baseline.
    none_p50 = {
        load: summarize([us for (name, ld), runs in samples.items() if ld == load and name.startswith("none/")
                         for r in runs for us in r["connect_us"]])["p50"]
        for load in loads
    }  # fmt: skip
    kernel_p50 = {row["load"]: row["connect_us_p50"] for row in rows if row["name"] == KERNEL}
    for row in rows:
        row["p50_over_none"] = row["connect_us_p50"] / max(1, none_p50[row["load"]])
        row["p50_over_kernel"] = row["connect_us_p50"] / max(1, kernel_p50[row["load"]])
    goal = {
        str(row["load"]): row["p50_over_none"]
        for row in rows
        if row["name"] == setup_name("full", "clean", "sync")
    }
    return {
        "instances": instances,
        "loads": list(loads),
        "count": count,
        "rounds": rounds,
        "none_connect_us_p50": {str(k): v for k, v in none_p50.items()},
        "configurations": rows,
        "full_clean_sync_over_none_p50": goal,
    }
