"""A SIP caller not behind NAT whose SDP names a private address takes the media proxy.

The cfg tests the body itself (`$rb =~` gateway.sdp.PRIVATE_SDP, POSIX, on the
bytes) and hands the router the answer: these calls check that the real
OpenSIPS compiles that expression and finds what the Python one finds, on an
SDP that is UTF-8 and on one that is not.  Caller and callee are raw UDP
sockets whose Contact is `localhost` (a name: nathelper sees no NAT); the
callee answers 486, so the failure route deletes what the offer opened.
"""

from __future__ import annotations

import socket
import time
from typing import Optional, Tuple

import pytest

from .conftest import Rig
from .rawsip import SipSocket, ack_for
from .sipcalls import settle

PUBLIC = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"
MEDIA = "m=audio 49170 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
PRIVATE = PUBLIC.replace("c=IN IP4 198.51.100.7", "c=IN IP4 192.168.1.5")
CASES = {
    "public": (PUBLIC + MEDIA).encode(),
    "private": (PRIVATE + MEDIA).encode(),
    "private, not UTF-8": (PRIVATE.replace("s=-", "s=caf\xe9") + MEDIA).encode("latin-1"),
    "private, media level": (PUBLIC + MEDIA.replace("RTP/AVP 8\r\n", "RTP/AVP 8\r\nc=IN IP4 10.1.2.3\r\n")).encode(),
    "private IPv6": (PUBLIC.replace("c=IN IP4 198.51.100.7", "c=IN IP6 FD00::5") + MEDIA).encode(),
}


def with_localhost_contact(request: bytes, sock: SipSocket) -> bytes:
    return request.replace(f"@{sock.host}:{sock.port}>".encode(), f"@localhost:{sock.port}>".encode(), 1)


def with_body(request: bytes, body: bytes) -> bytes:
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    head = [line for line in head if not line.lower().startswith(b"content-length:")]
    head += [b"Content-Type: application/sdp", b"Content-Length: %d" % len(body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def receive_request(sock: SipSocket, method: bytes, timeout: float) -> Optional[Tuple[bytes, Tuple[str, int]]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data, peer = sock.sock.recvfrom(65535)
        except socket.timeout:
            return None
        if data.startswith(method + b" "):
            return data, peer
    return None


def busy_reply(request: bytes) -> bytes:
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    keep = [
        line for line in head[1:] if line.split(b":", 1)[0].strip().lower() in (b"via", b"from", b"call-id", b"cseq")
    ]
    to = next(line for line in head if line.lower().startswith(b"to:"))
    return b"\r\n".join([b"SIP/2.0 486 Busy Here", *keep, to + b";tag=busy1", b"Content-Length: 0"]) + b"\r\n\r\n"


@pytest.mark.parametrize("case", list(CASES))
def test_a_private_address_in_a_plain_callers_sdp_takes_the_media_proxy(gateway: Rig, case: str) -> None:
    body = CASES[case]
    index = list(CASES).index(case)
    with (
        SipSocket(gateway.sip, "127.0.0.1") as callee,  # where its Contact, localhost, leads
        SipSocket(gateway.sip, f"127.0.0.{90 + index}") as caller,
    ):
        name = f"priv{index}x{time.time_ns() % 100000}"
        aor = f"sip:{name}@127.0.0.1"
        register = with_localhost_contact(
            callee.request("REGISTER", "sip:127.0.0.1", from_uri=aor, to_uri=aor, headers=["Expires: 60"]), callee
        )
        reply = callee.final(register, timeout=5)
        assert reply is not None and reply.status == 200, reply

        invite = with_body(with_localhost_contact(caller.request("INVITE", aor), caller), body)
        call_id = invite.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
        started = caller.send(invite)
        relayed = receive_request(callee, b"INVITE", 5)
        assert relayed is not None, "the INVITE never reached the callee"
        data, peer = relayed
        callee.sock.sendto(busy_reply(data), peer)
        final = [r for r in caller.replies(started, 10) if r.status >= 200]
        assert final and final[0].status == 486, final
        caller.send(ack_for(invite, final[0]))

        offered = [e for e in gateway.relay.commands(call_id) if e.sent.get("command") == "offer"]
        relayed_body = data.split(b"\r\n\r\n", 1)[1]
        if case == "public":
            assert offered == [] and relayed_body == body  # no media proxy: the SDP goes as it came
        else:
            assert len(offered) == 1, gateway.relay.commands(call_id)
            assert not any(a in relayed_body.lower() for a in (b"192.168.1.5", b"10.1.2.3", b"fd00::5")), relayed_body
            gateway.relay.wait_for(call_id, "delete")  # the failure route released it
        settle(gateway, call_id)
        print(f"FIGURE opensips-{gateway.gw.version}: {case} SDP from a plain caller: {len(offered)} offer(s)")
