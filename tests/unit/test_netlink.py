"""The nfnetlink_queue codec: what the kernel is told, checked without a socket."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fwcluster.datapath.netlink import (
    NF_ACCEPT,
    NF_DROP,
    VerdictEncoder,
    packet_message,
    parse_packets,
    parse_verdicts,
)


def test_packets_come_out_as_they_went_in() -> None:
    msgs = packet_message(0, 7, b"\x45abc") + packet_message(0, 8, b"\x60" + bytes(50))
    pkts, errors = parse_packets(msgs, len(msgs))
    assert pkts == [(7, b"\x45abc"), (8, b"\x60" + bytes(50))]
    assert errors == 0


@given(st.binary(max_size=200))
def test_no_bytes_make_the_parser_raise(buf: bytes) -> None:
    parse_packets(buf, len(buf))


@given(st.integers(0, 2**32 - 1), st.binary(max_size=100), st.integers(0, 120))
def test_a_truncated_datagram_yields_whole_packets_only(pid: int, payload: bytes, cut: int) -> None:
    msg = packet_message(3, pid, payload)
    pkts, _ = parse_packets(msg, min(cut, len(msg)))
    assert pkts in ([], [(pid, payload)])


def kernel_applies(msg: bytes, queued: set[int]) -> dict[int, tuple[int, int | None]]:
    """What the kernel does with a verdict datagram: id -> (verdict, mark), in message order."""
    out: dict[int, tuple[int, int | None]] = {}
    for kind, verdict, pid, mark in parse_verdicts(msg):
        if kind == "single":
            assert pid in queued and pid not in out, (pid, "verdict for a packet not waiting")
            out[pid] = (verdict, mark)
        else:
            for q in sorted(queued):
                if q <= pid and q not in out:
                    out[q] = (verdict, mark)
    return out


def test_no_held_packet_means_one_batch_after_the_drops() -> None:
    msg = VerdictEncoder(0).encode([1, 2, 4], [3], None)
    assert [(k, v, p) for k, v, p, _ in parse_verdicts(msg)] == [
        ("single", NF_DROP, 3),
        ("batch", NF_ACCEPT, 4),
    ]


def test_a_batch_stays_below_the_lowest_held_id() -> None:
    # ids 3 and 5 resolve out of order while 4 is still held: 5 must not wait, 4 must not go
    msg = VerdictEncoder(0).encode([5, 3], [], 4)
    applied = kernel_applies(msg, {3, 4, 5})
    assert applied == {3: (NF_ACCEPT, None), 5: (NF_ACCEPT, None)}


@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=60),
)
def test_every_decided_packet_gets_its_verdict_and_no_held_one_does(fates: list[int]) -> None:
    """fates per id: 0 accept, 1 drop, 2 held, 3 accept with mark 1, 4 with mark 2."""
    ids = list(range(100, 100 + len(fates)))
    accepts = [i for i, f in zip(ids, fates, strict=True) if f == 0]
    drops = [i for i, f in zip(ids, fates, strict=True) if f == 1]
    held = [i for i, f in zip(ids, fates, strict=True) if f == 2]
    marked = [i for i, f in zip(ids, fates, strict=True) if f == 3]
    kernel = [i for i, f in zip(ids, fates, strict=True) if f == 4]
    msg = VerdictEncoder(0).encode(accepts, drops, min(held) if held else None, [(marked, 1), (kernel, 2)])
    applied = kernel_applies(msg, set(ids))
    assert {i for i, (v, m) in applied.items() if v == NF_ACCEPT and m is None} == set(accepts)
    assert {i for i, (v, m) in applied.items() if m == 1} == set(marked)
    assert {i for i, (v, m) in applied.items() if m == 2} == set(kernel)
    assert {i for i, (v, _) in applied.items() if v == NF_DROP} == set(drops)
    assert not set(held) & set(applied)
