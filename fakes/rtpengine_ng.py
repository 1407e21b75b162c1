"""A real rtpengine as the fake host's backend: the ng protocol over UDP.

``RealEngine.command(ng)`` sends the dictionary ``ng_command`` built (what
OpenSIPS's rtpengine module sends) to a running rtpengine and returns its
answer, bytes decoded to str, so ``Gateway(rtpengine=RealEngine(...))`` carries
real SDP through a real rtpengine.  ``ping``, ``calls`` (ng ``list``) and
``query`` let tests see what rtpengine holds.

The wire format is ``<cookie> <bencoded dict>`` both ways.  rtpengine keeps
recent cookies and answers a repeated one from its cache without running the
command again, so every command gets a fresh cookie and a retransmission after
a lost datagram keeps its own.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Dict, List, Tuple

from . import bencode

MAX_DATAGRAM = 65535


class NgError(RuntimeError):
    """rtpengine did not answer, or answered something that is not an ng reply."""


def _from_wire(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    if isinstance(value, dict):
        return {_from_wire(k): _from_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_wire(v) for v in value]
    return value


def encode(cookie: str, ng: Dict[str, Any]) -> bytes:
    return cookie.encode("ascii") + b" " + bencode.encode(ng)


def decode(data: bytes) -> Tuple[str, Dict[str, Any]]:
    """(cookie, dictionary) of an ng datagram; NgError when it is not one."""
    cookie, sep, payload = data.partition(b" ")
    if not sep:
        raise NgError(f"no cookie in ng datagram {data[:60]!r}")
    try:
        value = bencode.decode(payload)
    except ValueError as exc:
        raise NgError(f"undecodable ng payload {payload[:60]!r}: {exc}") from None
    if not isinstance(value, dict):
        raise NgError(f"ng payload is not a dictionary: {payload[:60]!r}")
    return cookie.decode("ascii", errors="replace"), _from_wire(value)


class RealEngine:
    """A backend for ``fakes.runtime.Gateway`` that talks to a real rtpengine."""

    def __init__(self, address: Tuple[str, int], timeout: float = 2.0, attempts: int = 3) -> None:
        self.address = address
        self.timeout = timeout
        self.attempts = attempts
        self.log: List[Tuple[Dict[str, Any], Dict[str, Any]]] = []
        """Every (command, answer) pair, in order."""
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> RealEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def command(self, ng: Dict[str, Any]) -> Dict[str, Any]:
        cookie = os.urandom(8).hex()
        datagram = encode(cookie, ng)
        for _attempt in range(self.attempts):
            self._socket.sendto(datagram, self.address)
            deadline = time.monotonic() + self.timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._socket.settimeout(left)
                try:
                    data, _peer = self._socket.recvfrom(MAX_DATAGRAM)
                except socket.timeout:
                    break
                got, answer = decode(data)
                if got == cookie:  # anything else answers an earlier, abandoned command
                    self.log.append((ng, answer))
                    return answer
        raise NgError(f"rtpengine at {self.address[0]}:{self.address[1]} did not answer {ng.get('command')!r}")

    def ping(self) -> bool:
        return self.command({"command": "ping"}).get("result") == "pong"

    def calls(self) -> List[str]:
        """The Call-IDs rtpengine holds (ng ``list``)."""
        answer = self.command({"command": "list", "limit": 1000})
        if answer.get("result") != "ok":
            raise NgError(f"list failed: {answer}")
        return [str(c) for c in answer.get("calls", [])]

    def query(self, call_id: str) -> Dict[str, Any]:
        """rtpengine's view of one call (ng ``query``); ``result`` is ``error`` for an unknown one."""
        return self.command({"command": "query", "call-id": call_id})

    @property
    def sessions(self) -> Dict[str, Dict[str, Any]]:
        """Call-ID -> query answer, for ``Gateway.sessions()`` and the tracer."""
        return {call_id: self.query(call_id) for call_id in self.calls()}
