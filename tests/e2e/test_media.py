"""Media beyond a plain audio call (issue 17), through the real OpenSIPS and rtpengine, with Chromium.

- Video between browsers (Chromium's fake camera): frames encoded and decoded growing on both sides,
  from the first INVITE, or added by a re-INVITE mid-call and removed again, audio flowing throughout.
- DTMF: a browser's digits sent as RFC 4733 or as SIP INFO (the gateway answers the INFO and has
  rtpengine play the digit) reach a SIP phone as RFC 4733 events; a phone's RFC 4733 events reach the
  browser's leg as telephone-event; with G.711 in common and with an Opus-only browser (transcoded).
  The digits are read off the packets the phone's media port gets (plain RTP); at the browser's port
  the events of its telephone-event payload type are counted (SRTP: the RTP header is in clear, the
  digit is not).  With ``[media] info_dtmf = relay`` a codec in common passes rtpengine untouched.
- ICE restart: a browser's re-INVITE with new ICE credentials passes, the SIP phone's re-INVITE names
  the same port, audio comes back (the gap is printed); hold and resume never restart ICE.
- The codec matrix: Opus-only and Opus+G.711 browsers with PCMU-, PCMA- and G.722-only SIP phones, one
  call per pair (each phone codec calls one browser and is called by the other): audio both ways,
  transcoded only where no codec is common (the payload type of what reaches the browser), and the
  answer a calling phone gets names only what it offered.
- IPv6: a browser over WSS on ::1 and an IPv4 SIPp phone call each other on a dual-stack gateway.

Packets are read off the loopback interface (tests/e2e/sniff.py: root or CAP_NET_RAW).  Every test
also checks that rtpengine logged no flag it did not know or ignored.
"""

from __future__ import annotations

import ipaddress
import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from rig import mi, ng, sipp, web
from rig.gateway import DEFAULT_SETTINGS
from tests.rtpengine_fixture import COMPLAINT

from .conftest import Rig, need, own_rig
from .sipcalls import media_both_ways, new_call_id, registered, settle, user
from .sniff import RtpSniffer, Sniffer
from .webphones import WebPhone


@pytest.fixture(autouse=True)
def rtpengine_took_every_flag(gateway: Rig) -> Iterator[None]:
    """rtpengine logged no flag or key it did not know or ignored during the test (the flag table's new
    rows included: transcode-PCMA toward phones, transcode-opus toward browsers)."""
    start = log_size(gateway)
    yield
    assert not complaints(gateway, start)


def log_size(rig: Rig) -> int:
    log = rig.gw.rtpengine_log_path
    return log.stat().st_size if log.exists() else 0


def complaints(rig: Rig, start: int) -> List[str]:
    """The lines of the rig's rtpengine log after ``start`` about a flag or key it did not know or ignored."""
    with rig.gw.rtpengine_log_path.open(errors="replace") as handle:
        handle.seek(start)
        return [line for line in handle if COMPLAINT.search(line)]


def test_browser_to_browser_audio_and_video(gateway: Rig, browser_phone: Callable[..., Any]) -> None:
    alice: WebPhone = browser_phone("vidalice").set_media(video=True)
    bob: WebPhone = browser_phone("vidbob").set_media(video=True)
    call_id = alice.calls_and_is_answered_by(bob, "127.0.0.1")
    bob.wait_event("session confirmed")
    alice.media_grows()
    bob.media_grows()
    a, b = alice.video_grows(), bob.video_grows()
    print("FIGURE video", a, b, [line for line in alice.remote_sdp().split("\r\n") if line.startswith("m=")])
    alice.hangup()
    bob.wait_event("session ended")
    media_both_ways(gateway.relay.commands(call_id), call_id)
    settle(gateway, call_id)


