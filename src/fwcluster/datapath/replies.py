"""Send the core's REJECT answers (TCP RST, ICMP unreachable) as raw IP packets."""

from __future__ import annotations

import socket


class ReplySender:
    """Raw IPPROTO_RAW sockets: the answer carries its own IP header (v4 and v6)."""

    def __init__(self) -> None:
        self._v4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self._v6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self._v4.setblocking(False)
        self._v6.setblocking(False)

    def send(self, packet: bytes) -> None:
        if packet[0] >> 4 == 4:
            self._v4.sendto(packet, (socket.inet_ntop(socket.AF_INET, packet[16:20]), 0))
        else:
            self._v6.sendto(packet, (socket.inet_ntop(socket.AF_INET6, packet[24:40]), 0))

    def close(self) -> None:
        self._v4.close()
        self._v6.close()
