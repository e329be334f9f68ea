"""``fwcluster bench ...``: every figure the project claims, measured on demand."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fwcluster import credentials
from fwcluster.bench.sync import SETTINGS
from fwcluster.statetable.settings import Follow


def add_parsers(
    bench: argparse.ArgumentParser,
    parser_class: type[argparse.ArgumentParser],
    positive: Callable[[int, int], Callable[[str], int]],
) -> None:
    sub = bench.add_subparsers(dest="bench", metavar="BENCH", parser_class=parser_class, required=True)

    core = sub.add_parser("core", help="packets/s through parse + track + rules; bytes per tracked flow")
    core.add_argument(
        "--connections", type=positive(100, 10_000_000), default=20_000, help="connections in the mix"
    )
    core.add_argument("--rounds", type=positive(1, 100), default=5, help="passes over the mix (best is kept)")
    core.add_argument(
        "--flows", type=positive(1000, 20_000_000), default=1_000_000, help="flows for the memory figure"
    )
    core.add_argument("--json", action="store_true", help="print one JSON object")
    core.set_defaults(func=bench_core)

    dp = sub.add_parser(
        "datapath",
        help="connection rate, connect time and instance CPU per connection in the steady state: "
        "fwcluster vs the kernel's firewall vs plain forwarding",
    )
    dp.add_argument(
        "--concurrency", type=positive(1, 1000), default=25, help="concurrent downloads (default 25)"
    )
    dp.add_argument(
        "--seconds", type=positive(1, 600), default=8, help="measured seconds per run (default 8)"
    )
    dp.add_argument(
        "--warmup",
        type=positive(0, 600),
        default=2,
        help="seconds of the same load before each measured window, not recorded (default 2)",
    )
    dp.add_argument(
        "--count", type=positive(100, 10_000_000), help="also stop a run after this many downloads"
    )
    dp.add_argument(
        "--rounds", type=positive(1, 50), default=3, help="interleaved runs of each setup (default 3)"
    )
    dp.add_argument("--procs", type=positive(1, 8), default=2, help="load generator processes (default 2)")
    dp.add_argument(
        "--rate",
        type=positive(1, 1_000_000),
        help="open loop: new connections per second at fixed arrival times (default: closed loop)",
    )
    dp.add_argument(
        "--arrivals", choices=("poisson", "uniform"), default="poisson", help="open loop: arrival process"
    )
    dp.add_argument(
        "--max-open",
        type=positive(1, 10_000),
        default=1000,
        help="open loop: most connections open at once; arrivals beyond it are counted as dropped",
    )
    dp.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config for the instance and the kernel rules (default: sync none, no store, no masters)",
    )
    dp.add_argument("--json", action="store_true", help="print one JSON object")
    dp.set_defaults(func=bench_datapath)

    bu = sub.add_parser(
        "bulk",
        help="bulk TCP throughput (iperf3) through one instance, fast path off and on, beside the "
        "kernel firewall and plain forwarding; packets to user space per GB",
    )
    bu.add_argument("--seconds", type=positive(1, 600), default=8, help="seconds per iperf3 test (default 8)")
    bu.add_argument("--streams", type=positive(1, 128), default=4, help="parallel TCP streams (default 4)")
    bu.add_argument(
        "--rounds", type=positive(1, 50), default=3, help="interleaved tests of each setup (default 3)"
    )
    bu.add_argument("--json", action="store_true", help="print one JSON object")
    bu.set_defaults(func=bench_bulk)

    st = sub.add_parser(
        "store",
        help="cost per published state change against redis: dirty/clean x async/sync, side by side",
    )
    st.add_argument(
        "--changes",
        type=positive(10, 1_000_000),
        default=2000,
        help="state changes per configuration and round (default 2000)",
    )
    st.add_argument(
        "--rounds", type=positive(1, 100), default=5, help="interleaved rounds of the four (default 5)"
    )
    st.add_argument(
        "--url",
        type=_redis_url,
        metavar="URL",
        help="redis://... of a server to measure, without a password (its fwcluster flows and feed "
        "are cleared: give it a database nobody uses, e.g. redis://HOST:6379/15); default: start a "
        "private one on 127.0.0.1",
    )
    st.add_argument(
        "--url-file",
        type=Path,
        metavar="FILE",
        help="read that URL, password included, from FILE (mode 0600) instead",
    )
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.set_defaults(func=bench_store)

    sy = sub.add_parser(
        "sync",
        help="connection rate and connect time for all 12 sync settings through N instances, beside "
        "the kernel firewall",
    )
    sy.add_argument("--instances", type=positive(1, 32), default=3, help="firewall instances (default 3)")
    sy.add_argument(
        "--loads",
        type=_loads,
        default=(25, 100),
        help="concurrent downloads, comma-separated (default 25,100)",
    )
    sy.add_argument(
        "--count", type=positive(100, 1_000_000), default=2000, help="downloads per run (default 2000)"
    )
    sy.add_argument(
        "--rounds", type=positive(1, 50), default=3, help="interleaved runs of each setup (default 3)"
    )
    sy.add_argument(
        "--rate",
        type=positive(1, 100_000),
        default=None,
        help="open loop: new connections per second (Poisson arrivals, never held back by slow ones); "
        "each load is then the bound on open connections (default: closed loop)",
    )
    sy.add_argument("--json", action="store_true", help="print one JSON object")
    sy.set_defaults(func=bench_sync)

    fo = sub.add_parser(
        "failover",
        help="reroute gap and TCP stall on SIGKILL, detection on SIGSTOP, master takeover, scale time",
    )
    fo.add_argument("--trials", type=positive(1, 100), default=10, help="trials of each failure (default 10)")
    fo.add_argument(
        "--flows",
        type=positive(1000, 2_000_000),
        default=100_000,
        help="flows in the table when scaling (default 100000)",
    )
    _add_level(fo)
    fo.add_argument("--no-scale", action="store_true", help="skip the scale-with-many-flows trial (faster)")
    fo.add_argument(
        "--baseline",
        choices=("conntrackd",),
        help="also run the sigkill trial through the kernel firewall + conntrackd (FTFW) + keepalived "
        "(VRRP) pair, in namespaces of its own (fwb-*), and a control without conntrackd; reported "
        "side by side with fwcluster's",
    )
    fo.add_argument(
        "--advert-int",
        type=_advert_ints,
        default=(1.0, 0.1),
        metavar="SECONDS,...",
        help="with --baseline: keepalived advert intervals to test (default 1,0.1; the control "
        "runs at the shortest)",
    )
    _add_steering(fo)
    fo.add_argument("--json", action="store_true", help="print one JSON object")
    fo.set_defaults(func=bench_failover)
    sf = sub.add_parser(
        "store-failover",
        help="SIGKILL of the Redis primary under load, outage local beside refuse: time until writes "
        "are confirmed again, new connections failed, established flows lost",
    )
    sf.add_argument("--trials", type=positive(1, 100), default=5, help="trials per policy (default 5)")
    sf.add_argument("--json", action="store_true", help="print one JSON object")
    sf.set_defaults(func=bench_store_failover)
    _add_study(sub, positive)
    sc = sub.add_parser(
        "scale",
        help="scale 3 -> 6 -> 3 under load through the leading master, per sync level: times, "
        "buckets moved, connections lost",
    )
    sc.add_argument("--trials", type=positive(1, 100), default=10, help="trials per level (default 10)")
    _add_level(sc)
    _add_steering(sc)
    sc.add_argument("--json", action="store_true", help="print one JSON object")
    sc.set_defaults(func=bench_scale)


def _add_steering(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--steering",
        choices=("symmetric", "ecmp"),
        default="symmetric",
        help="steering kind of the testbed's load balancers (default symmetric)",
    )


def _add_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--level",
        action="append",
        choices=("none", "established", "full"),
        help="sync level to test (repeat for several; default: all three)",
    )


def _level_tables(doc: dict[str, Any], title: Callable[[str], str]) -> None:
    """One table per sync level of the figures' distributions over the trials."""
    for level, res in doc["levels"].items():
        t = Table(title=title(level))
        for col in ("figure", "median", "p90", "min", "max", "trials"):
            t.add_column(col, justify="left" if col == "figure" else "right")
        for name, f in res["figures"].items():
            t.add_row(name, str(f["median"]), str(f["p90"]), str(f["min"]), str(f["max"]), str(f["n"]))
        Console().print(t)


