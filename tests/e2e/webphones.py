"""Browsers (JsSIP in headless Chromium) as phones of the real gateway."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from rig import sipp, web

from .conftest import Rig
from .sipcalls import user
from .wsclient import WebSocket


class WebPhone:
    """One page = one JsSIP user agent registered over WSS (or WS)."""

    def __init__(self, page: Any, user: str) -> None:
        self.page = page
        self.user = user

    def start(
        self, rig: Rig, secure: bool = True, domain: str = "127.0.0.1", password: str = "", wait: str = "registered",
        ipv6: bool = False,
    ) -> WebPhone:  # fmt: skip
        """Register (with ``password``, JsSIP answers digest challenges); wait for the ``wait`` event.  ``ipv6``:
        over WSS to the gateway's IPv6 address, with the browser's ::1 candidates only."""
        url = rig.gw.wss6_url if ipv6 else rig.gw.wss_url if secure else rig.gw.ws_url
        if ipv6:
            self.page.evaluate("phone.useIPv6(true)")
        self.page.evaluate("([u, n, d, p]) => phone.start(u, n, d, p)", [url, self.user, domain, password])
        self.wait_event(wait)
        return self

    def events(self) -> List[str]:
        return list(self.page.evaluate("phone.state.events"))

    def wait_event(self, prefix: str, timeout: float = 15.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(1 for e in self.events() if e.startswith(prefix)) >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.user}: no {prefix!r} (x{count}) within {timeout}s; events: {self.events()}")

    def call(self, target: str, headers: Sequence[str] = ()) -> None:
        """Call ``target``; ``headers``: extra header lines of the INVITE (JsSIP's extraHeaders)."""
        self.page.evaluate("([t, h]) => phone.call(t, h)", [target, list(headers)])

    def calls_and_is_answered_by(self, callee: WebPhone, domain: str) -> str:
        """Call ``callee`` (another browser) at ``domain``; it gets the call under the same Call-ID and
        answers; the call is confirmed here.  The Call-ID."""
        self.call(f"sip:{callee.user}@{domain}")
        callee.wait_event("incoming")
        call_id = self.call_id()
        assert callee.call_id() == call_id
        callee.answer()
        try:
            self.wait_event("session confirmed")
        except AssertionError as error:
            raise AssertionError(f"{error}; callee {callee.user}'s events: {callee.events()}") from None
        return call_id

    def sent_invite(self) -> str:
        """The current outgoing call's INVITE as JsSIP sent it (the last one, credentials included)."""
        text = self.page.evaluate("phone.sentInvite()")
        assert isinstance(text, str) and text, f"{self.user}: no outgoing INVITE ({text!r}); events: {self.events()}"
        return text

    def call_id(self) -> str:
        """The Call-ID of this phone's current call (its INVITE, sent or received)."""
        found = self.page.evaluate("phone.callId()")
        assert isinstance(found, str) and found, f"{self.user}: no current call ({found!r}); events: {self.events()}"
        return found

    def answer(self) -> None:
        self.page.evaluate("phone.answer()")

    def set_media(self, audio: bool = True, video: bool = False, codecs: Optional[Sequence[str]] = None) -> WebPhone:
        """What this browser's next calls and answers ask for (video: Chromium's fake camera), and the
        audio codecs it offers and accepts (None: all it has; telephone-event always)."""
        self.page.evaluate("([a, v, c]) => phone.setMedia(a, v, c)", [audio, video, list(codecs) if codecs else None])
        return self

    def dtmf(self, tones: str, transport: str) -> None:
        """Send ``tones`` as SIP INFO (``"INFO"``, JsSIP's default) or RFC 4733 events (``"RFC2833"``)."""
        self.page.evaluate("([t, how]) => phone.dtmf(t, how)", [tones, transport])

    def dtmf_received(self) -> str:
        """The digits that came to this browser as SIP INFO."""
        return str(self.page.evaluate("phone.dtmfReceived()"))

    def renegotiate(self, what: str) -> None:
        """A re-INVITE of ``what``: "iceRestart", "addVideo" or "removeVideo" (once JsSIP may re-offer)."""
        self.wait_settled()
        assert self.page.evaluate(f"phone.{what}()") is not False, f"{self.user}: JsSIP refused {what}"
        self.wait_settled()

    def reject(self, code: int = 486) -> None:
        self.page.evaluate("c => phone.reject(c)", code)

    def _reoffer(self, what: str) -> None:
        """Hold/resume once JsSIP is ready for a new offer (it refuses while one is in progress)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.page.evaluate(f"phone.{what}()"):
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.user}: JsSIP never accepted {what}(); events: {self.events()}")

    def hold(self) -> None:
        self._reoffer("hold")

    def unhold(self) -> None:
        self._reoffer("unhold")

    def hold_and_resume(self) -> None:
        """Hold, then resume, each re-INVITE answered (and ACKed) before the next step."""
        self.hold()
        self.wait_event("session hold")
        self.wait_settled()
        self.unhold()
        self.wait_event("session unhold")
        self.wait_settled()

    def wait_settled(self, timeout: float = 10.0) -> None:
        """Until no re-INVITE of the call waits for its answer: JsSIP's hold and unhold events come when it
        sends one, and a BYE sent meanwhile leaves the answer unacknowledged."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.page.evaluate("phone.settled()"):
                return
            time.sleep(0.05)
        raise AssertionError(f"{self.user}: a re-INVITE still unanswered after {timeout}s; events: {self.events()}")

    def hangup(self) -> None:
        self.page.evaluate("phone.hangup()")

    def remote_sdp(self) -> str:
        """The SDP the browser got for its current call (its RTCPeerConnection's remote description)."""
        text = self.page.evaluate("phone.remoteSdp()")
        assert isinstance(text, str) and text, f"{self.user}: no remote SDP ({text!r}); events: {self.events()}"
        return text

    def stats(self) -> Dict[str, Any]:
        return dict(self.page.evaluate("phone.stats()"))

    def media_grows(self, seconds: float = 1.5) -> Dict[str, Any]:
        """Packets sent and received both grow over ``seconds``: audio flows both ways now."""
        first = self.stats()
        time.sleep(seconds)
        second = self.stats()
        assert second["sent"] > first["sent"], (self.user, first, second)
        assert second["received"] > first["received"], (self.user, first, second)
        return {"before": first, "after": second}

    def video_grows(self, seconds: float = 2.0) -> Dict[str, Any]:
        """Video frames encoded and sent, and received and decoded, all grow over ``seconds``."""
        first = self.stats()
        time.sleep(seconds)
        second = self.stats()
        for key in ("videoSent", "framesEncoded", "videoReceived", "framesDecoded"):
            assert second[key] > first[key], (self.user, key, first, second)
        return {"before": first, "after": second}


class Page:
    """A browser page with JsSIP (rig/web/phone.js) or SIP.js (SimpleUser, rig/web/sipjs.html), as the
    test suite's other browser tests drive them."""

    def __init__(self, context: Any, site: web.Server, rig: Rig, client: str, name: str) -> None:
        self.client = client
        self.page = context.new_page()
        if client == "jssip":
            self.page.goto(site.url, timeout=15000)
            self.phone: Optional[WebPhone] = WebPhone(self.page, name).start(rig)
        else:
            self.phone = None
            self.page.goto(site.url.replace("phone.html", "sipjs.html"), timeout=15000)
            self.page.wait_for_function("window.sipjsPhone !== undefined", timeout=15000)
            self.page.evaluate("([u, n, d]) => sipjsPhone.start(u, n, d)", [rig.gw.wss_url, name, "127.0.0.1"])

    def wait_incoming(self, timeout: float) -> None:
        if self.phone is not None:
            self.phone.wait_event("incoming", timeout=timeout)
        else:
            self.page.wait_for_function("sipjsPhone.events.includes('incoming')", timeout=timeout * 1000)

    def answer(self) -> None:
        if self.phone is not None:
            self.phone.answer()
        else:
            self.page.evaluate("sipjsPhone.answer()")


class Browser:
    """A browser's registration as JsSIP sends it (Contact on a .invalid host, transport=ws) over its
    own WSS connection; ``port`` is the connection's local port, the binding OpenSIPS keeps."""

    def __init__(self, rig: Rig, name: str, expires: int = 600) -> None:
        self.name = name
        status, _, ws = WebSocket.handshake(rig.gw.ports.wss, secure=True)
        assert status == 101 and ws is not None, status
        self.ws: Optional[WebSocket] = ws
        self.port = ws.sock.getsockname()[1]
        host = f"{uuid.uuid4().hex[:12]}.invalid"
        ws.send(
            (
                f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/WSS {host};branch=z9hG4bK{uuid.uuid4().hex[:10]}\r\n"
                f"Max-Forwards: 69\r\n"
                f"To: <sip:{name}@127.0.0.1>\r\n"
                f"From: <sip:{name}@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n"
                f"Call-ID: {uuid.uuid4().hex}\r\n"
                f"CSeq: 1 REGISTER\r\n"
                f"Contact: <sip:{uuid.uuid4().hex[:8]}@{host};transport=ws>;expires={expires}\r\n"
                f"Expires: {expires}\r\n"
                f"Content-Length: 0\r\n\r\n"
            ).encode()
        )
        reply = ws.receive(5)
        assert reply is not None and reply.startswith(b"SIP/2.0 200"), reply

    def close(self) -> None:
        """The page is gone: its WebSocket closes, the binding stays in the location table."""
        if self.ws is not None:
            self.ws.close()
            self.ws = None


def answer_a_phone(rig: Rig, work: Path, page: Page, name: str, call_id: str, talk_ms: int) -> float:
    """A SIPp phone calls ``name`` (Call-ID ``call_id``, hanging up after ``talk_ms``); the page answers.
    The time (monotonic) the call reached the page."""
    uac = sipp.run(sipp.uac_scenario(sipp.Call((("pause", talk_ms), ("bye",)))), work, "uac",
                   sipp.Phone(user("caller")), rig.sip, service=name, call_id=call_id)  # fmt: skip
    try:
        page.wait_incoming(timeout=10)
        reached = time.monotonic()
        page.answer()
        assert uac.wait() == 0, uac.errors()
    finally:
        uac.stop()
    return reached


def hold_each_side_then_baresip_hangs_up(browser: WebPhone, phone: Any) -> Dict[str, Any]:
    """In a call between ``browser`` and a baresip ``phone`` (rig.baresip.Baresip): the browser holds and
    resumes, then baresip; audio flows again; baresip hangs up and both see the call end.  The browser's
    stats before the hang-up."""
    browser.hold_and_resume()
    phone.command("hold")
    browser.wait_event("session hold remote")
    phone.command("resume")
    browser.wait_event("session unhold remote")
    browser.wait_settled()
    browser.media_grows()
    seen = browser.stats()
    phone.command("hangup")
    browser.wait_event("session ended")
    phone.wait_event("CALL_CLOSED")
    return seen


def baresip_calls(phone: Any, browser: WebPhone, domain: str, calls: int) -> str:
    """baresip ``phone`` dials ``browser`` at ``domain``, which answers; the ``calls``-th call baresip
    established.  The Call-ID."""
    phone.command("dial", f"sip:{browser.user}@{domain}")
    browser.wait_event("incoming")
    call_id = browser.call_id()
    browser.answer()
    browser.wait_event("session confirmed")
    phone.wait_event("CALL_ESTABLISHED", count=calls)
    return call_id
