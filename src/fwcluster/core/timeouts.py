"""Per-state timeouts, in seconds. Defaults are the Linux kernel's (nf_conntrack sysctls)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Timeouts:
    # nf_conntrack_tcp_timeout_* (net/netfilter/nf_conntrack_proto_tcp.c)
    tcp_syn_sent: float = 120.0
    tcp_syn_recv: float = 60.0
    tcp_established: float = 432000.0  # 5 days
    tcp_fin_wait: float = 120.0
    tcp_close_wait: float = 60.0
    tcp_last_ack: float = 30.0
    tcp_time_wait: float = 120.0
    tcp_close: float = 10.0
    tcp_syn_sent2: float = 120.0
    # nf_conntrack_udp_timeout / _stream: unreplied vs. seen traffic both ways
    udp: float = 30.0
    udp_stream: float = 120.0
    # nf_conntrack_icmp_timeout / icmpv6
    icmp: float = 30.0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
