"""Fixtures for the end-to-end suite: a real OpenSIPS (each one named by OPENSIPS_BIN) with our cfg and Python.

Every test here is marked ``opensips``.  Without an OpenSIPS binary (OPENSIPS_BIN
unset, none on PATH) the whole suite is skipped with one reason; a path in
OPENSIPS_BIN that is no executable file is an error in every test of that
"binary", with the path and why (a typo must not look like a skipped suite).
Without rtpengine or SIPp or Chromium, the tests that need them are skipped
with theirs.  Each OpenSIPS binary gets one rig for the session (``gateway``);
the router runs behind the probe (rig/probe/opensips_probe.py) so tests can
read what the host showed it.  After every test, each rig it used must show no
Python failure that the test made (``python_quiet``), unless the test asks for
``python_failures_expected``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Generator, Iterator, List, Optional, Tuple, Union

import pytest

from rig import mi, ng, web
from rig.gateway import REPO, Gateway, find_opensips, version_of

PROBE = REPO / "rig" / "probe" / "opensips_probe.py"
OPENSIPS = find_opensips()
BINARIES = OPENSIPS.found
NO_OPENSIPS = (
    "no OpenSIPS to test against: set OPENSIPS_BIN=/path/to/sbin/opensips (several separated by ':') "
    "or put opensips on PATH"
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failed test's report shows what each OpenSIPS it used logged during it (the last LOG_TAIL lines): the
    rigs are gone when the session ends, and a failure in CI is read from its report alone."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for rig, offset in item.stash.get(LOGGED, []):
        lines = rig.log_since(offset).splitlines()[-LOG_TAIL:]
        report.sections.append((f"OpenSIPS {rig.gw.version} logged during the test (last {LOG_TAIL} lines)",
                                "\n".join(lines)))  # fmt: skip


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.opensips)


@dataclass(frozen=True)
class NotExecutable:
    """A part of OPENSIPS_BIN that names no executable file (its path and why)."""

    problem: str


# The bad paths first: with -x the run stops on them at once, not after the good binaries' minutes.
PARAMS: List[Union[str, NotExecutable, None]] = [NotExecutable(p) for p in OPENSIPS.problems]
PARAMS += list(BINARIES)
IDS = [f"OPENSIPS_BIN-not-executable-{n + 1}" for n in range(len(OPENSIPS.problems))]
IDS += [f"opensips-{version_of(b)}" for b in BINARIES]


@pytest.fixture(scope="session", params=PARAMS or [None], ids=IDS or ["no-opensips"])
def opensips_bin(request: pytest.FixtureRequest) -> Optional[str]:
    """Each binary in turn.  A real session fixture, not metafunc.parametrize: that makes a
    pseudo-fixture per test module, and every rig depending on it was started again per module.
    A path in OPENSIPS_BIN that is no executable fails every test that needs it, with the path."""
    param: Union[str, NotExecutable, None] = request.param
    if isinstance(param, NotExecutable):
        pytest.fail(f"OPENSIPS_BIN names no executable: {param.problem} (OPENSIPS_BIN={OPENSIPS.named!r})", False)
    return param


def need(program: str) -> None:
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed (bin/setup installs it)")


class Rig:
    """The running gateway plus what the tests read from it."""

    def __init__(self, gateway: Gateway, probe_log: Path) -> None:
        self.gw = gateway
        self.probe_log = probe_log

    @property
    def sip(self) -> tuple[str, int]:
        return self.gw.sip

    def probes(self, call_id: Optional[str] = None) -> List[Dict[str, Any]]:
        if not self.probe_log.exists():
            return []
        records = [json.loads(line) for line in self.probe_log.read_text().splitlines() if line.strip()]
        return [r for r in records if call_id is None or (r.get("before") or {}).get("$ci") == call_id]

    def live_dialogs(self, call_id: Optional[str] = None) -> List[Dict[str, Any]]:
        """Dialogs not yet ended (state 5 = deleted; OpenSIPS lists those a few seconds more)."""
        with self.gw.inside():
            found = mi.dialogs(self.gw.mi_url)
        return [d for d in found if int(d.get("state", 0)) < 5 and (call_id is None or d.get("callid") == call_id)]

    def sessions(self) -> List[str]:
        assert self.gw.relay is not None
        with self.gw.inside():
            return ng.call_ids(self.gw.relay.engine)

    @property
    def relay(self) -> ng.Relay:
        assert self.gw.relay is not None
        return self.gw.relay

    def log_size(self) -> int:
        """Bytes OpenSIPS has logged so far (for ``log_since``)."""
        path = self.gw.log_path
        return path.stat().st_size if path.exists() else 0

    def log_since(self, offset: int) -> str:
        """What OpenSIPS logged after ``offset`` bytes."""
        path = self.gw.log_path
        if not path.exists():
            return ""
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")

    def errors_in_log(self) -> List[str]:
        return [line for line in self.gw.log().splitlines() if "ERROR" in line or "CRITICAL" in line]

    def statistics(self, *names: str) -> Dict[str, int]:
        """MI get_statistics, by bare name (``python_failures``, ``inuse_transactions``, ...)."""
        with self.gw.inside():
            answer = mi.call(self.gw.mi_url, "get_statistics", {"statistics": list(names)}) or {}
        return {key.split(":", 1)[-1]: int(value) for key, value in answer.items()}

    def engine_nodes(self) -> List[Dict[str, Any]]:
        """rtpengine nodes as OpenSIPS sees them (3.6: rtpengine_show; 4.0 renamed it rtpengine:show)."""
        for command in ("rtpengine_show", "rtpengine:show"):
            try:
                with self.gw.inside():
                    sets = mi.call(self.gw.mi_url, command) or []
            except mi.MIError:
                continue
            return [node for entry in sets for node in entry.get("Nodes", [])]
        raise mi.MIError("neither rtpengine_show nor rtpengine:show answered")


@pytest.fixture(scope="session")
def gateway(opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    if opensips_bin is None:
        pytest.skip(NO_OPENSIPS)
    need("rtpengine")
    need("openssl")
    folder = tmp_path_factory.mktemp(f"opensips-{version_of(opensips_bin)}")
    probe_log = folder / "probe.jsonl"
    gw = Gateway.start(opensips_bin, folder=folder, entry=PROBE, env={"GATEWAY_PROBE_LOG": str(probe_log)})
    try:
        yield Rig(gw, probe_log)
    finally:
        gw.stop()


@contextlib.contextmanager
def own_rig(opensips_bin: Optional[str], folder: Path, **options: Any) -> Iterator[Rig]:
    """A rig of a test module's own (other settings, entry, engines), stopped by pid at the end."""
    if opensips_bin is None:
        pytest.skip(NO_OPENSIPS)
    need("rtpengine")
    need("openssl")
    gw = Gateway.start(opensips_bin, folder=folder, **options)
    try:
        yield Rig(gw, folder / "probe.jsonl")
    finally:
        gw.stop()


