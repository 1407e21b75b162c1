"""No relay through a forged in-dialog request: rr's loose_route() follows any Route, ours or not.

The real OpenSIPS 3.6.8 and 4.0.1 relayed a MESSAGE from sip:evil@evil.example with a made-up
To-tag and ``Route: <sip:127.0.0.1:PORT;lr>`` to that port (tests/e2e/test_intruders.py): any
in-dialog-looking request became an open relay.  Only requests of one of our dialogs are relayed now,
by the router and by the cfg's fail-safe alike.
"""

from __future__ import annotations

from typing import List, Tuple

import pytest

from fakes.runtime import Endpoint, Gateway
from fakes.sipmsg import SipMessage
from fakes.ua import Network
from gateway.settings import Settings

OUTSIDE = Endpoint("udp", "203.0.113.9", 5060)


def forged(method: str, route: str) -> bytes:
    return (
        f"{method} sip:victim@198.51.100.20 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bKforged1\r\n"
        "From: <sip:evil@evil.example>;tag=a1\r\n"
        "To: <sip:victim@other.example>;tag=b2\r\n"
        "Call-ID: forged-1\r\n"
        f"CSeq: 5 {method}\r\n"
        f"Route: {route}\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def sent(out: List[Tuple[Endpoint, SipMessage]]) -> Tuple[List[str], List[SipMessage]]:
    replies = [m.first_line for _, m in out if not m.is_request]
    relayed = [m for _, m in out if m.is_request]
    return replies, relayed


@pytest.mark.parametrize("method", ["MESSAGE", "INVITE", "BYE", "OPTIONS"])
@pytest.mark.parametrize("route", ["<sip:198.51.100.20;lr>", "<sip:127.0.0.1:5999;lr>"])
def test_a_forged_in_dialog_request_is_refused_not_relayed(method: str, route: str) -> None:
    gateway = Gateway(Settings())
    replies, relayed = sent(gateway.receive(forged(method, route), OUTSIDE))
    assert relayed == []
    assert replies == ["SIP/2.0 404 Not Here"]


def test_a_forged_ack_is_absorbed() -> None:
    gateway = Gateway(Settings())
    replies, relayed = sent(gateway.receive(forged("ACK", "<sip:198.51.100.20;lr>"), OUTSIDE))
    assert replies == [] and relayed == []


def test_a_broken_router_does_not_relay_it_either() -> None:
    # The cfg matches in-dialog requests itself (loose_route, $DLG_status) before any Python runs.
    gateway = Gateway(Settings(), strict=False)

    def broken(msg: object, facts: str = "") -> int:
        raise RuntimeError("boom")

    gateway.router.on_request = gateway.router.on_in_dialog = broken
    replies, relayed = sent(gateway.receive(forged("BYE", "<sip:198.51.100.20;lr>"), OUTSIDE))
    assert relayed == [] and replies == ["SIP/2.0 404 Not Here"]
    assert gateway.python_failures == 0


def test_requests_of_our_own_dialogs_are_still_relayed() -> None:
    net = Network(Gateway(Settings()))
    alice, bob = net.registered(net.browser("alice"), net.phone("bob"))
    call = net.invite(alice, "bob")
    net.reply(call, bob, 200)
    assert call.established
    net.reinvite(call, "callee", hold=True)
    net.bye(call, "caller")
    assert net.gateway.sessions() == [] and net.gateway.dialogs == {}
