"""Browsers (JsSIP in headless Chromium) as phones of the real gateway."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence

from .conftest import Rig


class WebPhone:
    """One page = one JsSIP user agent registered over WSS (or WS)."""

    def __init__(self, page: Any, user: str) -> None:
        self.page = page
        self.user = user

    def start(
        self, rig: Rig, secure: bool = True, domain: str = "127.0.0.1", password: str = "", wait: str = "registered"
    ) -> WebPhone:
        """Register (with ``password``, JsSIP answers digest challenges); wait for the ``wait`` event."""
        url = rig.gw.wss_url if secure else rig.gw.ws_url
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

    def hangup(self) -> None:
        self.page.evaluate("phone.hangup()")

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
