"""A real Chromium for tests: Debian's /usr/bin/chromium, started by pid, driven over CDP on 127.0.0.1.

Importable by any suite; registered for this folder by ``tests/conftest.py``.

- ``chromium`` (session): one headless Chromium, stopped by its pid at the end,
  failed tests included.  Skips, with one reason, when Chromium or the
  ``playwright`` package is missing (bin/setup installs both; Playwright never
  downloads a browser here).
- ``browser_peer`` (per test): a factory of ``ChromiumPeer`` media agents, each
  on its own page, all closed at the end of the test.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Callable, Iterator, List

import pytest

if TYPE_CHECKING:
    from fakes.browser import Chromium, ChromiumPeer


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the playwright package is not installed (requirements-dev.txt; bin/setup installs it)")
    from fakes.browser import Chromium, chromium_binary

    binary = chromium_binary()
    if binary is None:
        pytest.skip("Chromium is not installed (Debian package chromium; bin/setup installs it)")
    folder = tmp_path_factory.mktemp("chromium")
    browser = Chromium(str(folder / "profile"), str(folder / "chromium.log"), binary)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def browser_peer(chromium: Chromium) -> Iterator[Callable[..., ChromiumPeer]]:
    peers: List[ChromiumPeer] = []

    def make(**options: Any) -> ChromiumPeer:
        peer = chromium.peer(**options)
        peers.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in peers:
            peer.page.close()
