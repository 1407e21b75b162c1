"""Call scenarios run through the fake host: the tracer prints them, tests assert on them."""

from __future__ import annotations

from typing import Callable, Dict

from .ua import Network

Scenario = Callable[[Network], None]


def web_to_sip(net: Network) -> None:
    """Browser alice calls SIP phone bob (behind NAT); bob holds and resumes; alice hangs up."""
    alice, bob = net.registered(net.browser("alice"), net.phone("bob", nat=True))
    call = net.invite(alice, "bob")
    net.reply(call, bob, 180)
    net.reply(call, bob, 200)
    net.reinvite(call, "callee", hold=True)
    net.reinvite(call, "callee")
    net.bye(call, "caller")


def sip_to_web(net: Network) -> None:
    """SIP phone carol calls browser alice; alice re-INVITEs (hold); carol hangs up."""
    alice, carol = net.registered(net.browser("alice"), net.phone("carol"))
    call = net.invite(carol, "alice")
    net.reply(call, alice, 180)
    net.reply(call, alice, 200)
    net.reinvite(call, "callee", hold=True)
    net.bye(call, "caller")


def web_to_web(net: Network) -> None:
    """Browser alice calls browser dana; dana hangs up."""
    alice, dana = net.registered(net.browser("alice"), net.browser("dana", secure=False))
    call = net.invite(alice, "dana")
    net.reply(call, dana, 200)
    net.bye(call, "callee")


def sip_to_sip(net: Network) -> None:
    """Plain phone carol calls NATed phone bob (media proxy: NAT), then plain phone erin (no proxy)."""
    carol, bob, erin = net.phone("carol"), net.phone("bob", nat=True), net.phone("erin", proto="tcp")
    for ua in (carol, bob, erin):
        net.register(ua)
    call = net.invite(carol, "bob")
    net.reply(call, bob, 200)
    net.bye(call, "callee")
    call = net.invite(carol, "erin")
    net.reply(call, erin, 200)
    net.bye(call, "caller")


def late_offer(net: Network) -> None:
    """Phone carol sends an INVITE without SDP to browser alice: offer in the 200, answer in the ACK."""
    alice, carol = net.registered(net.browser("alice"), net.phone("carol"))
    call = net.invite(carol, "alice", sdp=False)
    net.reply(call, alice, 200)
    net.bye(call, "callee")


def forking(net: Network) -> None:
    """User frank is registered from a browser and a NATed phone; carol's call rings both; the phone answers."""
    web, desk, carol = net.browser("frank"), net.phone("frank", nat=True), net.phone("carol")
    for ua in (web, desk, carol):
        net.register(ua)
    call = net.invite(carol, "frank")
    net.reply(call, web, 180)
    net.reply(call, desk, 180)
    net.reply(call, desk, 200)
    net.bye(call, "caller")


def cancel_and_busy(net: Network) -> None:
    """Browser alice calls bob and cancels; then bob is busy (486)."""
    alice, bob = net.registered(net.browser("alice"), net.phone("bob", nat=True))
    call = net.invite(alice, "bob")
    net.reply(call, bob, 180)
    net.cancel(call)
    call = net.invite(alice, "bob")
    net.reply(call, bob, 486)


SCENARIOS: Dict[str, Scenario] = {
    "web-to-sip": web_to_sip,
    "sip-to-web": sip_to_web,
    "web-to-web": web_to_web,
    "sip-to-sip": sip_to_sip,
    "late-offer": late_offer,
    "forking": forking,
    "cancel-busy": cancel_and_busy,
}
