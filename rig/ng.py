"""rtpengine's ng control protocol: a client, and a recording relay to put between OpenSIPS and rtpengine.

The relay lets a test see every command OpenSIPS really sends for our flag
strings (the contract with ``fakes/rtpengine.py``) and every answer, including
the packet counters in a ``delete`` answer: the media each leg sent and got.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from . import bencode

Address = Tuple[str, int]


def command(engine: Address, ng: Dict[str, Any], timeout: float = 3.0) -> Dict[str, Any]:
    """Send one ng command and return rtpengine's answer."""
    cookie = f"t{os.getpid()}_{next(_cookies)}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        sock.sendto(cookie.encode() + b" " + bencode.encode(ng), engine)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data, _ = sock.recvfrom(65535)
            got, _, payload = data.partition(b" ")
            if got.decode() == cookie:
                answer: Dict[str, Any] = bencode.decode(payload)
                return answer
    raise TimeoutError(f"rtpengine at {engine} did not answer {ng.get('command')}")


_cookies = itertools.count(1)


def call_ids(engine: Address) -> List[str]:
    """The calls rtpengine holds now (``list``)."""
    answer = command(engine, {"command": "list", "limit": "1000"})
    return list(answer.get("calls", []))


@dataclass
class Exchange:
    """One command OpenSIPS sent and the answer it got."""

    sent: Dict[str, Any]
    answer: Optional[Dict[str, Any]] = None
    final_query: Optional[Dict[str, Any]] = None
    """For a ``delete``: rtpengine's ``query`` of the call just before it (its delete answer has no stats)."""
    at: float = field(default_factory=time.monotonic)


class Relay:
    """A UDP relay on 127.0.0.1 that forwards ng traffic both ways and keeps what passed.

    Faults for tests: ``delay`` holds each answer that many seconds (a slow rtpengine);
    ``pause()`` closes the port, so OpenSIPS finds it as it finds a stopped rtpengine (ICMP
    port unreachable), and ``resume()`` opens the same port again.
    """

    def __init__(self, engine: Address) -> None:
        self.engine = engine
        self.delay = 0.0
        self.exchanges: List[Exchange] = []
        self._by_cookie: Dict[bytes, Tuple[Address, Exchange]] = {}
        self._lock = threading.Lock()
        self._timers: List[threading.Timer] = []
        self._open(("127.0.0.1", 0))

    def _open(self, address: Address) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.address: Address = self.sock.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ng-relay", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """Close the port: OpenSIPS's commands now meet a closed port, as with a stopped rtpengine."""
        self.close()

    def resume(self) -> None:
        self._open(self.address)

    def _answer(self, data: bytes, target: Address) -> None:
        if self.delay <= 0:
            self.sock.sendto(data, target)
            return
        sock = self.sock

        def late() -> None:
            try:
                sock.sendto(data, target)
            except OSError:
                pass  # the relay was closed meanwhile

        timer = threading.Timer(self.delay, late)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.sock], [], [], 0.2)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data, source = self.sock.recvfrom(65535)
            except ConnectionRefusedError:
                continue  # Linux reports a stopped rtpengine's ICMP on the next read
            except OSError:
                return
            cookie, _, payload = data.partition(b" ")
            try:
                decoded = bencode.decode(payload)
            except (ValueError, IndexError):
                decoded = {"undecodable": payload[:200].decode("latin-1")}
            with self._lock:
                if source == self.engine:
                    pending = self._by_cookie.pop(cookie, None)
                    if pending is None:
                        continue
                    client, exchange = pending
                    exchange.answer = decoded
                    target = client
                else:
                    exchange = Exchange(decoded)
                    self.exchanges.append(exchange)
                    self._by_cookie[cookie] = (source, exchange)
                    target = self.engine
            if exchange.sent.get("command") == "delete" and source != self.engine:
                exchange.final_query = self._query(str(exchange.sent.get("call-id", "")))
            try:
                if source == self.engine:
                    self._answer(data, target)
                else:
                    self.sock.sendto(data, target)
            except OSError:
                continue  # e.g. rtpengine stopped: the command is lost, as it would be

    def _query(self, call_id: str) -> Optional[Dict[str, Any]]:
        try:
            return command(self.engine, {"command": "query", "call-id": call_id}, timeout=1.0)
        except (OSError, TimeoutError):
            return None

    def commands(self, call_id: Optional[str] = None) -> List[Exchange]:
        """What OpenSIPS sent (pings left out), for one Call-ID or all."""
        with self._lock:
            found = [e for e in self.exchanges if e.sent.get("command") != "ping"]
        return [e for e in found if call_id is None or e.sent.get("call-id") == call_id]

    def wait_for(self, call_id: str, command_name: str, timeout: float = 10.0) -> Exchange:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for exchange in self.commands(call_id):
                if exchange.sent.get("command") == command_name and exchange.answer is not None:
                    return exchange
            time.sleep(0.05)
        raise TimeoutError(f"no answered {command_name} for {call_id} within {timeout}s")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()


def packet_counts(query_answer: Optional[Dict[str, Any]]) -> Dict[str, int]:
    """Packets rtpengine received from each tag (leg), from the stats in a ``query`` answer."""
    counts: Dict[str, int] = {}
    for tag, info in ((query_answer or {}).get("tags") or {}).items():
        total = 0
        for media in info.get("medias", []):
            for stream in media.get("streams", []):
                total += int(stream.get("stats", {}).get("packets", 0))
        counts[tag] = total
    return counts
