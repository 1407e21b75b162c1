"""Fixtures shared by the suites in this folder (real rtpengine, real Chromium), and the cfg coverage
the mutation check (fakes/mutate.py) reads: with GATEWAY_CFG_COVERAGE set, the cfg lines each test
ran on the fake host and its duration are written there as JSON."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Generator

import pytest
from hypothesis import settings

from fakes import cfgscript
from fakes.runtime import SHIPPED
from tests.browser_fixture import browser_peer, chromium
from tests.rtpengine_fixture import rtpengine, rtpengine_daemon

__all__ = ["browser_peer", "chromium", "rtpengine", "rtpengine_daemon"]

# The project's tests test the gateway as shipped, not the operator's rules: whatever was changed in
# opensips/gateway.ini and pyscripts/policy.py, what loads them by default (the fake's mod_init, the tracer
# run by a test, a real OpenSIPS of tests/e2e) loads fakes/shipped/ instead.  An operator's own test names
# its files (Gateway(files=...)); tests/test_policy.py checks that the operator's files load.
os.environ["GATEWAY_SETTINGS"], os.environ["GATEWAY_POLICY"] = SHIPPED

# No time limit per hypothesis example (its default is 200 ms): an example that ran long on a loaded machine
# (CI runs browsers beside it) failed a test of behaviour.  Speed lives in bench/, never in a test.
settings.register_profile("gateway", deadline=None)
settings.load_profile("gateway")

_COVERAGE_FILE = os.environ.get("GATEWAY_CFG_COVERAGE")
_COVERED: Dict[str, Dict[str, Any]] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    if not _COVERAGE_FILE:
        yield
        return
    cfgscript.COVERAGE = set()
    started = time.monotonic()
    try:
        yield
    finally:
        _COVERED[item.nodeid] = {"lines": sorted(cfgscript.COVERAGE), "seconds": time.monotonic() - started}
        cfgscript.COVERAGE = None


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _COVERAGE_FILE:
        with open(_COVERAGE_FILE, "w", encoding="utf-8") as handle:
            json.dump(_COVERED, handle)
