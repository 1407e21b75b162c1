"""A real Chromium as a browser UA's media agent: its RTCPeerConnection makes and judges the SDP.

``Chromium`` starts Debian's ``/usr/bin/chromium`` (never a downloaded browser)
and drives it with Playwright over CDP, on ``about:blank`` with no network use; ``peer()``
gives a ``ChromiumPeer``: a ``fakes.ua.MediaAgent`` whose offers and answers
come from ``createOffer``/``createAnswer`` and which hands every SDP it is
sent to ``setRemoteDescription``.  If Chromium refuses one, the call raises
``SdpRejected`` with Chromium's reason, so a flow that reaches a browser with
SDP it cannot use fails there.

No media devices are needed: transceivers are added without tracks (a page on
about:blank has no ``navigator.mediaDevices``).  Chromium hides host addresses
behind mDNS names (``<uuid>.local``) in its candidates, which rtpengine cannot
resolve: its ICE checks go nowhere, and Chromium's own checks go to the
127.0.0.1 candidates rtpengine offers.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from .process import stop_process

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
)
#: How long to wait for ICE gathering (host candidates only: well under a second here).
GATHER_MS = 3000
CALL_TIMEOUT_MS = 15000
START_TIMEOUT = 20.0

_SCRIPT = """
window.gw = {
  pcs: {},
  gather(pc) {
    return new Promise(done => {
      if (pc.iceGatheringState === 'complete') return done();
      const timer = setTimeout(done, GATHER_MS);
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') { clearTimeout(timer); done(); }
      });
    });
  },
  pc(key) {
    if (!this.pcs[key]) this.pcs[key] = new RTCPeerConnection();
    return this.pcs[key];
  },
  async offer(key, video, direction, codecs) {
    const fresh = !this.pcs[key];
    const pc = this.pc(key);
    if (fresh) {
      pc.addTransceiver('audio', {direction});
      if (video) pc.addTransceiver('video', {direction});
    } else {
      for (const t of pc.getTransceivers()) if (!t.stopped) t.direction = direction;
    }
    if (codecs) {
      const wanted = RTCRtpReceiver.getCapabilities('audio').codecs.filter(
        c => codecs.includes(c.mimeType.split('/')[1].toLowerCase()));
      for (const t of pc.getTransceivers())
        if (t.receiver.track.kind === 'audio') t.setCodecPreferences(wanted);
    }
    await pc.setLocalDescription(await pc.createOffer());
    await this.gather(pc);
    return pc.localDescription.sdp;
  },
  async answer(key, sdp) {
    const pc = this.pc(key);
    await pc.setRemoteDescription({type: 'offer', sdp});
    // A phone-like browser that sends as well as receives (no track needed to say so).
    for (const t of pc.getTransceivers()) if (!t.stopped && !t.currentDirection) t.direction = 'sendrecv';
    await pc.setLocalDescription(await pc.createAnswer());
    await this.gather(pc);
    return pc.localDescription.sdp;
  },
  async accept(key, type, sdp) {
    const pc = this.pc(key);
    await pc.setRemoteDescription({type, sdp});
    return pc.signalingState;
  },
  async judge(sdp) {
    const pc = new RTCPeerConnection();
    try {
      await pc.setRemoteDescription({type: 'offer', sdp});
      return (await pc.createAnswer()).sdp;
    } finally {
      pc.close();
    }
  },
  close() {
    for (const pc of Object.values(this.pcs)) pc.close();
    this.pcs = {};
  },
};
""".replace("GATHER_MS", str(GATHER_MS))


class SdpRejected(AssertionError):
    """Chromium refused an SDP body (setRemoteDescription or createAnswer threw)."""


def chromium_binary() -> Optional[str]:
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else None


class Chromium:
    """One headless Chromium, started by us (so we hold its pid) and driven over CDP on 127.0.0.1.

    The DevTools endpoint listens on 127.0.0.1 on a port Chromium picks itself
    (``--remote-debugging-port=0``); it says which in ``DevToolsActivePort`` in
    its profile folder.  ``close()`` disconnects and stops the process by pid.
    """

    def __init__(self, profile: str, log_path: str, executable: str = CHROMIUM) -> None:
        args = [
            executable,
            *CHROMIUM_ARGS,
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._playwright: Optional[Playwright] = None
        try:
            port = _devtools_port(os.path.join(profile, "DevToolsActivePort"), self.process)
            self._playwright = sync_playwright().start()
            self.browser: Browser = self._playwright.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def new_page(self) -> Page:
        context = self.browser.contexts[0] if self.browser.contexts else self.browser.new_context()
        page = context.new_page()
        page.set_default_timeout(CALL_TIMEOUT_MS)
        page.goto("about:blank")
        page.evaluate(_SCRIPT)
        return page

    def peer(self, page: Optional[Page] = None, video: bool = False, codecs: Sequence[str] = ()) -> ChromiumPeer:
        return ChromiumPeer(page or self.new_page(), video, tuple(c.lower() for c in codecs))

    def close(self) -> None:
        try:
            if self._playwright is not None:
                try:
                    self.browser.close()
                finally:
                    self._playwright.stop()
                    self._playwright = None
        finally:
            stop_process(self.process)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _devtools_port(path: str, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode} before opening DevTools")
        try:
            with open(path, encoding="ascii") as handle:
                first = handle.readline().strip()
            if first.isdigit():
                return int(first)
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"chromium opened no DevTools port within {START_TIMEOUT}s")


@dataclass
class ChromiumPeer:
    """A ``MediaAgent`` backed by RTCPeerConnections in one Chromium page (one per dialog key)."""

    page: Page
    video: bool = False
    """Offer a video transceiver as well as audio."""
    codecs: Tuple[str, ...] = ()
    """Audio codecs to offer (lower-case names, e.g. ``("opus",)``); all of Chromium's when empty."""
    accepted: List[Tuple[str, str, str]] = field(default_factory=list)
    """(key, type, signaling state after) for every SDP Chromium took."""

    def _call(self, what: str, *args: Any) -> Any:
        try:
            return self.page.evaluate(f"([a, b, c, d]) => window.gw.{what}(a, b, c, d)", [*args, None, None, None][:4])
        except PlaywrightError as exc:
            raise SdpRejected(f"Chromium refused ({what}): {exc.message}") from None

    def offer(self, key: str, direction: str) -> str:
        return str(self._call("offer", key, self.video, direction, list(self.codecs) or None))

    def answer(self, key: str, offer: str) -> str:
        return str(self._call("answer", key, offer))

    def accept(self, key: str, kind: str, sdp: str) -> None:
        state = str(self._call("accept", key, kind, sdp))
        self.accepted.append((key, kind, state))

    def judge(self, offer: str) -> str:
        """Chromium's answer to an offer it is shown outside any call; SdpRejected if it refuses it."""
        return str(self._call("judge", offer))

    def close(self) -> None:
        self._call("close")