@pytest.mark.parametrize("side", ["caller", "callee"])
def test_video_added_and_removed_mid_call_without_breaking_audio(
    gateway: Rig, browser_phone: Callable[..., Any], side: str
) -> None:
    """An audio call; one side (the caller, or in another call the callee: its re-INVITE goes upstream) adds
    its camera by re-INVITE: the other side decodes growing video frames while audio keeps flowing both ways;
    it removes it again: audio still flows.  The callee's needs ICE-lite=both on re-offers between browsers
    (gateway/profiles.py)."""
    alice: WebPhone = browser_phone(f"add{side}a")
    bob: WebPhone = browser_phone(f"add{side}b")
    call_id = alice.calls_and_is_answered_by(bob, "127.0.0.1")
    bob.wait_event("session confirmed")
    alice.media_grows()
    sender, receiver = (alice, bob) if side == "caller" else (bob, alice)
    assert receiver.stats()["framesDecoded"] == 0
    sender.renegotiate("addVideo")
    receiver.wait_settled()
    alice.media_grows()
    bob.media_grows()
    first = receiver.stats()
    time.sleep(2)
    second = receiver.stats()
    print(f"FIGURE added by the {side}", first, second)
    assert second["framesDecoded"] > first["framesDecoded"], (first, second)
    sender.renegotiate("removeVideo")
    receiver.wait_settled()
    alice.media_grows()
    bob.media_grows()
    bob.hangup()
    alice.wait_event("session ended")
    media_both_ways(gateway.relay.commands(call_id), call_id)
    settle(gateway, call_id)


# -- DTMF --------------------------------------------------------------------------------------


def telephone_events(sdp: str) -> List[int]:
    """The payload types an SDP gives telephone-event."""
    return [int(pt) for pt in re.findall(r"a=rtpmap:(\d+) telephone-event/", sdp)]


def telephone_event_pt(sdp: str) -> int:
    """The payload type an SDP gives telephone-event (the first, whatever its clock rate)."""
    found = telephone_events(sdp)
    assert found, f"no telephone-event in\n{sdp}"
    return found[0]


def toward(web: WebPhone) -> RtpSniffer:
    """A sniffer of what rtpengine sends the browser: from its port in the SDP the browser got (the
    browser's ICE may have picked any address of this host, not only the 127.0.0.1 of its SDP)."""
    return RtpSniffer(source_port=audio_port(web.remote_sdp()))


