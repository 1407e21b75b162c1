"""Fixtures shared by the suites in this folder (real rtpengine, real Chromium)."""

from tests.browser_fixture import browser_peer, chromium
from tests.rtpengine_fixture import rtpengine, rtpengine_daemon

__all__ = ["browser_peer", "chromium", "rtpengine", "rtpengine_daemon"]
