"""The ng wire format and client, without an rtpengine (a UDP socket on 127.0.0.1 plays it)."""

from __future__ import annotations

import socket
import threading
from typing import List

import pytest

from fakes import bencode
from fakes.rtpengine_ng import NgError, RealEngine, decode, encode


def test_bencode_round_trip_with_sorted_keys() -> None:
    data = encode("c1", {"command": "offer", "flags": ["a", "b"], "delete-delay": 0, "ICE": "force"})
    assert data == b"c1 d3:ICE5:force7:command5:offer12:delete-delayi0e5:flagsl1:a1:bee"
    assert decode(data) == ("c1", {"ICE": "force", "command": "offer", "delete-delay": 0, "flags": ["a", "b"]})


def test_rtpengine_replies_with_unsorted_keys_decode() -> None:
    assert decode(b"x d6:result2:ok3:sdp3:v=0e") == ("x", {"result": "ok", "sdp": "v=0"})


@pytest.mark.parametrize("bad", [b"nocookie", b"c d6:result", b"c i1e", b"c d1:ai1ee junk", b"c d5:x"])
def test_malformed_datagrams_raise_ng_error(bad: bytes) -> None:
    with pytest.raises(NgError):
        decode(bad)


def test_bencode_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(TypeError):
        bencode.encode({"x": 1.5})


def test_client_ignores_stale_cookies_and_raises_when_nobody_answers() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(2.0)
        seen: List[str] = []

        def answer_once() -> None:
            data, peer = server.recvfrom(65535)
            cookie, ng = decode(data)
            seen.append(ng["command"])
            server.sendto(encode("stale", {"result": "ok"}), peer)  # an answer to something else
            server.sendto(encode(cookie, {"result": "pong"}), peer)

        worker = threading.Thread(target=answer_once)
        worker.start()
        with RealEngine(server.getsockname(), timeout=2.0) as engine:
            assert engine.ping()
            worker.join(5)
            assert seen == ["ping"]
            assert engine.log == [({"command": "ping"}, {"result": "pong"})]
            engine.timeout, engine.attempts = 0.05, 2
            with pytest.raises(NgError, match="did not answer"):
                engine.command({"command": "ping"})