@pytest.fixture(scope="module")
def relay_rig(opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A gateway of its own with ``[media] info_dtmf = relay``: no inject-DTMF in the flag table."""
    settings = DEFAULT_SETTINGS + "\n[media]\ninfo_dtmf = relay\n"
    with own_rig(opensips_bin, tmp_path_factory.mktemp("relay"), settings=settings) as rig:
        yield rig


def transcoded_media(rig: Rig) -> int:
    """rtpengine's own count of the media it transcodes now (ng ``statistics``)."""
    assert rig.gw.relay is not None
    stats = ng.command(rig.gw.relay.engine, {"command": "statistics"})
    return int(stats["statistics"]["currentstatistics"]["transcodedmedia"])


def digits_at(sniffer: RtpSniffer, sdp: str, count: int, seconds: float = 5.0) -> str:
    """The RFC 4733 digits the sniffer has seen so far, of the telephone-event type ``sdp`` names (a phone's
    answer), once there are ``count`` of them (bounded)."""
    pt = telephone_event_pt(sdp)
    deadline = time.monotonic() + seconds
    while len(sniffer.digits(pt)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return sniffer.digits(pt)


@pytest.mark.parametrize("codecs", [None, ("opus",)], ids=["common-codec", "transcoded"])
def test_dtmf_from_a_browser_reaches_a_sip_phone_as_rfc4733(
    gateway: Rig, work: Path, browser_phone: Callable[..., Any], codecs: Optional[Tuple[str, ...]]
) -> None:
    """JsSIP sends DTMF as SIP INFO (its default), then as RFC 4733 (RTCDTMFSender), toward a SIPp phone that
    offers PCMA and telephone-event: the phone's media port gets all the digits as RFC 4733 events of the
    payload type it answered with, with or without transcoding (an Opus-only browser).  An INFO is
    answered by the gateway and played into the media by rtpengine; the phone gets no INFO (SIPp would
    fail on one it does not expect).  INFO first: after a browser's own RFC 4733 events rtpengine 10.5
    played no more digits into that stream (docs/host-facts.md)."""
    need("sipp")
    if Sniffer.available():
        pytest.skip(str(Sniffer.available()))
    alice: WebPhone = browser_phone("dtmfweb").set_media(codecs=codecs)
    bob = registered(gateway, work, "dtmfphone")
    script = sipp.Call((("expect_bye",),), events_as_offered=True)
    uas = sipp.run(sipp.uas_scenario(script), work, "uas", bob, gateway.sip, echo=True)
    try:
        with RtpSniffer(bob.media_port) as sniffer:
            alice.call(f"sip:{bob.user}@127.0.0.1")
            alice.wait_event("session confirmed")
            alice.media_grows()
            transcoding = transcoded_media(gateway)
            call_id = alice.call_id()
            answer = next(e for e in gateway.relay.commands(call_id) if e.sent.get("command") == "answer")
            phone_sdp = str(answer.sent["sdp"])
            alice.dtmf("15", "INFO")
            by_info = digits_at(sniffer, phone_sdp, 2)
            alice.dtmf("9#", "RFC2833")
            got = digits_at(sniffer, phone_sdp, 4)
            alice.hangup()
            alice.wait_event("session ended")
            assert uas.wait() == 0, uas.errors()
    finally:
        uas.stop()
    print(f"FIGURE dtmf browser->phone {codecs}: transcodedmedia {transcoding}, phone got {got!r} (15 as INFO)")
    assert by_info == "15" and got == "159#", sniffer.payload_types()
    # inject-DTMF (the default [media] info_dtmf = rfc4733): rtpengine decodes and re-encodes the call
    assert transcoding > 0, transcoding
    media_both_ways(gateway.relay.commands(call_id), call_id)
    settle(gateway, call_id)


#: The SIP phone's script: audio, the digits 2580 as RFC 4733 events, audio, then it hangs up.
PLAY_DTMF_PLAY = (("play",), ("pause", 1800), ("dtmf", "2580"), ("play",), ("pause", 1800), ("bye",))


@pytest.mark.parametrize("codecs", [None, ("opus",)], ids=["common-codec", "transcoded"])
def test_rfc4733_from_a_sip_phone_reaches_the_browser_leg(
    gateway: Rig, work: Path, browser_phone: Callable[..., Any], codecs: Optional[Tuple[str, ...]]
) -> None:
    """A SIPp phone plays RFC 4733 events (payload type 101) into its call to a browser: rtpengine sends
    the browser's leg as many events of the telephone-event payload type the browser was offered (SRTP:
    the header says the type, the digit is encrypted)."""
    need("sipp")
    if Sniffer.available():
        pytest.skip(str(Sniffer.available()))
    carol = registered(gateway, work, "dtmfcaller")
    web: WebPhone = browser_phone("dtmfcallee").set_media(codecs=codecs)
    call_id = new_call_id("dtmf")
    uac = sipp.run(
        sipp.uac_scenario(sipp.Call(PLAY_DTMF_PLAY)),
        work, "uac", carol, gateway.sip, service=web.user, call_id=call_id,
    )  # fmt: skip
    try:
        web.wait_event("incoming")
        web.answer()
        web.wait_event("session confirmed")
        sdp = web.remote_sdp()
        pts = telephone_events(sdp)
        with toward(web) as sniffer:
            web.media_grows()
            transcoding = transcoded_media(gateway)
            web.wait_event("session ended", timeout=20)
        assert uac.wait() == 0, uac.errors()
    finally:
        uac.stop()
    (pt,) = [pt for pt in pts if sniffer.events(pt)] or pts[:1]  # the one rtpengine sent events of
    events = sniffer.events(pt)
    types = sniffer.payload_types()
    # The audio that reached the browser: PCMA as the phone sent it, or Opus that rtpengine made of it.
    # (rtpengine's transcodedmedia counts the call once the browser's answer names Opus too, even while
    # PCMA passes through unchanged.)
    sent = max((t for t in types if t not in pts), key=types.__getitem__)
    opus = re.search(r"a=rtpmap:(\d+) opus/", sdp)
    print(
        f"FIGURE dtmf phone->browser {codecs}: audio type {sent}, transcodedmedia {transcoding},"
        f" {len(events)} events of type {pt}, types {types}"
    )
    assert len(events) == 4, types
    assert sent == (int(opus.group(1)) if codecs and opus else 8), (sent, sdp)
    media_both_ways(gateway.relay.commands(call_id), call_id)
    settle(gateway, call_id)


# -- codecs ------------------------------------------------------------------------------------

#: The browsers of the codec matrix: the audio codecs each offers and accepts (telephone-event too).
BROWSERS = {"opus-only": ("opus",), "opus+G.711": ("opus", "PCMU", "PCMA")}


def audio_formats(sdp: str) -> List[int]:
    found = re.search(r"^m=audio \d+ \S+ ([\d ]+)", sdp, re.MULTILINE)
    assert found is not None, sdp
    return [int(pt) for pt in found.group(1).split()]


def codec_of(sdp: str, pt: int) -> str:
    found = re.search(rf"a=rtpmap:{pt} ([^/\s]+)/", sdp)
    return found.group(1) if found else {0: "PCMU", 8: "PCMA", 9: "G722"}.get(pt, str(pt))


#: Every pair of the matrix, once: each phone codec is called by one browser and calls the other (a call
#: carries audio both ways; only a phone's own call shows what its answer names).
MATRIX = [
    (browser, codec, "phone-calls" if browser == "opus-only" else "browser-calls")
    for browser in sorted(BROWSERS)
    for codec in sorted(sipp.CODECS)
]


@pytest.mark.parametrize("browser, phone_codec, direction", MATRIX)
def test_codec_matrix(
    gateway: Rig, work: Path, browser_phone: Callable[..., Any], browser: str, phone_codec: str, direction: str
) -> None:
    """A browser and a phone of one codec call each other: audio both ways (the browser's getStats,
    rtpengine's counters of the phone's leg, which echoes what it hears); the audio reaching the browser
    is the phone's codec untouched when the browser has it, else Opus that rtpengine transcoded (read off
    the payload type of the packets at the browser's port); the answer a calling phone gets names only
    what it offered."""
    need("sipp")
    if Sniffer.available():
        pytest.skip(str(Sniffer.available()))
    common = phone_codec in BROWSERS[browser]
    web: WebPhone = browser_phone("codecweb").set_media(codecs=BROWSERS[browser])
    phone = registered(gateway, work, "codecphone")
    if direction == "browser-calls":
        script = sipp.Call((("expect_bye",),), codec=phone_codec, events_as_offered=True)
        sipp_run = sipp.run(sipp.uas_scenario(script), work, "uas", phone, gateway.sip, echo=True)
    else:
        call_id = new_call_id("codec")
        script = sipp.Call((("pause", 5000), ("bye",)), codec=phone_codec)
        sipp_run = sipp.run(sipp.uac_scenario(script), work, "uac", phone, gateway.sip, service=web.user,
                            call_id=call_id, echo=True)  # fmt: skip
    try:
        if direction == "browser-calls":
            web.call(f"sip:{phone.user}@127.0.0.1")
        else:
            web.wait_event("incoming")
            web.answer()
        web.wait_event("session confirmed")
        call_id = web.call_id()
        commands = gateway.relay.commands(call_id)
        offer = next(e for e in commands if e.sent.get("command") == "offer")
        answer = next(e for e in commands if e.sent.get("command") == "answer")
        with toward(web) as sniffer:
            web.media_grows(2.0)
            transcoding = transcoded_media(gateway)
        if direction == "browser-calls":
            web.hangup()
        web.wait_event("session ended", timeout=20)
        assert sipp_run.wait() == 0, sipp_run.errors()
    finally:
        sipp_run.stop()
    sdp = web.remote_sdp()
    types = sniffer.payload_types()
    received = max((pt for pt in types if codec_of(sdp, pt) != "telephone-event"), key=types.__getitem__)
    heard = codec_of(sdp, received)
    to_phone = str(((offer if direction == "browser-calls" else answer).answer or {}).get("sdp", ""))
    print(
        f"FIGURE codecs {browser} browser, {phone_codec} phone, {direction}: the browser got {heard}"
        f" ({'transcoded' if heard != phone_codec else 'not transcoded'}; rtpengine's transcodedmedia"
        f" {transcoding}); the phone was sent {[codec_of(to_phone, pt) for pt in audio_formats(to_phone)]}"
    )
    assert heard == (phone_codec if common else "opus"), (heard, types, sdp)
    if direction == "phone-calls":  # the answer names only what the phone offered
        assert set(audio_formats(to_phone)) <= {sipp.CODECS[phone_codec][0], 101}, to_phone
    media_both_ways(gateway.relay.commands(call_id), call_id)
    settle(gateway, call_id)


# -- ICE restart -------------------------------------------------------------------------------


def ufrags(sdp: str) -> List[str]:
    return re.findall(r"a=ice-ufrag:(\S+)", sdp)


def audio_port(sdp: str) -> int:
    found = re.search(r"^m=audio (\d+) ", sdp, re.MULTILINE)
    assert found is not None, sdp
    return int(found.group(1))


def longest_gap(web: WebPhone, seconds: float) -> float:
    """The longest time, over ``seconds``, in which the browser received no audio packet (getStats
    polled every 20 ms or so)."""
    last_count, last_change, gap = web.stats()["received"], time.monotonic(), 0.0
    deadline = last_change + seconds
    while time.monotonic() < deadline:
        count, now = web.stats()["received"], time.monotonic()
        if count != last_count:
            gap, last_count, last_change = max(gap, now - last_change), count, now
        time.sleep(0.02)
    return max(gap, time.monotonic() - last_change)


def test_an_ice_restart_of_the_browser_passes_and_hold_never_restarts_ice(
    gateway: Rig, work: Path, browser_phone: Callable[..., Any]
) -> None:
    """A browser calls a SIP phone, holds and resumes (same ICE credentials each way), then restarts ICE
    (new ufrag and pwd in its re-INVITE): rtpengine answers it with new credentials of its own, the phone's
    re-INVITE names the same address and port as before, and audio comes back: the gap is measured."""
    need("sipp")
    web: WebPhone = browser_phone("iceweb")
    phone = registered(gateway, work, "icephone")
    script = sipp.Call((("expect_reinvite",), ("expect_reinvite",), ("expect_reinvite",), ("expect_bye",)))
    uas = sipp.run(sipp.uas_scenario(script), work, "uas", phone, gateway.sip, echo=True)
    try:
        web.call(f"sip:{phone.user}@127.0.0.1")
        web.wait_event("session confirmed")
        call_id = web.call_id()
        web.media_grows()
        web.hold_and_resume()
        web.media_grows()
        web.renegotiate("iceRestart")
        gap = longest_gap(web, 3.0)
        web.media_grows()
        web.hangup()
        web.wait_event("session ended")
        assert uas.wait() == 0, uas.errors()
    finally:
        uas.stop()
    exchanges = [e for e in gateway.relay.commands(call_id) if e.sent.get("command") in ("offer", "answer")]
    assert [e.sent["command"] for e in exchanges] == ["offer", "answer"] * 4
    offers = [e for e in exchanges if e.sent["command"] == "offer"]
    answers = [e for e in exchanges if e.sent["command"] == "answer"]
    from_browser = [ufrags(str(e.sent["sdp"])) for e in offers]
    to_browser = [ufrags(str((e.answer or {}).get("sdp", ""))) for e in answers]
    to_phone = [audio_port(str((e.answer or {}).get("sdp", ""))) for e in offers]
    print(
        f"FIGURE ice restart: the browser's ufrags per offer {from_browser}, rtpengine's toward it {to_browser};"
        f" ports offered to the phone {to_phone}; longest gap in the browser's audio {gap * 1000:.0f} ms"
    )
    assert from_browser[0] == from_browser[1] == from_browser[2] != from_browser[3]  # hold, resume: no restart
    assert to_browser[0] == to_browser[1] == to_browser[2] != to_browser[3]  # rtpengine restarts with it
    assert len(set(to_phone)) == 1, to_phone  # the SIP leg sees no change
    media_both_ways(gateway.relay.commands(call_id), call_id)
    settle(gateway, call_id)


def test_with_info_dtmf_relay_a_codec_in_common_passes_untouched(
    relay_rig: Rig, work: Path, chromium: Any, site: web.Server
) -> None:
    """``[media] info_dtmf = relay``: a browser with G.711 calls a PCMA phone, and rtpengine neither
    transcodes nor re-encodes (its transcodedmedia stays 0; the browser gets PCMA), while RFC 4733 from
    the browser still reaches the phone."""
    need("sipp")
    if Sniffer.available():
        pytest.skip(str(Sniffer.available()))
    rig = relay_rig
    context = chromium.new_context(ignore_https_errors=True, permissions=["microphone"])
    try:
        page = context.new_page()
        page.goto(site.url, timeout=15000)
        web_phone = WebPhone(page, user("relayweb")).start(rig).set_media(codecs=BROWSERS["opus+G.711"])
        phone = registered(rig, work, "relayphone")
        script = sipp.Call((("expect_bye",),), events_as_offered=True)
        uas = sipp.run(sipp.uas_scenario(script), work, "uas", phone, rig.sip, echo=True)
        try:
            with RtpSniffer(phone.media_port) as at_phone:
                web_phone.call(f"sip:{phone.user}@127.0.0.1")
                web_phone.wait_event("session confirmed")
                web_phone.media_grows()
                transcoding = transcoded_media(rig)
                web_phone.dtmf("73", "RFC2833")
                time.sleep(1.5)
                web_phone.hangup()
                web_phone.wait_event("session ended")
                assert uas.wait() == 0, uas.errors()
        finally:
            uas.stop()
        call_id = web_phone.call_id()
    finally:
        context.close()
    commands = rig.relay.commands(call_id)
    assert all("inject-DTMF" not in e.sent.get("flags", []) for e in commands), [e.sent for e in commands]
    answer = next(e for e in commands if e.sent.get("command") == "answer")
    pt = telephone_event_pt(str(answer.sent["sdp"]))
    types = at_phone.payload_types()
    print(f"FIGURE info_dtmf = relay: transcodedmedia {transcoding}, phone got {at_phone.digits(pt)!r}, types {types}")
    assert transcoding == 0
    assert at_phone.digits(pt) == "73", types
    media_both_ways(commands, call_id)
    settle(rig, call_id)


# -- IPv6 --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dual_stack_rig(opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A gateway that also takes SIP (UDP) and WSS on ::1, and rtpengine on 127.0.0.1 and ::1."""
    with own_rig(opensips_bin, tmp_path_factory.mktemp("ipv6"), ipv6="::1") as rig:
        yield rig


def families(sdp: str) -> List[str]:
    """The address families an SDP names: its c= lines' and its candidates' (IP4, IP6)."""
    found = set(re.findall(r"^c=IN (IP[46]) ", sdp, re.MULTILINE))
    found |= {"IP6" if ":" in a else "IP4" for a in re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) ", sdp, re.I)}
    return sorted(found)


def connection(sdp: str) -> str:
    """The address family of an SDP's session c= line (IP4, IP6)."""
    found = re.search(r"^c=IN (IP[46]) ", sdp, re.MULTILINE)
    assert found, sdp
    return found.group(1)


def test_a_browser_on_ipv6_and_a_sip_phone_on_ipv4_call_each_other(
    dual_stack_rig: Rig, work: Path, chromium: Any, site: web.Server
) -> None:
    """A browser registers over WSS on ::1 and offers only ::1 candidates; a SIPp phone on 127.0.0.1.  The
    browser calls the phone and the phone calls the browser: the SDP the phone gets is IPv4, the browser's IPv6
    (its registration over IPv6 is kept as branch flag IPV6, and the offer toward it names the family), audio
    flows both ways."""
    need("sipp")
    rig = dual_stack_rig
    start = log_size(rig)  # its own rtpengine: address-family=IP6 taken, like every other flag
    context = chromium.new_context(ignore_https_errors=True, permissions=["microphone"])
    try:
        page = context.new_page()
        page.goto(site.url, timeout=15000)
        browser = WebPhone(page, user("v6web")).start(rig, ipv6=True)
        (contact,) = mi.contacts(rig.gw.mi_url)[browser.user]
        socket = str(contact["Socket"])  # OpenSIPS writes it in full: wss:[0:0:0:0:0:0:0:1]:port
        assert socket.startswith("wss:[") and ipaddress.ip_address(socket[5:].split("]")[0]).is_loopback, contact
        assert set(str(contact["Cflags"]).split()) == {"WEBRTC", "IPV6"}, contact
        phone = registered(rig, work, "v4phone")
        seen: List[Tuple[str, Dict[str, List[str]], str, Dict[str, int]]] = []
        for direction in ("browser-calls", "phone-calls"):
            if direction == "browser-calls":
                script = sipp.uas_scenario(sipp.Call((("expect_bye",),)))
                run = sipp.run(script, work, "uas", phone, rig.sip, echo=True)
                browser.call(f"sip:{phone.user}@127.0.0.1")
            else:
                script = sipp.uac_scenario(sipp.Call((("play",), ("pause", 3000), ("bye",))))
                run = sipp.run(script, work, "uac", phone, rig.sip, service=browser.user, call_id=new_call_id("v6"))
                browser.wait_event("incoming")
                browser.answer()
            try:
                browser.wait_event("session confirmed", count=len(seen) + 1)
                call_id = browser.call_id()
                browser.media_grows()
                if direction == "browser-calls":
                    browser.hangup()
                browser.wait_event("session ended", count=len(seen) + 1, timeout=20)
                assert run.wait() == 0, run.errors()
            finally:
                run.stop()
            commands = rig.relay.commands(call_id)
            offer, answer = (next(e for e in commands if e.sent.get("command") == c) for c in ("offer", "answer"))
            to_phone, to_browser = offer.answer or {}, answer.answer or {}
            if direction == "phone-calls":
                to_phone, to_browser = to_browser, to_phone
            legs = {"phone": families(str(to_phone.get("sdp"))), "browser": families(str(to_browser.get("sdp")))}
            packets = media_both_ways(commands, call_id)
            offered = connection(str(to_browser.get("sdp")))
            seen.append((direction, legs, offered, packets))
            assert legs["phone"] == ["IP4"], legs  # the IPv4 phone is never offered an IPv6 address
            # The browser's leg has rtpengine's IPv6 candidate (ICE=force lists both its addresses; the c= line of
            # its answer to the browser varies); offered to the browser, IPv6 in c= too: rtpengine would offer the
            # phone's family (IPv4) unless the router names IP6
            assert "IP6" in legs["browser"], legs
            if direction == "phone-calls":
                assert offered == "IP6", seen
            settle(rig, call_id)
    finally:
        context.close()
    assert not complaints(rig, start)
    print(f"FIGURE IPv6 browser / IPv4 phone: {seen}")


def test_a_browser_on_ipv6_and_one_on_ipv4_call_each_other(
    dual_stack_rig: Rig, chromium: Any, site: web.Server
) -> None:
    """Two browsers, one over WSS on ::1 (its ::1 candidates only), one on 127.0.0.1: each calls the other, each
    gets candidates of its own family (rtpengine bridges IPv6 and IPv4), audio both ways."""
    rig = dual_stack_rig
    start = log_size(rig)
    context = chromium.new_context(ignore_https_errors=True, permissions=["microphone"])
    seen = []
    try:
        v6 = WebPhone(context.new_page(), user("v6peer"))
        v4 = WebPhone(context.new_page(), user("v4peer"))
        for phone in (v6, v4):
            phone.page.goto(site.url, timeout=15000)
        v6.start(rig, ipv6=True)
        v4.start(rig)
        for n, (caller, callee) in enumerate(((v6, v4), (v4, v6)), 1):
            call_id = caller.calls_and_is_answered_by(callee, "127.0.0.1")
            callee.wait_event("session confirmed", count=n)
            caller.media_grows()
            callee.media_grows()
            legs = {"v6": families(v6.remote_sdp()), "v4": families(v4.remote_sdp())}
            seen.append(legs)
            # rtpengine gives a browser candidates of both its addresses (ICE=force): each browser's own family
            # among them, and ICE connects there (media_grows above)
            assert "IP6" in legs["v6"] and "IP4" in legs["v4"], seen
            caller.hangup()
            callee.wait_event("session ended", count=n)
            media_both_ways(rig.relay.commands(call_id), call_id)
            settle(rig, call_id)
    finally:
        context.close()
    assert not complaints(rig, start)
    print(f"FIGURE IPv6 browser / IPv4 browser: {seen}")
