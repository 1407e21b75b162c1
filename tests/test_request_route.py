"""What the cfg's request route does itself, before it asks the router: scanners, Max-Forwards."""

from __future__ import annotations

from typing import List, Optional

import pytest

from fakes.runtime import Endpoint, Gateway
from fakes.sipmsg import SipMessage
from fakes.ua import Network

SOURCE = Endpoint("udp", "198.51.100.9", 5060)


def options(user_agent: Optional[str] = None, max_forwards: Optional[str] = "70", call_id: str = "o1") -> SipMessage:
    headers = [
        ("Via", f"SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bK{call_id};rport"),
        ("From", "<sip:probe@198.51.100.9>;tag=p"),
        ("To", "<sip:127.0.0.1>"),
        ("Call-ID", call_id),
        ("CSeq", "1 OPTIONS"),
        ("Content-Length", "0"),
    ]
    if max_forwards is not None:
        headers.insert(1, ("Max-Forwards", max_forwards))
    if user_agent is not None:
        headers.append(("User-Agent", user_agent))
    return SipMessage("OPTIONS sip:127.0.0.1 SIP/2.0", headers)


def answers(gateway: Gateway, message: SipMessage) -> List[int]:
    return [m.status for _, m in gateway.receive(message.to_bytes(), SOURCE) if not m.is_request]


@pytest.mark.parametrize("agent", ["friendly-scanner", "sipvicious 0.3", "VaxSIPUserAgent/3.1", "Test Agent"])
def test_known_scanners_get_no_answer_at_all(agent: str) -> None:
    gateway = Gateway()
    assert answers(gateway, options(agent)) == []
    assert not any(e.kind == "exec" for e in gateway.events if "on_request" in e.text)  # the router never saw it
    assert answers(gateway, options("Yealink SIP-T46S", call_id="o2")) == [200]  # a phone's OPTIONS: 200


def test_max_forwards_zero_gets_483_and_nothing_else() -> None:
    gateway = Gateway()
    assert answers(gateway, options(max_forwards="0")) == [483]
    assert not any("on_request" in e.text for e in gateway.events if e.kind == "exec")


def test_a_relayed_request_carries_one_hop_less() -> None:
    gateway = Gateway()
    net = Network(gateway)
    alice, bob = net.phone("alice"), net.phone("bob")
    net.registered(alice, bob)
    call = net.invite(alice, "bob")
    assert bob.pending_invites[call.call_id].header("max-forwards") == "69"  # alice sent 70


@pytest.mark.parametrize(("address", "proxied"), [("10.1.2.3", True), ("192.168.7.7", True), ("198.51.100.77", False)])
def test_a_phone_not_behind_nat_whose_sdp_names_a_private_address_takes_the_media_proxy(
    address: str, proxied: bool
) -> None:
    """The request route tests the SDP itself (where it matters: an INVITE of a SIP caller not behind NAT): a
    private c= line means the phone's media would not reach the callee, so rtpengine learns where it comes
    from (SIP-source-address)."""
    from fakes.ua import SyntheticPhone

    gateway = Gateway()
    net = Network(gateway)
    carol, erin = net.phone("carol"), net.phone("erin")
    carol.media = SyntheticPhone(address)
    net.registered(carol, erin)
    call = net.invite(carol, "erin")
    offers = [e.data[0] for e in gateway.events if e.kind == "rtpengine" and e.data[0]["command"] == "offer"
              and e.data[0]["call-id"] == call.call_id]  # fmt: skip
    assert bool(offers) is proxied
    if proxied:
        assert "SIP-source-address" in offers[0].get("flags", [])
    net.reply(call, erin, 200)
    net.bye(call, "caller")


def test_an_earlier_calls_private_sdp_does_not_stick_to_the_next_call() -> None:
    """$var values outlive the message in a worker: the SDP's test is cleared for every request."""
    from fakes.ua import SyntheticPhone

    gateway = Gateway()
    net = Network(gateway)
    carol, erin, dave = net.phone("carol"), net.phone("erin"), net.phone("dave")
    carol.media = SyntheticPhone("10.1.2.3")
    net.registered(carol, erin, dave)
    first = net.invite(carol, "erin")
    assert first.rtpengine_offers()
    second = net.invite(dave, "erin")  # dave's SDP names his public address
    assert second.rtpengine_offers() == []


def test_the_ack_of_a_refused_call_is_taken_so_the_refusal_is_not_sent_again() -> None:
    gateway = Gateway()
    net = Network(gateway)
    alice, bob = net.phone("alice"), net.phone("bob")
    net.registered(alice, bob)
    call = net.invite(alice, "bob")
    net.reply(call, bob, 486)  # alice gets the 486 and ACKs it
    assert call.statuses() == [486]
    assert gateway.retransmit() == []


@pytest.mark.parametrize("method", ["CANCEL", "ACK"])
def test_a_cancel_or_ack_of_no_transaction_gets_nothing_even_after_a_reply_of_this_worker(method: str) -> None:
    """route[relay_known] relays only what tm knows; the reply case after it must not run on (a lost break would
    send the worker's last reply code to the stray request)."""
    gateway = Gateway()
    probe = options(call_id="o0")
    probe.first_line = "OPTIONS sip:nobody@127.0.0.1 SIP/2.0"
    probe.set_header("To", "<sip:nobody@127.0.0.1>")
    assert answers(gateway, probe) == [404]  # $var(gw_code) holds 404 now
    stray = options(call_id="o2")
    stray.first_line = f"{method} sip:nobody@127.0.0.1 SIP/2.0"
    stray.set_header("CSeq", f"1 {method}")
    assert answers(gateway, stray) == []
