"""A SIP message over TCP or TLS that arrives in many pieces, as a phone on a slow or busy link may send it:
OpenSIPS reads it whole and answers over the same connection.

OpenSIPS closes a connection whose message is still incomplete after a number of reads (proto_tcp's
tcp_max_msg_chunks, proto_tls's tls_max_msg_chunks: 4 by default; each TLS record that arrives is a read).  A
baresip call over TLS lost its connection that way on a loaded machine ("Made 4 read attempts but message is
not complete yet - closing connection"), and a phone over TLS cannot be reached again until it reconnects:
OpenSIPS opens no TLS connection toward a phone.  opensips.cfg allows 16 (docs/host-facts.md).
"""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from typing import Union

import pytest

from .conftest import Rig

PIECES = 10
PAUSE = 0.1  # seconds between pieces: each one a read of its own for OpenSIPS


def options(transport: str, port: int) -> bytes:
    tag = uuid.uuid4().hex[:8]
    lines = [
        "OPTIONS sip:127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} 127.0.0.1:{port};branch=z9hG4bK{tag};rport",
        "Max-Forwards: 70",
        f"From: <sip:fragments@127.0.0.1>;tag={tag}",
        "To: <sip:127.0.0.1>",
        f"Call-ID: fragments-{tag}@127.0.0.1",
        "CSeq: 1 OPTIONS",
        "User-Agent: a phone on a slow link",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def reply_to_pieces(sock: Union[socket.socket, ssl.SSLSocket], data: bytes) -> bytes:
    """Send ``data`` in PIECES writes, PAUSE apart; what came back before the connection closed or 5 s passed."""
    size = -(-len(data) // PIECES)
    for start in range(0, len(data), size):
        sock.sendall(data[start : start + size])
        time.sleep(PAUSE)
    got = b""
    deadline = time.monotonic() + 5
    while b"\r\n\r\n" not in got and time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except (ConnectionError, ssl.SSLError, socket.timeout):
            break
        if not chunk:
            break  # OpenSIPS closed the connection
        got += chunk
    return got


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_a_message_that_arrives_in_many_pieces_is_read_whole(gateway: Rig, transport: str) -> None:
    port = gateway.gw.ports.tls if transport == "tls" else gateway.gw.ports.sip
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each piece a segment (and a TLS record) of its own
    sock: Union[socket.socket, ssl.SSLSocket] = raw
    if transport == "tls":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(raw, server_hostname="localhost")
    with sock:
        reply = reply_to_pieces(sock, options(transport, sock.getsockname()[1]))
    assert reply.startswith(b"SIP/2.0 "), f"no reply to a message in {PIECES} pieces over {transport}: {reply!r}"
