"""Free loopback ports for the rig's listeners: below the kernel's ephemeral range, away from media ranges.

A port handed to a SIPp phone is often not held between its runs (registered by one SIPp, called
in a later one). A port from the ephemeral range can be taken meanwhile by any outgoing socket: a
restarted OpenSIPS opening its rtpengine control sockets took one in CI, and the phone's next SIPp
failed to bind (exit 254). So ports are drawn from below that range only."""

from __future__ import annotations

import random
import socket
from typing import Set, Tuple

#: The benchmark's rtpengine media (bench/run.py MEDIA_PORTS): below the ephemeral range too, where
#: no outgoing socket takes one (SIPp -t un opens one per call: thousands at 1,500 calls/s).
BENCH_MEDIA = range(20000, 30000)
#: Ports never handed out: the benchmark's media, other rtpengines' media on this machine (30000-34999,
#: 40000-44999 seen in use) and the rig's (35000-39999).
RESERVED = range(20000, 45000)
#: Where ports are drawn from: under the ephemeral range (Linux's default starts at 32768).
POOL = range(10000, 20000)


def ephemeral() -> range:
    """The kernel's ephemeral port range (where outgoing sockets get theirs)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low, high = (int(x) for x in fh.read().split())
        return range(low, high + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def _bindable(port: int, kinds: Tuple[int, ...]) -> bool:
    sockets = []
    try:
        for kind in kinds:
            sock = socket.socket(socket.AF_INET, kind)
            sockets.append(sock)
            sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for sock in sockets:
            sock.close()


#: Ports this process already handed out: never handed out twice, so two SIPp
#: phones cannot get overlapping media blocks (SIPp binds media_port and +2).
_handed: Set[int] = set()


def free_port(udp: bool = True, tcp: bool = True, even: bool = False, span: int = 1) -> int:
    """A port (with ``span - 1`` after it) free on 127.0.0.1 for the transports asked; bounded number of tries."""
    kinds = tuple(k for k, wanted in ((socket.SOCK_DGRAM, udp), (socket.SOCK_STREAM, tcp)) if wanted)
    ephemeral_ports = ephemeral()
    for _ in range(200):
        port = random.choice(POOL)
        block = range(port, port + max(span, 2 if even else 1))
        if any(p in RESERVED or p in ephemeral_ports or p in _handed for p in block) or (even and port % 2):
            continue
        if all(_bindable(p, kinds) for p in block):
            _handed.update(block)
            return port
    raise RuntimeError("no free loopback port found in 200 tries")


def media_range(size: int = 400) -> Tuple[int, int]:
    """A block of rtpengine media ports inside 35000-39999, picked so concurrent rigs rarely share one."""
    blocks = (40000 - 35000) // size
    start = 35000 + random.randrange(blocks) * size
    return start, start + size - 1
