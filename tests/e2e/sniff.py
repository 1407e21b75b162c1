"""What OpenSIPS sends from one UDP port, wherever it sends it (a packet socket on the loopback interface).

OpenSIPS answers a UDP request at the address its top Via names (RFC 3261 18.2.2: the
source address as ``received``, the Via's port, 5060 by default): the RFC 4475 messages
name ports nobody listens on, so a test reads the replies off the interface instead.
Needs CAP_NET_RAW (root); ``Sniffer.available()`` says whether it can run.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from typing import List, Optional

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


class Sniffer:
    def __init__(self, source_port: int) -> None:
        self.source_port = source_port
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("lo", 0))
        self.sock.setblocking(False)

    @staticmethod
    def available() -> Optional[str]:
        """None when a packet socket can be opened, else why not."""
        try:
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)).close()
        except (OSError, AttributeError) as exc:
            return f"no packet socket on lo ({exc}): needs root or CAP_NET_RAW"
        return None

    def close(self) -> None:
        self.sock.close()

    def _payload(self, frame: bytes) -> Optional[bytes]:
        ip = frame[14:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
            return None
        header = (ip[0] & 0x0F) * 4
        source_port, _dest, length = struct.unpack("!HHH", ip[header : header + 6])
        if source_port != self.source_port:
            return None
        return ip[header + 8 : header + length]

    def drain(self) -> None:
        self.collect(0)

    def collect(self, seconds: float, until_final: bool = False) -> List[bytes]:
        """UDP payloads sent from ``source_port`` in the next ``seconds`` (or until a final reply)."""
        found: List[bytes] = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.sock], [], [], max(left, 0))
            if not ready:
                return found
            frame, address = self.sock.recvfrom(65535)
            if address[2] == PACKET_OUTGOING:
                continue  # lo shows each packet twice: keep the received copy
            payload = self._payload(frame)
            if payload is None:
                continue
            found.append(payload)
            status = payload.split(b" ", 2)[1] if payload.startswith(b"SIP/2.0 ") else b""
            if until_final and status.isdigit() and int(status) >= 200:
                return found
