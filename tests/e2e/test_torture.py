"""The RFC 4475 torture messages sent to the real OpenSIPS over UDP and over WebSocket.

The 49 messages of RFC 4475 section 3 and test.dat (GATEWAY_TESTDATA/rfc4475, never copied into
the repository) go to the gateway one by one, as they are.  Each gets a reply or is dropped; which,
is recorded and printed (a TORTURE line each, pytest -s shows them).  Afterwards OpenSIPS is still
up, its log holds no Python traceback, and a normal SIPp call still works.  Over UDP the replies
go where each message's Via says (mostly ports nobody listens on): a packet socket on lo reads them.
Over WebSocket they come back on the connection; a connection OpenSIPS closes is opened again.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path
from typing import Dict, List

import pytest

from .conftest import Rig, need
from .sipcalls import SHORT_CALL_STEPS, call, registered
from .sniff import Sniffer
from .wsclient import Closed, WebSocket

TESTDATA = os.environ.get("GATEWAY_TESTDATA")
pytestmark = pytest.mark.skipif(
    not TESTDATA, reason="GATEWAY_TESTDATA is not set (the RFC 4475 messages live in ../shared/testdata)"
)
WAIT = 0.5  # seconds a message may take to be answered before it counts as dropped


def messages() -> List[Path]:
    files = sorted((Path(TESTDATA or ".") / "rfc4475").glob("*.dat"))
    assert len(files) == 50, f"{len(files)} files: the 49 of RFC 4475 section 3 and test.dat"
    return files


def call_id(message: bytes) -> str:
    found = re.search(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", message, re.I | re.M)
    return found.group(1).decode("utf-8", "replace") if found else ""


def is_final(reply: bytes) -> bool:
    return re.match(rb"SIP/2\.0 [2-6]\d\d ", reply) is not None


class Answers:
    """Replies by the Call-ID they answer: one that comes late is still its own message's."""

    def __init__(self) -> None:
        self.names: Dict[str, str] = {}
        self.replies: Dict[str, List[bytes]] = {}

    def sent(self, name: str, message: bytes) -> str:
        self.names.setdefault(call_id(message), name)
        self.replies.setdefault(name, [])
        return name

    def got(self, reply: bytes, current: str) -> bool:
        """Keep a reply; True when it is the final one to the message now waiting."""
        name = self.names.get(call_id(reply), current)
        self.replies.setdefault(name, []).append(reply)
        return name == current and is_final(reply)

    def outcomes(self) -> Dict[str, str]:
        found = {}
        for name, replies in self.replies.items():
            lines = [r.split(b"\r\n", 1)[0].decode("utf-8", "replace") for r in replies]
            statuses = [line[len("SIP/2.0 ") :] for line in lines if line.startswith("SIP/2.0 ")]
            found[name] = " + ".join(statuses) if statuses else "dropped (no reply)"
        return found


def survived(rig: Rig, work: Path, transport: str, outcomes: Dict[str, str], alive_after: int, offset: int) -> None:
    """``offset``: the size of OpenSIPS's log before the messages went (what they made it log comes after)."""
    for name, outcome in outcomes.items():
        print(f"TORTURE opensips-{rig.gw.version} {transport} {name}: {outcome}")
    replied = sum(1 for o in outcomes.values() if not o.startswith("dropped"))
    print(f"FIGURE opensips-{rig.gw.version}: {transport}: {len(outcomes)} torture messages tried, "
          f"{alive_after} survived (OpenSIPS still up after each), {replied} answered, "
          f"{len(outcomes) - replied} dropped")  # fmt: skip
    assert alive_after == len(outcomes) and rig.gw.alive(), rig.gw.log()[-3000:]
    logged = rig.log_since(offset)
    assert "Traceback" not in logged
    assert not re.search(r"CRITICAL|segfault|core dump", logged)
    caller, callee = registered(rig, work, "aftertort"), registered(rig, work, "aftertortee")
    call(rig, work, caller, callee, *SHORT_CALL_STEPS, name=f"after-{transport}")


def test_torture_messages_over_udp(gateway: Rig, work: Path) -> None:
    need("sipp")
    why = Sniffer.available()
    if why:
        pytest.skip(why)
    sniffer = Sniffer(gateway.gw.ports.sip)
    answers = Answers()
    offset = gateway.log_size()
    alive_after = 0
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            for path in messages():
                message = path.read_bytes()
                current = answers.sent(path.stem, message)
                sock.sendto(message, gateway.sip)
                deadline = time.monotonic() + WAIT
                while time.monotonic() < deadline:
                    left = deadline - time.monotonic()
                    if any(answers.got(reply, current) for reply in sniffer.collect(left, until_final=True)):
                        break
                alive_after += gateway.gw.alive()
            for reply in sniffer.collect(WAIT):  # late ones
                answers.got(reply, "")
    finally:
        sniffer.close()
    outcomes = answers.outcomes()
    assert len(outcomes) == 50
    survived(gateway, work, "udp", outcomes, alive_after, offset)


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
def test_torture_messages_over_websocket(gateway: Rig, work: Path, secure: bool) -> None:
    need("sipp")
    port = gateway.gw.ports.wss if secure else gateway.gw.ports.ws
    transport = "wss" if secure else "ws"
    answers = Answers()
    offset = gateway.log_size()
    alive_after = 0
    closed: List[str] = []
    ws = None
    try:
        for path in messages():
            if ws is None:
                status, _, ws = WebSocket.handshake(port, secure)
                assert status == 101 and ws is not None, status
            message = path.read_bytes()
            current = answers.sent(path.stem, message)
            ws.send(message)
            deadline = time.monotonic() + WAIT
            try:
                while time.monotonic() < deadline:
                    reply = ws.receive(deadline - time.monotonic())
                    if reply is None or answers.got(reply, current):
                        break
            except Closed:
                closed.append(path.stem)
                ws = None
            alive_after += gateway.gw.alive()
        while ws is not None and (reply := ws.receive(WAIT)) is not None:  # late ones
            answers.got(reply, "")
    finally:
        if ws is not None:
            ws.close()
    outcomes = answers.outcomes()
    for name in closed:
        outcomes[name] += ", then OpenSIPS closed the connection"
    assert len(outcomes) == 50
    survived(gateway, work, transport, outcomes, alive_after, offset)
