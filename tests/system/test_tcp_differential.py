"""Differential test of TCP tracking: one fwcluster instance against the kernel's conntrack.

Every scenario of ``tcp_scenarios`` is sent, in the same run, through two firewalls built side by
side (``differential_net``): a namespace whose forwarded packets all go to one fwcluster instance
over NFQUEUE, and one with the kernel's own stateful firewall (nftables + conntrack,
``nf_conntrack_tcp_loose=0``, the other conntrack settings at their defaults, so
``nf_conntrack_tcp_be_liberal=0``: the kernel tracks sequence windows). Sniffers on the far side
of each firewall record which segments passed; the test compares the two, segment by segment.

:data:`KNOWN_DIFFERENCES` names the scenarios where fwcluster differs today and why. The test
fails on a difference that is not listed and on a listed one that no longer occurs, so the list
shrinks as the core improves. The table of differences is printed (``pytest -s`` shows it on
success too).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import differential_net as net
import pytest
from tcp_scenarios import SCENARIOS, Endpoints, Seg, build_packet, endpoints

PAUSE = 0.025  # between two segments of a run (each is sent on both paths at once)
LATE_WAIT = 13.0  # before the late segments: more than the CLOSE timeout (10 s) of both trackers
LATE_LIMIT = 55.0  # ... and less than SYN_RECV's (60 s), the shortest a late scenario may sit in
START_TIMEOUT = 60.0  # the instance binds its queue within this (a busy 2-core machine)
BARRIER_TIMEOUT = 60.0  # a segment sent after all others reaches the far side within this

# Scenario -> why fwcluster lets different segments through than the kernel (today). Sequence
# windows are tracked (core/window.py, as the kernel with be_liberal=0); what remains:
LAST_IGNORED = (
    "the kernel remembers the last packet it ignored (last_seq, last_end, last_ack: about 80 bits per "
    "flow) and uses it to resynchronise; the window tracker does not keep it (core/window.py, 'not "
    "copied'), so such a segment falls to the state table and the window as they stand"
)
NO_CHECKSUM = (
    "fwcluster verifies the TCP checksum of closing segments only (RST, FIN: what could end a flow the "
    "endpoint keeps); the kernel (nf_conntrack_checksum=1) marks any segment with a bad checksum "
    "invalid. A corrupted data segment passes fwcluster, and the endpoint discards it"
)
RST_BEFORE_REPLY = (
    "a RST before any other reply: the kernel deletes the connection at once ('only reply is a RST'), "
    "so the SYN-ACK that follows meets no entry and is dropped (tcp_loose=0); fwcluster keeps the flow "
    "in CLOSE, where a SYN-ACK is ignored (passes) and an ACK is valid"
)
REPLY_SYN_REOPEN = (
    "intended (core/tcp.py): a SYN from the reply side in TIME_WAIT is invalid in fwcluster; the kernel "
    "deletes the old entry and judges the SYN as a new connection with the roles swapped"
)
KNOWN_DIFFERENCES: dict[str, str] = {
    "syn_in_established_restart": LAST_IGNORED + ": the kernel sees the SYN-ACK acknowledge the SYN it "
    "ignored in ESTABLISHED and starts the connection over with the new sequence numbers; fwcluster "
    "keeps the old window, so the client's ACK and data of the new stream are out of window",
    "challenge_ack_to_syn": LAST_IGNORED + ": the kernel accepts the client's RST at the ACK it ignored "
    "(the RFC 5961 challenge ACK answering a SYN); fwcluster judges the RST against the window of the "
    "SYN alone and drops it (the client's retried handshake then passes on both paths)",
    "bad_checksum": NO_CHECKSUM,
    "rst_answers_syn_without_ack": RST_BEFORE_REPLY,
    "rst_client_in_syn_sent": RST_BEFORE_REPLY + "; the client's RST itself is dropped by the kernel "
    "firewall: before any reply a packet from the client is ct state new, which the ruleset admits only "
    "for a SYN (conntrack has deleted the entry on it all the same)",
    "reopen_by_server_in_time_wait": REPLY_SYN_REOPEN + " (here the rules allow it, so the kernel passes it)",
}


@pytest.fixture(autouse=True)
def _netns_tier(request: pytest.FixtureRequest) -> None:
    """Overrides the tier's fixture of the same name: these tests need root but never the shared
    fwc-* testbed, so they must not run its safety net (its down() would tear down a testbed
    another run is using under the lock)."""
    if request.node.get_closest_marker("netns") is not None and os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")


# ---------------------------------------------------------------------------- one run
@dataclass
class Planned:
    """One segment of one scenario, built for both paths."""

    scenario: int
    index: int
    seg: Seg
    late: bool
    tag: int
    packets: dict[str, bytes]  # path name -> IP packet


@dataclass
class Outcome:
    # (scenario name, path name) -> for each segment, whether it reached the far side
    passed: dict[tuple[str, str], list[bool]] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)


def _tag_of(pkt: bytes) -> int | None:
    """The tag (IPv4 ID or IPv6 flow label) of a TCP packet; None for anything else."""
    if pkt[0] >> 4 == 4 and len(pkt) >= 20 and pkt[9] == 6:
        return int.from_bytes(pkt[4:6], "big")
    if pkt[0] >> 4 == 6 and len(pkt) >= 40 and pkt[6] == 6:
        return int.from_bytes(pkt[1:4], "big") & 0xFFFFF
    return None


def _plan() -> list[Planned]:
    plan: list[Planned] = []
    tag = 0
    for i, scn in enumerate(SCENARIOS):
        eps: dict[str, Endpoints] = {}
        for path in net.PATHS:
            a, b = path.addrs(scn.family)
            eps[path.name] = endpoints(i, scn, a, b)
        for j, (seg, late) in enumerate(scn.segments()):
            tag += 1
            pkts = {p: build_packet(seg, ep, scn.family, tag) for p, ep in eps.items()}
            plan.append(Planned(i, j, seg, late, tag, pkts))
    return plan


class Run:
    """Sends the plan through both paths and reads what arrived."""

    def __init__(self, instance: net.Instance, sniffer: net.Sniffer) -> None:
        self.instance = instance
        self.sniffer = sniffer
        self.senders = {"C": net.raw_sender(net.NS_A), "S": net.raw_sender(net.NS_B)}
        self.barriers = 0

    def close(self) -> None:
        for s in self.senders.values():
            s.close()

    def send(self, p: Planned) -> None:
        for path in net.PATHS:
            self.senders[p.seg.dir].send(p.packets[path.name])
        time.sleep(PAUSE)

    def barrier(self, path: net.FirewallPath, timeout: float, every: float | None = None) -> bool:
        """Send SYNs to an allowed port on fresh ports until one arrives (one SYN if ``every`` is
        None): the queue is FIFO, so every segment sent before has been decided by then."""
        deadline = time.monotonic() + timeout
        while True:
            self.barriers += 1
            n = self.barriers
            tag = 0xF000 + n
            ep = Endpoints(path.a4, path.b4, 30000 + n, net.ALLOWED_PORTS[1], 0x5000_0000 + n, 0)
            self.senders["C"].send(build_packet(Seg("C", "S", 0, None, 0, 64240), ep, 4, tag))

            def arrived(seen: list[net.Seen], tag: int = tag) -> bool:
                return any(s.path == path.name and s.host == "b" and _tag_of(s.packet) == tag for s in seen)

            wait = timeout if every is None else every
            if self.sniffer.wait_for(arrived, min(wait, max(0.0, deadline - time.monotonic()))):
                return True
            if time.monotonic() >= deadline or not self.instance.alive():
                return False

    def settle(self) -> None:
        for path in net.PATHS:
            if not self.barrier(path, BARRIER_TIMEOUT):
                pytest.fail(f"a barrier SYN sent through the {path.name} path did not arrive within "
                            f"{BARRIER_TIMEOUT:g} s; instance log:\n{self.instance.tail()}")  # fmt: skip
        time.sleep(0.5)

    def execute(self, plan: list[Planned]) -> Outcome:
        if not self.barrier(net.KERNEL, START_TIMEOUT):
            pytest.fail("nothing arrives through the kernel path: the namespaces are not wired right")
        if not self.barrier(net.FWCLUSTER, START_TIMEOUT, every=1.0):
            pytest.fail(f"the fwcluster instance passed nothing within {START_TIMEOUT:g} s "
                        f"(alive: {self.instance.alive()}); its log:\n{self.instance.tail()}")  # fmt: skip
        with_late = {p.scenario for p in plan if p.late}
        # scenarios with a late part go first, so their pause overlaps the others
        first = [p for p in plan if p.scenario in with_late and not p.late]
        rest = [p for p in plan if p.scenario not in with_late]
        for p in first:
            self.send(p)
        early_end = time.monotonic()
        for p in rest:
            self.send(p)
        late = [p for p in plan if p.late]
        if late:
            time.sleep(max(0.0, early_end + LATE_WAIT - time.monotonic()))
            waited = time.monotonic() - early_end
            if waited > LATE_LIMIT:
                pytest.fail(f"the late segments left {waited:.0f} s after their scenarios (more than "
                            f"{LATE_LIMIT:g} s): they would meet other timeouts; "
                            "run on a less busy machine")  # fmt: skip
            for p in late:
                self.send(p)
        self.settle()
        return self._outcome(plan)

    def _outcome(self, plan: list[Planned]) -> Outcome:
        arrived: set[tuple[str, str, int]] = set()
        for s in self.sniffer.snapshot():
            tag = _tag_of(s.packet)
            if tag is not None:
                arrived.add((s.path, s.host, tag))
        out = Outcome()
        for p in plan:
            name = SCENARIOS[p.scenario].name
            host = "b" if p.seg.dir == "C" else "a"
            for path in net.PATHS:
                out.passed.setdefault((name, path.name), []).append((path.name, host, p.tag) in arrived)
        return out


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    workdir: Path = tmp_path_factory.mktemp("fwd")
    plan = _plan()
    instance: net.Instance | None = None
    sniffer: net.Sniffer | None = None
    run: Run | None = None
    try:
        net.build()
        sysctls = net.kernel_sysctls()
        sniffer = net.Sniffer()
        instance = net.Instance(workdir)
        run = Run(instance, sniffer)
        result = run.execute(plan)
        result.sysctls = sysctls
        yield result
    finally:
        if run is not None:
            run.close()
        if sniffer is not None:
            sniffer.stop()
        if instance is not None:
            instance.stop()
        net.teardown()


# ---------------------------------------------------------------------------- report
def _mark(ok: bool) -> str:
    return "pass" if ok else "drop"


def _pattern(flags: list[bool]) -> str:
    return "".join("P" if f else "." for f in flags)


def _differences(out: Outcome) -> dict[str, list[int]]:
    """Scenario name -> indexes of the segments the two paths judged differently."""
    diffs: dict[str, list[int]] = {}
    for scn in SCENARIOS:
        k = out.passed[(scn.name, net.KERNEL.name)]
        f = out.passed[(scn.name, net.FWCLUSTER.name)]
        idx = [i for i, (x, y) in enumerate(zip(k, f, strict=True)) if x != y]
        if idx:
            diffs[scn.name] = idx
    return diffs


def _table(out: Outcome, diffs: dict[str, list[int]]) -> str:
    by_name = {s.name: s for s in SCENARIOS}
    rows = [("scenario", "#", "segment", "kernel", "fwcluster", "listed")]
    for name, idx in diffs.items():
        segs = by_name[name].segments()
        for i in idx:
            seg, late = segs[i]
            rows.append((name, str(i + 1), ("(late) " if late else "") + seg.describe(),
                         _mark(out.passed[(name, net.KERNEL.name)][i]),
                         _mark(out.passed[(name, net.FWCLUSTER.name)][i]),
                         "yes" if name in KNOWN_DIFFERENCES else "NO"))  # fmt: skip
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _summary(out: Outcome) -> str:
    """Every scenario's verdicts as two patterns (P passed, . dropped), kernel above fwcluster."""
    width = max(len(s.name) for s in SCENARIOS)
    lines = [f"{'scenario'.ljust(width)}  kernel / fwcluster (P passed, . dropped)"]
    for s in SCENARIOS:
        k = _pattern(out.passed[(s.name, net.KERNEL.name)])
        f = _pattern(out.passed[(s.name, net.FWCLUSTER.name)])
        lines.append(f"{s.name.ljust(width)}  {k} / {f}{'' if k == f else '   <- differs'}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the tests
def test_scenario_library() -> None:
    """The library itself (no root): enough scenarios, unique names, a list that names real ones."""
    names = [s.name for s in SCENARIOS]
    assert len(names) >= 40
    assert len(set(names)) == len(names)
    assert set(KNOWN_DIFFERENCES) <= set(names), set(KNOWN_DIFFERENCES) - set(names)
    assert all(reason.strip() for reason in KNOWN_DIFFERENCES.values())
    assert len(SCENARIOS) < 500  # each scenario's ports are base + index, within their ranges
    assert sum(len(s.segments()) for s in SCENARIOS) < 0xF000  # tags below the barriers'
    for s in SCENARIOS:
        assert s.segments(), s.name
        assert all(seg.dir in ("C", "S") for seg, _ in s.segments()), s.name


@pytest.mark.netns
def test_both_paths_carry_and_block(outcome: Outcome) -> None:
    """The setup works (or the comparison below would prove nothing): a plain connection passes
    whole through each path and a SYN to a refused port opens nothing on either."""
    assert outcome.sysctls.get("net.netfilter.nf_conntrack_tcp_loose") == "0", outcome.sysctls
    assert outcome.sysctls.get("net.netfilter.nf_conntrack_tcp_be_liberal") == "0", outcome.sysctls
    for path in net.PATHS:
        for name in ("handshake_basic", "fin_client_first", "handshake_basic_v6"):
            assert all(outcome.passed[(name, path.name)]), (
                path.name,
                name,
                outcome.passed[(name, path.name)],
            )
        for name in ("syn_blocked_port", "syn_blocked_port_v6", "midstream_ack"):
            assert not any(outcome.passed[(name, path.name)]), (path.name, name)


@pytest.mark.netns
def test_tcp_tracking_matches_kernel(outcome: Outcome, record_property: pytest.RecordProperty) -> None:
    diffs = _differences(outcome)
    unexpected = sorted(set(diffs) - set(KNOWN_DIFFERENCES))
    vanished = sorted(set(KNOWN_DIFFERENCES) - set(diffs))
    record_property("scenarios", len(SCENARIOS))
    record_property("differing", len(diffs))
    record_property("listed", len(KNOWN_DIFFERENCES))
    report = [f"kernel conntrack settings: {outcome.sysctls}", "", _summary(outcome), ""]
    report.append(_table(outcome, diffs) if diffs else "no differences")
    for name in sorted(diffs):
        if name in KNOWN_DIFFERENCES:
            report.append(f"  {name}: {KNOWN_DIFFERENCES[name]}")
    text = "\n".join(report)
    print("\n" + text)
    problems = []
    if unexpected:
        problems.append(f"differences not in KNOWN_DIFFERENCES: {', '.join(unexpected)}")
    if vanished:
        problems.append(
            f"listed in KNOWN_DIFFERENCES but no longer different (remove them): {', '.join(vanished)}"
        )
    assert not problems, "\n".join(problems) + "\n\n" + text
