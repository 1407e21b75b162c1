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
import threading
import time
from typing import Dict, List, Optional, TypeVar

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def lo_socket() -> socket.socket:
    """A packet socket on the loopback interface, every protocol, not blocking."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind(("lo", 0))
    sock.setblocking(False)
    return sock


class Sniffer:
    def __init__(self, source_port: int) -> None:
        self.source_port = source_port
        self.sock = lo_socket()

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


#: RFC 4733 event codes of the DTMF digits.
EVENTS = "0123456789*#ABCD"


W = TypeVar("W", bound="Watch")


class Watch:
    """Packets on the loopback interface, read off a packet socket by a thread until the ``with`` ends:
    each received IPv4 packet goes to ``_take``."""

    def __init__(self) -> None:
        self.sock = lo_socket()

    def __enter__(self: W) -> W:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            frame, address = self.sock.recvfrom(65535)
            if address[2] == PACKET_OUTGOING:
                continue
            ip = frame[14:]
            if len(ip) >= 28 and ip[0] >> 4 == 4:
                self._take(ip, (ip[0] & 0x0F) * 4)

    def _take(self, ip: bytes, header: int) -> None:
        raise NotImplementedError


#: TCP's flags byte: SYN alone opens a connection (SYN+ACK answers one).
SYN, ACK = 0x02, 0x10


class Connects(Watch):
    """TCP connections opened toward one port of 127.0.0.1, counted by their first packet (SYN), whether
    anything listens there or not, and whatever holds the port (a closed connection's TIME_WAIT)."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port
        self.attempts = 0

    def _take(self, ip: bytes, header: int) -> None:
        if ip[9] != socket.IPPROTO_TCP or ip[16:20] != socket.inet_aton("127.0.0.1"):
            return
        dest, flags = struct.unpack("!H", ip[header + 2 : header + 4])[0], ip[header + 13]
        if dest == self.port and flags & (SYN | ACK) == SYN:
            self.attempts += 1


class RtpSniffer(Watch):
    """RTP packets delivered to one UDP port on the loopback interface (a phone's or a browser's media
    port), read off a packet socket: their payload types, and the DTMF digits of RFC 4733 events.  An
    SRTP packet's RTP header is in clear: its payload type is readable, its payload is not."""

    def __init__(self, dest_port: Optional[int] = None, source_port: Optional[int] = None) -> None:
        """Packets to ``dest_port`` (a SIP phone's media port), or from ``source_port`` (rtpengine's port
        facing a browser: the browser's ICE may pick any address of its host, the machine's own too)."""
        assert (dest_port is None) != (source_port is None), "one of dest_port and source_port"
        super().__init__()
        self.dest_port = dest_port
        self.source_port = source_port
        self.packets: List[bytes] = []

    def _take(self, ip: bytes, header: int) -> None:
        """Keeps the RTP packets (UDP payloads) delivered to the port."""
        if ip[9] != socket.IPPROTO_UDP:
            return
        source, dest, length = struct.unpack("!HHH", ip[header : header + 6])
        payload = ip[header + 8 : header + length]
        port, wanted = (source, self.source_port) if self.source_port is not None else (dest, self.dest_port)
        if port == wanted and len(payload) >= 12 and payload[0] >> 6 == 2:
            self.packets.append(payload)

    def payload_types(self) -> Dict[int, int]:
        """Packets per RTP payload type (RTCP, multiplexed or not, left out)."""
        found: Dict[int, int] = {}
        for packet in self.packets:
            if 72 <= packet[1] & 0x7F <= 76:
                continue  # RTCP's packet types 200-204 read as marker + 72-76
            pt = packet[1] & 0x7F
            found[pt] = found.get(pt, 0) + 1
        return found

    def events(self, pt: int) -> List[int]:
        """The RTP timestamps of the RFC 4733 events of payload type ``pt``, one per event: its first packet
        has the marker bit (RFC 4733 2.5.1.1; the event's later packets, end packets sent three times
        among them, have none)."""
        return [struct.unpack("!I", p[4:8])[0] for p in self.packets if p[1] & 0x7F == pt and p[1] & 0x80]

    def digits(self, pt: int) -> str:
        """The DTMF digits of the RFC 4733 events of payload type ``pt`` (plain RTP only: SRTP's payload
        is encrypted), in the order they came."""
        found: Dict[int, str] = {}
        for packet in self.packets:
            if packet[1] & 0x7F != pt:
                continue
            skip = 12 + 4 * (packet[0] & 0x0F)
            if packet[0] & 0x10:  # a header extension
                skip += 4 + 4 * struct.unpack("!H", packet[skip + 2 : skip + 4])[0]
            if len(packet) > skip and packet[skip] < len(EVENTS):
                found.setdefault(struct.unpack("!I", packet[4:8])[0], EVENTS[packet[skip]])
        return "".join(found.values())
