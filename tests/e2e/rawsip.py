"""SIP by hand over UDP: requests built byte by byte, replies read back, timed.

For what SIPp makes awkward: a burst of requests from one loopback address, a
request carrying a marker header, the time from an INVITE to its final answer.
Every wait is bounded.
"""

from __future__ import annotations

import itertools
import socket
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

_ids = itertools.count(1)

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 49170 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
)


@dataclass
class Reply:
    status: int
    reason: str
    text: str
    seconds: float
    """From the request's sending to this reply."""

    def header(self, name: str) -> Optional[str]:
        for line in self.text.split("\r\n")[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                return value.strip()
        return None


def parse_reply(data: bytes, seconds: float) -> Optional[Reply]:
    text = data.decode("utf-8", "replace")
    first = text.split("\r\n", 1)[0].split(" ", 2)
    if len(first) < 2 or not first[0].startswith("SIP/") or not first[1].isdigit():
        return None
    return Reply(int(first[1]), first[2] if len(first) > 2 else "", text, seconds)


class SipSocket:
    """A UDP SIP client bound to ``host`` (any 127.x address: a distinct source for pike)."""

    def __init__(self, gateway: Tuple[str, int], host: str = "127.0.0.1") -> None:
        self.gateway = gateway
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        ruri: str,
        from_uri: Optional[str] = None,
        to_uri: Optional[str] = None,
        headers: Sequence[str] = (),
        body: str = "",
        call_id: str = "",
        to_tag: str = "",
        cseq: int = 1,
        branch: str = "",
    ) -> bytes:
        n = next(_ids)
        from_uri = from_uri or f"sip:raw{n}@{self.host}"
        to_uri = to_uri or ruri
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch or f'z9hG4bKraw{time.time_ns()}x{n}'};rport",
            f"From: <{from_uri}>;tag=raw{n}",
            f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id or f'raw-{time.time_ns()}-{n}@{self.host}'}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:raw{n}@{self.host}:{self.port}>",
            "Max-Forwards: 70",
            *headers,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def send(self, data: bytes) -> float:
        self.sock.sendto(data, self.gateway)
        return time.monotonic()

    def replies(self, started: float, timeout: float, final: bool = True) -> List[Reply]:
        """Replies until a final one (or, with ``final=False``, all) within ``timeout`` seconds."""
        found: List[Reply] = []
        deadline = started + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return found
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65535)
            except (socket.timeout, ConnectionRefusedError):
                return found
            reply = parse_reply(data, time.monotonic() - started)
            if reply is None:
                continue
            found.append(reply)
            if final and reply.status >= 200:
                return found

    def final(self, data: bytes, timeout: float = 10.0) -> Optional[Reply]:
        """Send a request; its final reply (ACKed when it is a failure to an INVITE), or None in time."""
        started = self.send(data)
        got = [r for r in self.replies(started, timeout) if r.status >= 200]
        if not got:
            return None
        reply = got[0]
        if data.startswith(b"INVITE ") and reply.status >= 300:
            self.send(ack_for(data, reply))
        return reply


def ack_for(invite: bytes, reply: Reply) -> bytes:
    """The hop-by-hop ACK of a failed INVITE (RFC 3261 17.1.1.3): its Via, From, Call-ID; the reply's To."""
    head = invite.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")  # the body need not be UTF-8
    ruri = head[0].split(" ")[1]
    keep = [line for line in head[1:] if line.split(":", 1)[0].lower() in ("via", "from", "call-id", "max-forwards")]
    cseq = next(line for line in head if line.lower().startswith("cseq:")).split()[1]
    to = reply.header("To") or ""
    lines = [f"ACK {ruri} SIP/2.0", *keep, f"To: {to}", f"CSeq: {cseq} ACK", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
