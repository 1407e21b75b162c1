"""Free loopback ports, away from the media ranges other rtpengine users on this machine take."""

from __future__ import annotations

import random
import socket
from typing import Tuple

#: Ports never handed out: another engineer's rtpengine media (30000-34999) and ours (35000-39999).
RESERVED = range(30000, 40000)
#: Where ports are drawn from when the kernel's own pick falls in RESERVED.
POOL = range(40000, 60000)


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


def free_port(udp: bool = True, tcp: bool = True, even: bool = False) -> int:
    """A port free on 127.0.0.1 for the transports asked (both by default); bounded number of tries."""
    kinds = tuple(k for k, wanted in ((socket.SOCK_DGRAM, udp), (socket.SOCK_STREAM, tcp)) if wanted)
    for attempt in range(200):
        if attempt == 0:
            probe = socket.socket(socket.AF_INET, kinds[0])
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
            probe.close()
        else:
            port = random.choice(POOL)
        if port in RESERVED or (even and port % 2):
            continue
        if _bindable(port, kinds) and (not even or _bindable(port + 1, kinds)):
            return port
    raise RuntimeError("no free loopback port found in 200 tries")


def media_range(size: int = 400) -> Tuple[int, int]:
    """A block of rtpengine media ports inside 35000-39999, picked so concurrent rigs rarely share one."""
    blocks = (40000 - 35000) // size
    start = 35000 + random.randrange(blocks) * size
    return start, start + size - 1