def _add_study(sub: Any, positive: Callable[[int, int], Callable[[str], int]]) -> None:
    st = sub.add_parser(
        "study",
        help="the study's evaluation: connect time for every sync setting, cluster sizes 3/6/9 and the "
        "direct and kernel baselines, interleaved; writes results.json, samples.csv, report.md, plots",
    )
    st.add_argument(
        "--quick", action="store_true", help="1 run of 300 downloads per configuration (a first look)"
    )
    st.add_argument("--out", default="out/study", metavar="DIR", help="output directory (default out/study)")
    st.add_argument("--runs", type=positive(1, 100), help="interleaved runs per configuration (default 10)")
    st.add_argument("--count", type=positive(50, 1_000_000), help="downloads per run (default 10000)")
    st.add_argument("--loads", type=_loads, default=(25, 100), help="concurrent connections (default 25,100)")
    st.add_argument(
        "--sizes", type=_sizes, default=(3, 6, 9), help="cluster sizes (default 3,6,9; must hold 3)"
    )
    st.add_argument(
        "--follow",
        type=_follows,
        default=("backup",),
        help="[sync] follow designs to measure side by side, e.g. all,backup (all: the seed's, every "
        "instance follows every change; default backup)",
    )
    st.add_argument(
        "--settings",
        type=_settings,
        help="only these level/access/confirm settings, at every size (default: all 12 at 3 instances, "
        "none/dirty/async, established/dirty/async and full/clean/sync beyond)",
    )
    st.set_defaults(func=bench_study)