#: What OpenSIPS logs when the Python side failed: the cfg's fail-safe (route[python_failed]), a
#: traceback from the python module, an exception left pending in a worker (python_exec.c).
PYTHON_FAILURE_MARKS = ("python routing failed", "Traceback", "exception set")


@contextlib.contextmanager
def python_quiet(rig: Rig) -> Iterator[None]:
    """Assert that nothing done inside made the Python side fail: python_failures (MI) unchanged,
    and none of PYTHON_FAILURE_MARKS in what OpenSIPS logged meanwhile."""
    before = rig.statistics("python_failures")["python_failures"]
    offset = rig.log_size()
    yield
    after = rig.statistics("python_failures")["python_failures"]
    marked = [line for line in rig.log_since(offset).splitlines() if any(m in line for m in PYTHON_FAILURE_MARKS)]
    assert after == before and not marked, (
        f"the Python side failed on OpenSIPS {rig.gw.version} ({rig.gw.folder}): python_failures {before} -> {after}"
        + "".join(f"\n  {line}" for line in marked[:20])
    )


#: The fixtures that are rigs (``trunk_rig`` is a rig and a folder).
RIG_FIXTURES = ("gateway", "faulty", "guarded", "rsa_rig", "trunk_rig")


@pytest.fixture
def python_failures_expected() -> None:
    """Asked for by a test that makes the Python side fail on purpose (and counts the failures itself)."""


#: The rigs a test uses and how much each had logged when it began (``pytest_runtest_makereport``).
LOGGED = pytest.StashKey[List[Tuple[Rig, int]]]()
#: The lines of a rig's log a failed test's report shows: the last ones it logged during the test.
LOG_TAIL = 60


@pytest.fixture(autouse=True)
def no_python_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test, on every rig it uses: the Python side failed nowhere during the test."""
    rigs = []
    for name in RIG_FIXTURES:
        if name in request.fixturenames:
            value = request.getfixturevalue(name)
            rigs.append(value[0] if isinstance(value, tuple) else value)
    request.node.stash[LOGGED] = [(rig, rig.log_size()) for rig in rigs]
    if "python_failures_expected" in request.fixturenames:
        yield
        return
    with contextlib.ExitStack() as stack:
        for rig in rigs:
            stack.enter_context(python_quiet(rig))
        yield


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder for one test's scenarios and logs."""
    return tmp_path


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[web.Server]:
    try:
        folder = web.site(tmp_path_factory.mktemp("web"))
    except web.MissingTool as exc:
        pytest.skip(str(exc))
    server = web.Server(folder)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="package")  # torn down with tests/e2e: one live sync Playwright at a time
def playwright() -> Iterator[Any]:
    """The sync Playwright of the suite (Debian's Chromium only: web.chromium_path)."""
    need("chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="package")
def chromium(playwright: Any) -> Iterator[Any]:
    browser = playwright.chromium.launch(executable_path=web.chromium_path(), headless=True, args=web.CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def browser_phone(chromium: Any, site: web.Server, gateway: Rig) -> Iterator[Callable[..., Any]]:
    """``make(prefix, secure=True, name="")``: a JsSIP page of its own registered at the shared gateway
    (a webphones.WebPhone); every page is closed at the test's end."""
    from .sipcalls import user  # both import this module
    from .webphones import WebPhone

    contexts = []

    def make(prefix: str, secure: bool = True, name: str = "") -> WebPhone:
        context = chromium.new_context(ignore_https_errors=True, permissions=["microphone", "camera"])
        contexts.append(context)
        page = context.new_page()
        page.goto(site.url, timeout=15000)
        return WebPhone(page, name or user(prefix)).start(gateway, secure)

    try:
        yield make
    finally:
        for context in contexts:
            context.close()
