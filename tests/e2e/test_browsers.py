"""Browsers (JsSIP in headless Chromium, WSS) and SIP phones (SIPp) call each other through the real gateway.

Audio both ways is read from the browser's getStats (outbound and inbound RTP
packets growing) and from rtpengine's counters for the SIP leg; after each call
rtpengine holds no session and OpenSIPS no live dialog.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from rig import mi, sipp, web

from .conftest import Rig, need
from .sipcalls import call_id_received, media_both_ways, new_call_id, registered, settle, user
from .webphones import WebPhone


def test_browser_registers_over_wss_as_webrtc(gateway: Rig, browser_phone: Callable[..., WebPhone]) -> None:
    alice = browser_phone("webalice")
    (contact,) = mi.contacts(gateway.gw.mi_url)[alice.user]
    assert contact["Cflags"] == "WEBRTC"
    assert contact["Socket"].startswith("wss:127.0.0.1:")
    assert contact["Received"].startswith("sip:127.0.0.1:") and "transport=wss" in contact["Received"].lower()


def test_web_to_sip_call_audio_both_ways(gateway: Rig, work: Path, browser_phone: Callable[..., WebPhone]) -> None:
    need("sipp")
    alice = browser_phone("webalice")
    bob = registered(gateway, work, "sipbob")
    uas = sipp.run(
        sipp.uas_scenario(sipp.Call((("expect_reinvite",), ("expect_reinvite",), ("expect_bye",)), ring_ms=300)),
        work, "uas", bob, gateway.sip, echo=True,
    )  # fmt: skip
    try:
        alice.call(f"sip:{bob.user}@127.0.0.1")
        alice.wait_event("session confirmed")
        call_id = alice.call_id()
        alice.media_grows()
        alice.hold_and_resume()
        alice.media_grows()
        alice.hangup()
        alice.wait_event("session ended")
        assert uas.wait() == 0, uas.errors()
    finally:
        uas.stop()
    assert call_id_received(work, "uas") == call_id  # the phone got the browser's call
    packets = media_both_ways(gateway.relay.commands(call_id), call_id)
    assert len(packets) == 2, packets
    settle(gateway, call_id)


def test_sip_to_web_call_callee_holds_and_sip_hangs_up(
    gateway: Rig, work: Path, browser_phone: Callable[..., WebPhone]
) -> None:
    need("sipp")
    carol = registered(gateway, work, "sipcarol")
    web = browser_phone("webdan")
    call_id = new_call_id("sip-to-web")
    uac = sipp.run(
        sipp.uac_scenario(sipp.Call((("expect_reinvite",), ("expect_reinvite",), ("pause", 4000), ("bye",)))),
        work, "uac", carol, gateway.sip, service=web.user, call_id=call_id,
    )  # fmt: skip
    try:
        web.wait_event("incoming")
        assert web.call_id() == call_id  # the browser got the phone's call
        web.answer()
        web.wait_event("session confirmed")
        web.media_grows()
        web.hold_and_resume()
        web.media_grows()
        web.wait_event("session ended", timeout=20)
        assert uac.wait() == 0, uac.errors()
    finally:
        uac.stop()
    ops = [e.sent["command"] for e in gateway.relay.commands(call_id)]
    assert ops == ["offer", "answer", "offer", "answer", "offer", "answer", "delete"], ops
    packets = media_both_ways(gateway.relay.commands(call_id), call_id)
    assert len(packets) == 2, packets
    settle(gateway, call_id)


def test_web_to_web_hold_from_each_side_and_callee_hangs_up(
    gateway: Rig, browser_phone: Callable[..., WebPhone]
) -> None:
    alice = browser_phone("webalice")
    bob = browser_phone("webbob")
    call_id = alice.calls_and_is_answered_by(bob, "127.0.0.1")
    bob.wait_event("session confirmed")
    alice.media_grows()
    bob.media_grows()
    bob.hold()
    alice.wait_event("session hold remote")
    bob.unhold()
    alice.wait_event("session unhold remote")
    time.sleep(0.3)  # let the ACK land before the other side re-offers (no glare)
    alice.hold()
    bob.wait_event("session hold remote")
    alice.unhold()
    bob.wait_event("session unhold remote")
    time.sleep(0.3)
    alice.media_grows()
    bob.media_grows()
    bob.hangup()
    alice.wait_event("session ended")
    commands = gateway.relay.commands(call_id)
    # every SDP toward a browser was DTLS-SRTP with ICE: two holds and two resumes after the first exchange
    media = [e for e in commands if e.sent["command"] in ("offer", "answer")]
    assert len(media) == 10, [e.sent["command"] for e in commands]
    for exchange in media:
        assert exchange.sent.get("transport-protocol") == "UDP/TLS/RTP/SAVPF"
        assert exchange.sent.get("ICE") == "force"
    media_both_ways(commands, call_id)
    settle(gateway, call_id)


def test_browser_busy_and_cancel(gateway: Rig, browser_phone: Callable[..., WebPhone]) -> None:
    alice = browser_phone("webalice")
    bob = browser_phone("webbob")
    alice.call(f"sip:{bob.user}@127.0.0.1")
    bob.wait_event("incoming")
    busy_call = alice.call_id()
    bob.reject(486)
    alice.wait_event("session failed")
    assert "session failed Busy (remote 486)" in alice.events()
    assert [e.sent["command"] for e in gateway.relay.commands(busy_call)] == ["offer", "delete"]
    settle(gateway, busy_call)
    alice.call(f"sip:{bob.user}@127.0.0.1")
    bob.wait_event("incoming", count=2)
    cancelled = alice.call_id()
    assert cancelled != busy_call
    alice.wait_event("session progress", count=1)
    alice.hangup()  # before answer: CANCEL
    alice.wait_event("session failed", count=2)
    bob.wait_event("session failed", count=2)
    assert [e for e in alice.events() if e.startswith("session failed")][-1] == "session failed Canceled (local)"
    # JsSIP reports the CANCEL as sent; the gateway deletes the session at the callee's 487, a moment later
    gateway.relay.wait_for(cancelled, "delete")
    ops = [e.sent["command"] for e in gateway.relay.commands(cancelled)]
    assert ops[0] == "offer" and ops[-1] == "delete", ops
    settle(gateway, cancelled)


def test_fork_to_browser_and_phone_of_one_user_phone_answers(
    gateway: Rig, work: Path, browser_phone: Callable[..., WebPhone]
) -> None:
    """One INVITE reaches a browser and a SIP phone registered as the same user; one rtpengine branch each."""
    need("sipp")
    name = user("fork")
    web = browser_phone("unused", name=name)
    phone = sipp.Phone(name)
    assert sipp.register(phone, work, gateway.sip).wait() == 0
    caller = browser_phone("webcaller")
    uas = sipp.run(sipp.uas_scenario(sipp.Call((("expect_bye",),), ring_ms=1500)), work, "uas", phone, gateway.sip,
                   echo=True)  # fmt: skip
    try:
        caller.call(f"sip:{name}@127.0.0.1")
        web.wait_event("incoming")
        call_id = caller.call_id()
        caller.wait_event("session confirmed")
        caller.media_grows()
        web.wait_event("session failed")  # the browser branch was cancelled when the phone answered
        caller.hangup()
        assert uas.wait() == 0, uas.errors()
    finally:
        uas.stop()
    assert call_id_received(work, "uas") == call_id
    offers = [e.sent for e in gateway.relay.commands(call_id) if e.sent["command"] == "offer"]
    assert sorted(str(o.get("via-branch")) for o in offers[:2]) == ["br0", "br1"]
    assert [e.sent["command"] for e in gateway.relay.commands(call_id)].count("delete") == 1  # at the BYE only
    kinds = {o["via-branch"]: o.get("transport-protocol") for o in offers[:2]}
    assert set(kinds.values()) == {"UDP/TLS/RTP/SAVPF", "RTP/AVP"}, kinds
    media_both_ways(gateway.relay.commands(call_id), call_id)  # the caller and the phone that answered
    settle(gateway, call_id)


def test_requests_toward_a_browser_use_its_websocket(gateway: Rig, browser_phone: Callable[..., WebPhone]) -> None:
    """In-dialog requests to a browser go back over its own connection: no new TCP connection is opened."""
    alice = browser_phone("webalice")
    bob = browser_phone("webbob", secure=False)  # over plain ws: the other WebSocket flavour
    before = tcp_connections(gateway)
    assert before >= 2  # at least the two browsers' WebSockets
    alice.call(f"sip:{bob.user}@127.0.0.1")
    bob.wait_event("incoming")
    call_id = alice.call_id()
    bob.answer()
    alice.wait_event("session confirmed")
    alice.hold()  # re-INVITE toward bob over ws
    alice.wait_event("session hold")
    alice.unhold()
    alice.wait_event("session unhold")
    bob.wait_event("session unhold")
    bob.hold()  # re-INVITE toward alice over wss
    bob.wait_event("session hold")
    bob.unhold()
    bob.wait_event("session unhold")
    alice.wait_event("session unhold", count=2)
    time.sleep(0.3)  # the last ACK
    bob.media_grows()
    alice.hangup()  # BYE toward bob over ws
    bob.wait_event("session ended")
    after = tcp_connections(gateway)
    assert after <= before, (before, after)
    settle(gateway, call_id)


def tcp_connections(rig: Rig) -> int:
    """Connections OpenSIPS holds (MI list_tcp_conns), WebSockets included."""
    from rig import mi as mi_

    result = mi_.call(rig.gw.mi_url, "list_tcp_conns") or {}
    return len(result.get("Connections", []))


def test_sipjs_browser_registers_and_calls_a_phone_with_audio(
    gateway: Rig, work: Path, chromium: Any, site: web.Server
) -> None:
    """SIP.js (0.21, SimpleUser) too: WSS registration stored as WEBRTC, a call to a SIP phone with audio both ways."""
    need("sipp")
    context = chromium.new_context(ignore_https_errors=True, permissions=["microphone"])
    try:
        page = context.new_page()
        page.goto(site.url.replace("phone.html", "sipjs.html"), timeout=15000)
        page.wait_for_function("window.sipjsPhone !== undefined", timeout=15000)
        name = user("sipjs")
        page.evaluate("([u, n, d]) => sipjsPhone.start(u, n, d)", [gateway.gw.wss_url, name, "127.0.0.1"])
        (contact,) = mi.contacts(gateway.gw.mi_url)[name]
        assert contact["Cflags"] == "WEBRTC"
        bob = registered(gateway, work, "sipjsbob")
        uas = sipp.run(sipp.uas_scenario(sipp.Call((("expect_bye",),))), work, "uas", bob, gateway.sip, echo=True)
        try:
            page.evaluate("t => sipjsPhone.call(t)", f"sip:{bob.user}@127.0.0.1")
            page.wait_for_function("sipjsPhone.events.includes('answered')", timeout=15000)
            first = page.evaluate("sipjsPhone.stats()")
            time.sleep(1.5)
            second = page.evaluate("sipjsPhone.stats()")
            assert second["sent"] > first["sent"] and second["received"] > first["received"], (first, second)
            page.evaluate("sipjsPhone.hangup()")
            assert uas.wait() == 0, uas.errors()
        finally:
            uas.stop()
    finally:
        context.close()
    call_id = call_id_received(work, "uas")  # the INVITE SIP.js sent, as the phone got it
    packets = media_both_ways(gateway.relay.commands(call_id), call_id)
    assert len(packets) == 2, packets
    settle(gateway, call_id)