def _advert_ints(text: str) -> tuple[float, ...]:
    try:
        values = tuple(dict.fromkeys(float(x) for x in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of seconds") from None
    if not all(0.01 <= v <= 255 for v in values):
        raise argparse.ArgumentTypeError("advert intervals must be 0.01..255 seconds")
    return values


def _follows(text: str) -> tuple[str, ...]:
    allowed = [f.value for f in Follow]
    follows = tuple(dict.fromkeys(x.strip() for x in text.split(",")))
    if not follows or not all(f in allowed for f in follows):
        raise argparse.ArgumentTypeError(f"{text!r}: each must be one of {', '.join(allowed)}")
    return follows


def _settings(text: str) -> tuple[tuple[str, str, str], ...]:
    out = []
    for name in text.split(","):
        parts = tuple(name.strip().split("/"))
        if parts not in SETTINGS:
            raise argparse.ArgumentTypeError(f"{name!r} is no level/access/confirm setting")
        out.append((parts[0], parts[1], parts[2]))
    return tuple(dict.fromkeys(out))


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(x) for x in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if 3 not in sizes or not all(1 <= x <= 26 for x in sizes):
        raise argparse.ArgumentTypeError("sizes must include 3 (the baselines' size) and be 1..26")
    return sizes


def _loads(text: str) -> tuple[int, ...]:
    try:
        loads = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not loads or not all(1 <= x <= 1000 for x in loads):
        raise argparse.ArgumentTypeError("each load must be 1..1000 concurrent downloads")
    return loads


def _redis_url(text: str) -> str:
    """A redis URL, checked for shape only (never echoed back: it may hold a password)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a valid URL ({e})") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise argparse.ArgumentTypeError("not a redis://, rediss:// or unix:// URL")
    if parts.scheme != "unix" and not parts.hostname:
        raise argparse.ArgumentTypeError("the URL names no host")
    return text


def bench_core(args: argparse.Namespace) -> int:
    from fwcluster.bench import core
    from fwcluster.config import load_config

    result = core.run(load_config(None), args.connections, args.rounds, args.flows)
    doc = result.as_dict()
    if args.json:
        print(json.dumps(doc))
        return 0
    t = Table(title="fwcluster bench core (one core, parse + track + rules)")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("goal", justify="right")
    t.add_row("packets/s, window tracking (the default)", f"{doc['packets_per_second']:,}", ">= 400,000")
    t.add_row("packets/s, be_liberal (no windows)", f"{doc['packets_per_second_liberal']:,}", "")
    t.add_row("bytes per tracked flow (user space)", f"{doc['bytes_per_flow']}", "<= 200")
    kernel = doc["kernel_bytes_per_flow"]
    t.add_row("  + the kernel's conntrack entry", "-" if kernel is None else f"{kernel}", "")
    total = doc["bytes_per_flow_total"]
    t.add_row("  = bytes per flow in all", "-" if total is None else f"{total}", "<= 500")
    t.add_row("packets in the mix", f"{doc['packets']:,}", "")
    t.add_row("flows for the memory figure", f"{doc['flows']:,}", "")
    Console().print(t)
    return 0


def bench_datapath(args: argparse.Namespace) -> int:
    from fwcluster.bench import datapath
    from fwcluster.cli.status_cmd import require_root
    from fwcluster.config import load_config

    require_root("bench datapath")
    load_config(args.config)  # fail before building anything
    plan = datapath.Plan(
        rounds=args.rounds,
        seconds=float(args.seconds),
        warmup=float(args.warmup),
        concurrency=args.concurrency if args.rate is None else args.max_open,
        count=args.count or datapath.UNBOUNDED,
        procs=args.procs,
        rate=None if args.rate is None else float(args.rate),
        arrivals=args.arrivals,
    )
    doc: dict[str, Any] = datapath.run(args.config, plan)
    if args.json:
        print(json.dumps(doc))
        return 0
    load = (
        f"{args.concurrency} concurrent" if args.rate is None else f"{args.rate}/s {args.arrivals} arrivals"
    )
    t = Table(
        title=f"fwcluster bench datapath ({load}; {args.rounds} x {args.seconds} s after {args.warmup} s; "
        f"medians of runs)"
    )
    columns = ["setup", "conn/s", "connect p50 (us)", "p90", "p99", "download p50 (us)"]
    if args.rate is not None:
        columns += ["from arrival p50 (us)", "dropped"]
    columns += ["instance CPU/conn (us)", "loadgen cores", "failed"]
    for col in columns:
        t.add_column(col, justify="left" if col == "setup" else "right")
    for name in datapath.SETUPS:
        r = doc[name]
        row = [
            name,
            f"{r['connections_per_second']:,.0f}",
            f"{r['connect_us_p50']:,}",
            f"{r['connect_us_p90']:,}",
            f"{r['connect_us_p99']:,}",
            f"{r['total_us_p50']:,}",
        ]
        if args.rate is not None:
            row += [f"{r.get('sojourn_us_p50', 0):,}", str(r["dropped_arrivals"])]
        cpu = r.get("instance_cpu_us_per_connection")
        row += ["-" if cpu is None else f"{cpu:.1f}", f"{r['loadgen_cpu_cores']:.2f}", str(r["failed"])]
        t.add_row(*row)
    console = Console()
    console.print(t)
    ratios = doc["ratios"]
    console.print(
        f"fwcluster over the kernel firewall: {ratios['fwcluster_over_kernel_rate']:.2f} x the rate "
        f"(goal >= 0.95), {ratios['fwcluster_over_kernel_connect_p50']:.2f} x the median connect time "
        f"(goal <= 1.5); instance: sync {doc['sync']['level']}, fast path "
        + ("on" if doc["fast_path"] else "off")
    )
    return 0


def bench_bulk(args: argparse.Namespace) -> int:
    from fwcluster.bench import bulk
    from fwcluster.cli.errors import UserError
    from fwcluster.cli.status_cmd import require_root

    require_root("bench bulk")
    try:
        doc = bulk.run(args.seconds, args.streams, args.rounds)
    except bulk.BulkError as e:
        raise UserError(f"bench bulk: {e}", code=1) from None
    if args.json:
        print(json.dumps(doc))
        return 0
    t = Table(
        title=f"fwcluster bench bulk (iperf3, {args.streams} streams, {args.rounds} x {args.seconds} s; "
        "medians of runs)"
    )
    for col in ("setup", "Gbit/s", "per run", "x kernel", "retransmits", "user-space pkts/GB", "CPU s/GB"):
        t.add_column(col, justify="left" if col == "setup" else "right")
    for name, r in doc["setups"].items():
        ratio = doc["ratios"].get(f"{name}_over_kernel")
        t.add_row(
            name,
            f"{r['gbit_per_second']:.2f}",
            ", ".join(f"{g:.2f}" for g in r["runs_gbit_per_second"]),
            "1.00" if name == bulk.BASELINE else ("-" if ratio is None else f"{ratio:.2f}"),
            str(r["retransmits"]),
            f"{r['user_space_packets_per_gb']:,.0f}" if "user_space_packets_per_gb" in r else "-",
            f"{r['instance_cpu_s_per_gb']:.3f}" if "instance_cpu_s_per_gb" in r else "-",
        )
    Console().print(t)
    return 0


def bench_store(args: argparse.Namespace) -> int:
    from fwcluster.bench import store
    from fwcluster.cli.errors import UserError
    from fwcluster.statetable.store import StoreError

    if args.url and args.url_file:
        raise UserError("bench store: give --url or --url-file, not both")
    if args.url and credentials.has_password(args.url):
        raise UserError(
            "bench store: --url: a password on the command line is readable by every local user: "
            "put the URL in a file only you can read and give --url-file FILE"
        )
    url = args.url
    if args.url_file is not None:
        try:
            url = _redis_url(credentials.read_secret(args.url_file, "--url-file"))
        except (credentials.CredentialError, argparse.ArgumentTypeError) as e:
            raise UserError(f"bench store: {e}") from None
    where = "a private redis-server on 127.0.0.1" if url is None else store.redact(url)
    try:
        result = store.run(url, args.changes, args.rounds)
    except store.ServerStartError as e:
        raise UserError(f"bench store: {e}", code=1) from None
    except StoreError as e:
        raise UserError(f"bench store: the store at {where} failed: {e}", code=1) from None
    doc = result.as_dict()
    if args.json:
        print(json.dumps(doc))
        return 0
    t = Table(
        title=f"fwcluster bench store (redis {doc['redis_version']} at {where}; "
        f"{doc['rounds']} rounds x {doc['changes_per_round']:,} changes; async batches of {doc['batch']})"
    )
    for col in ("access", "confirm", "changes", "us/change p50", "us/change p99", "changes/s"):
        t.add_column(col, justify="left" if col in ("access", "confirm") else "right")
    for c in doc["configurations"]:
        t.add_row(
            c["access"],
            c["confirm"],
            f"{c['changes']:,}",
            f"{c['us_per_change_p50']:.1f}",
            f"{c['us_per_change_p99']:.1f}",
            f"{c['changes_per_second']:,}",
        )
    Console().print(t)
    return 0


def bench_sync(args: argparse.Namespace) -> int:
    from fwcluster.bench import sync
    from fwcluster.cli.status_cmd import require_root

    require_root("bench sync")
    doc = sync.run(args.instances, args.loads, args.count, args.rounds, rate=args.rate)
    if args.json:
        print(json.dumps(doc))
        return 0
    loop = f"open loop, {args.rate} new connections/s" if args.rate else "closed loop"
    t = Table(
        title=f"fwcluster bench sync ({args.instances} instances, {loop}; medians over {args.rounds} rounds)"
    )
    for col in ("setup", "load", "conn/s", "connect p50 (us)", "p90", "p99", "x none", "x kernel", "failed"):
        t.add_column(col, justify="left" if col == "setup" else "right")
    for row in doc["configurations"]:
        t.add_row(
            row["name"],
            str(row["load"]),
            f"{row['connections_per_second']:.0f}",
            str(row["connect_us_p50"]),
            str(row["connect_us_p90"]),
            str(row["connect_us_p99"]),
            f"{row['p50_over_none']:.2f}",
            f"{row['p50_over_kernel']:.2f}",
            str(row["failed"]),
        )
    console = Console()
    console.print(t)
    for load, ratio in doc["full_clean_sync_over_none_p50"].items():
        console.print(
            f"full/clean/sync over none, median connect time at {load} concurrent: {ratio:.2f} (goal <= 1.10)"
        )
    return 0


def bench_failover(args: argparse.Namespace) -> int:
    from fwcluster.bench import failover
    from fwcluster.bench.baseline import pairtrial
    from fwcluster.cli.status_cmd import require_root

    require_root("bench failover")
    levels = tuple(dict.fromkeys(args.level or failover.LEVELS))
    doc = failover.run(args.trials, 0 if args.no_scale else args.flows, levels, args.steering)
    if args.baseline:
        doc["baseline"] = pairtrial.run(args.trials, args.advert_int)
        doc["baseline"]["side_by_side"] = pairtrial.side_by_side(doc["levels"], doc["baseline"])
    if args.json:
        print(json.dumps(doc))
        return 0
    setup = "3 instances, 2 masters, {}/clean/async, " + args.steering
    _level_tables(doc, lambda lv: f"fwcluster bench failover ({args.trials} trials; {setup.format(lv)})")
    if args.baseline:
        _baseline_tables(doc["baseline"])
    return 0


def _baseline_tables(base: dict[str, Any]) -> None:
    for name, res in base["variants"].items():
        t = Table(title=f"baseline {name} ({base['trials']} trials; kernel firewall, keepalived)")
        for col in ("figure", "median", "p90", "min", "max", "trials"):
            t.add_column(col, justify="left" if col == "figure" else "right")
        for fig, f in res["figures"].items():
            t.add_row(fig, str(f["median"]), str(f["p90"]), str(f["min"]), str(f["max"]), str(f["n"]))
        Console().print(t)
    t = Table(title="SIGKILL of the active node, side by side (gap and stall: median (min-max) ms)")
    for col in ("setup", "intact", "short failed", "forwarding gap", "TCP stall"):
        t.add_column(col, justify="left" if col == "setup" else "right")

    def spread(f: dict[str, float]) -> str:
        return f"{f['median']} ({f['min']}-{f['max']})" if f["n"] else "none"

    for row in base["side_by_side"]:
        t.add_row(
            row["setup"], f"{row['intact']}/{row['downloads']}",
            str(row["steady_requests_failed"]),
            spread(row["forwarding_gap_ms"]), spread(row["tcp_stall_ms"]),
        )  # fmt: skip
    Console().print(t)


def bench_store_failover(args: argparse.Namespace) -> int:
    from fwcluster.bench import store_failover
    from fwcluster.cli.status_cmd import require_root

    require_root("bench store-failover")
    doc = store_failover.run(args.trials)
    if args.json:
        print(json.dumps(doc))
        return 0
    setup = "3 instances, 2 masters, Sentinel store, established/clean/async"
    _level_tables(
        doc, lambda p: f"fwcluster bench store-failover ({args.trials} trials; outage {p}; {setup})"
    )
    return 0


def bench_study(args: argparse.Namespace) -> int:
    import shlex
    import sys
    from pathlib import Path

    from fwcluster.bench.study import runner as study
    from fwcluster.cli.status_cmd import require_root

    require_root("bench study")
    out = Path(args.out)
    command = "fwcluster " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    doc, files = study.run(
        out, quick=args.quick, runs=args.runs, count=args.count, loads=args.loads, sizes=args.sizes,
        follows=args.follow, settings=args.settings, command=command,
    )  # fmt: skip
    t = Table(title=f"fwcluster bench study: goals ({doc['meta']['runs']} runs x {doc['meta']['count']:,})")
    for col in ("goal", "load", "value", "target", "met"):
        t.add_column(col, justify="left" if col == "goal" else "right")
    for g in doc["goals"]:
        value = "-" if g["value"] is None else f"{g['value']:.2f}"
        met = "-" if g["met"] is None else ("yes" if g["met"] else f"no (+{g['missed_by']:.0f}%)")
        target = "-" if g["target"] is None else f"{g['target']:.2f}"
        met = "reported" if g["target"] is None else met
        t.add_row(g["goal"], str(g["load"] or ""), value, target, met)
    console = Console()
    console.print(t)
    console.print(f"wrote {len(files)} files to {out}/ (report: {out / 'report.md'})")
    return 0


def bench_scale(args: argparse.Namespace) -> int:
    from fwcluster.bench import scale
    from fwcluster.cli.status_cmd import require_root

    require_root("bench scale")
    doc = scale.run(args.trials, tuple(dict.fromkeys(args.level or scale.LEVELS)), args.steering)
    if args.json:
        print(json.dumps(doc))
        return 0
    _level_tables(
        doc, lambda lv: f"bench scale 3 -> 6 -> 3 ({args.trials} trials; {lv}/clean/async, {args.steering})"
    )
    return 0
