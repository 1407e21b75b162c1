"""Nothing lost when OpenSIPS restarts (issue 16): registrations and calls kept in the database,
and a browser's binding never dialled.

The rig runs the repository's cfg as it is (usrloc write-back, dialog db_mode 2, both into the
SQLite database of site-params.cfg) with the two timers at 2 s instead of the cfg's 10 s, so a
test waits a little longer than one period before a ``kill -9``: what was written by then must
survive it.  A graceful stop writes everything.  OpenSIPS alone restarts; rtpengine keeps running
(a call's media flows through it while OpenSIPS is away).

A browser's binding (branch flag WEBRTC) is reached only over its own WebSocket: it goes when its
WebSocket closes (event_route[E_CORE_TCP_DISCONNECT]), and one that came back from the database
after a restart, without its WebSocket, is not dialled (``tcp_no_new_conn_bflag``).  The tests
listen on the port the browser registered from after its connection is gone, and count the
connections OpenSIPS opens to it (none may come).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import pytest

from rig import mi, ng, sipp, web
from rig.gateway import DEFAULT_SETTINGS, Gateway

from .conftest import Rig, need, own_rig
from .rawsip import SDP, SipSocket
from .sipcalls import SHORT_CALL_STEPS, call, media_both_ways, new_call_id, registered, settle, user
from .sniff import Connects, Sniffer
from .webphones import Browser, Page, answer_a_phone

#: usrloc's and dialog's write period on this rig (the cfg has 10 s).
PERIOD = 2
WRITTEN = PERIOD + 1.5
"""Seconds after which what changed is surely in the database (one period and some)."""


@pytest.fixture(scope="module")
def restart_rig(opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    need("sipp")
    folder = tmp_path_factory.mktemp("restart")
    extra = "\n".join(
        [
            f'modparam("usrloc", "timer_interval", {PERIOD})',
            f'modparam("dialog", "db_update_period", {PERIOD})',
        ]
    )
    with own_rig(opensips_bin, folder, extra_params=extra) as rig:
        yield rig


def contacts_of(rig: Rig, *users: str) -> Dict[str, List[str]]:
    table = mi.contacts(rig.gw.mi_url)
    return {u: sorted(c["Contact"] for c in table.get(u, [])) for u in users}


# -- registrations -----------------------------------------------------------------------------


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "kill-9"])
def test_sip_phones_are_reachable_after_a_restart_without_registering_again(
    restart_rig: Rig, work: Path, kill: bool
) -> None:
    rig = restart_rig
    phones = [registered(rig, work, "keep") for _ in range(3)]
    before = contacts_of(rig, *(p.user for p in phones))
    assert all(len(v) == 1 for v in before.values()), before
    if kill:
        time.sleep(WRITTEN)
    rig.gw.restart_opensips(kill=kill)
    assert contacts_of(rig, *(p.user for p in phones)) == before
    caller = sipp.Phone(user("caller"))
    for callee in phones:
        outcome = call(rig, work, caller, callee, *SHORT_CALL_STEPS, name=f"after-{callee.user}")
        media_both_ways(outcome.commands, outcome.call_id, minimum=5)
        settle(rig, outcome.call_id)


# -- calls -------------------------------------------------------------------------------------

CALLER_STEPS = sipp.Call(
    (("pause", 6000), ("reinvite", "sendonly"), ("pause", 300), ("reinvite", "sendrecv"), ("expect_bye",))
)
"""The caller holds and resumes after the restart; then the callee hangs up."""
CALLEE_STEPS = sipp.Call((("expect_reinvite",), ("expect_reinvite",), ("pause", 500), ("bye",)))


def packets(rig: Rig, call_id: str) -> Dict[str, int]:
    """Packets rtpengine got so far from each tag of the call (asked directly, not through OpenSIPS)."""
    assert rig.gw.relay is not None
    return ng.packet_counts(ng.command(rig.gw.relay.engine, {"command": "query", "call-id": call_id}))


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "kill-9"])
def test_a_call_in_progress_survives_a_restart(restart_rig: Rig, work: Path, kill: bool) -> None:
    rig = restart_rig
    caller = registered(rig, work, "talker")
    callee = registered(rig, work, "listener")
    call_id = new_call_id("restart")
    uas = sipp.run(sipp.uas_scenario(CALLEE_STEPS), work, "uas", callee, rig.sip, echo=True)
    uac = None
    try:
        time.sleep(0.3)  # SIPp binds its port before it can be called
        uac = sipp.run(sipp.uac_scenario(CALLER_STEPS), work, "uac", caller, rig.sip, service=callee.user,
                       call_id=call_id)  # fmt: skip
        deadline = time.monotonic() + 5
        while not any(int(d.get("state", 0)) == 4 for d in rig.live_dialogs(call_id)):
            assert time.monotonic() < deadline, f"the call was not answered: {rig.live_dialogs(call_id)}"
            time.sleep(0.05)
        time.sleep(WRITTEN if kill else 0.5)
        at_stop = packets(rig, call_id)
        away = rig.gw.restart_opensips(kill=kill)
        at_start = packets(rig, call_id)
        (dialog,) = rig.live_dialogs(call_id)
        assert int(dialog["state"]) == 4, dialog
        caller_code, callee_code = uac.wait(), uas.wait()
        assert caller_code == 0 and callee_code == 0, f"{uac.errors()}\n{uas.errors()}"
    finally:
        if uac is not None:
            uac.stop()
        uas.stop()
    grown = {tag: at_start.get(tag, 0) - n for tag, n in at_stop.items()}
    assert len(grown) == 2 and all(n > 0 for n in grown.values()), (away, at_stop, at_start)
    ops = [str(e.sent.get("command")) for e in rig.relay.commands(call_id)]
    assert ops == ["offer", "answer", "offer", "answer", "offer", "answer", "delete"], ops
    settle(rig, call_id)
    how = "kill -9" if kill else "graceful"
    print(f"restart ({how}): OpenSIPS away {away:.2f} s, packets per leg meanwhile {grown}")


# -- browsers' bindings ------------------------------------------------------------------------


class Listener:
    """A TCP listener on the port a browser registered from: every connection OpenSIPS opens toward
    the dead binding lands here and is counted.  Only without a packet socket (``Connects`` counts
    attempts even while the browser's closed connection holds the port in TIME_WAIT, for 60 s, which
    no listener can bind through)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 5
        while True:  # the browser's side of the closed connection may hold the port a moment (FIN_WAIT)
            try:
                self.sock.bind(("127.0.0.1", port))
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    self.sock.close()
                    # once seen under the full suite's load (EADDRINUSE after 5 s): say what holds the port
                    try:  # ss is iproute2's (bin/setup installs it)
                        held = subprocess.run(["ss", "-tanp", f"( sport = :{port} or dport = :{port} )"],
                                              capture_output=True, text=True, check=False).stdout  # fmt: skip
                    except OSError as why:
                        held = f"(no ss: {why})"
                    raise OSError(exc.errno, f"{exc.strerror}: 127.0.0.1:{port} still held:\n{held}") from exc
                time.sleep(0.1)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.attempts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.attempts += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@contextlib.contextmanager
def listening(port: int) -> Iterator[Union[Connects, Listener]]:
    """Counts the connections OpenSIPS tries toward ``port`` of 127.0.0.1 (``.attempts``)."""
    if Sniffer.available() is None:
        with Connects(port) as watch:
            yield watch
        return
    listener = Listener(port)
    try:
        yield listener
    finally:
        listener.close()


def invite(rig: Rig, callee: str, seconds: float = 8.0) -> Tuple[int, float, str]:
    """A plain SIP phone's INVITE to ``callee``: (final status, seconds to it, Call-ID)."""
    call_id = new_call_id("dead")
    with SipSocket(rig.sip, host="127.0.0.41") as phone:
        reply = phone.final(phone.request("INVITE", f"sip:{callee}@127.0.0.1", body=SDP, call_id=call_id), seconds)
    assert reply is not None, f"no final answer to the INVITE to {callee} within {seconds} s"
    return reply.status, reply.seconds, call_id


def call_the_dead_browser(rig: Rig, browser: Browser, expected: int = 480) -> float:
    """A SIP phone calls the browser, whose connection is gone: ``expected`` at once (480: its binding is
    there but not dialled; 404: it went with its WebSocket), no connection opened toward its old port,
    nothing left in rtpengine or OpenSIPS.  The seconds to the answer."""
    with listening(browser.port) as listener:
        status, seconds, call_id = invite(rig, browser.name)
        time.sleep(0.5)  # a connection attempt after the answer would still be counted
    assert listener.attempts == 0, f"OpenSIPS tried {listener.attempts} connection(s) toward the browser's old port"
    assert status == expected, status
    settle(rig, call_id)
    return seconds


def test_a_browser_s_binding_goes_with_its_websocket(restart_rig: Rig) -> None:
    rig = restart_rig
    browser = Browser(rig, user("gone"))
    assert browser.name in mi.contacts(rig.gw.mi_url)
    browser.close()
    deadline = time.monotonic() + 5
    while browser.name in mi.contacts(rig.gw.mi_url):
        assert time.monotonic() < deadline, "the binding outlived its WebSocket by 5 s"
        time.sleep(0.05)
    call_the_dead_browser(rig, browser, expected=404)


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "kill-9"])
def test_browsers_restored_after_a_restart_are_not_dialled(restart_rig: Rig, kill: bool) -> None:
    """The WebSocket goes with the old OpenSIPS, and no event removes the binding: the database brings
    it back, with its WEBRTC flag, and tcp_no_new_conn_bflag keeps OpenSIPS from dialling it."""
    rig = restart_rig
    browser = Browser(rig, user("restored"))
    if kill:
        time.sleep(WRITTEN)
    rig.gw.restart_opensips(kill=kill)
    assert len(mi.contacts(rig.gw.mi_url).get(browser.name, [])) == 1, "the browser's binding was not restored"
    browser.close()
    seconds = call_the_dead_browser(rig, browser)
    print(f"a call to a restored browser binding without its WebSocket: 480 after {seconds:.3f} s")


def test_a_call_forked_to_a_dead_browser_and_a_phone_rings_the_phone(restart_rig: Rig, work: Path) -> None:
    rig = restart_rig
    browser = Browser(rig, user("forked"))
    phone = registered(rig, work, "", name=browser.name)  # the same user on a SIP phone
    rig.gw.restart_opensips()  # the browser's binding comes back without its WebSocket
    browser.close()
    assert len(mi.contacts(rig.gw.mi_url)[browser.name]) == 2
    caller = sipp.Phone(user("caller"))
    with listening(browser.port) as listener:
        outcome = call(rig, work, caller, phone, *SHORT_CALL_STEPS, name="forked")
    assert listener.attempts == 0, f"OpenSIPS tried {listener.attempts} connection(s) toward the browser's old port"
    media_both_ways(outcome.commands, outcome.call_id, minimum=5)
    settle(rig, outcome.call_id)


# -- browsers coming back ----------------------------------------------------------------------


@pytest.mark.parametrize("client", ["jssip", "sipjs"])
def test_browsers_register_again_by_themselves_after_a_restart_and_are_called(
    restart_rig: Rig, work: Path, chromium: Any, site: web.Server, client: str
) -> None:
    """JsSIP (connection recovery, 2 s at first) and SIP.js's SimpleUser (reconnection attempts, 4 s
    apart) reconnect and register again with the same Contact: the binding the database brought back
    is updated, not doubled, and a SIP phone's call reaches the browser, with audio both ways."""
    rig = restart_rig
    name = user(client)
    context = chromium.new_context(ignore_https_errors=True, permissions=["microphone"])
    try:
        page = Page(context, site, rig, client, name)
        (before,) = mi.contacts(rig.gw.mi_url)[name]
        rig.gw.restart_opensips()
        accepting = time.monotonic()
        deadline = accepting + 30
        while True:
            now = mi.contacts(rig.gw.mi_url).get(name, [])
            if any(c.get("Received") != before.get("Received") for c in now):
                break
            assert time.monotonic() < deadline, f"{client} did not register again within 30 s: {now}"
            time.sleep(0.05)
        registered_after = time.monotonic() - accepting
        assert len(now) == 1, now
        call_id = new_call_id(f"back-{client}")
        reached_after = answer_a_phone(rig, work, page, name, call_id, 1500) - accepting
    finally:
        context.close()
    media_both_ways(rig.relay.commands(call_id), call_id)
    settle(rig, call_id)
    print(
        f"FIGURE {client} after a restart: registered again {registered_after:.2f} s after OpenSIPS accepted,"
        f" called {reached_after:.2f} s after"
    )


def test_a_bye_toward_a_browser_whose_websocket_is_gone_is_not_dialled(
    restart_rig: Rig, work: Path, chromium: Any, site: web.Server
) -> None:
    """Mid-call, JsSIP's WebSocket closes: the phone's BYE, routed to the browser's old connection, gets
    480 at once (the router marks it WEBRTC), OpenSIPS opens no connection toward it, and the BYE still
    ends the dialog and releases the media."""
    rig = restart_rig
    name = user("midcall")
    call_id = new_call_id("midcall")
    context = chromium.new_context(ignore_https_errors=True, permissions=["microphone"])
    try:
        page = Page(context, site, rig, "jssip", name)
        (contact,) = mi.contacts(rig.gw.mi_url)[name]
        port = int(str(contact["Received"]).split(":")[2].split(";")[0])
        steps = sipp.Call((("pause", 2500), ("bye_refused", "480")))
        uac = sipp.run(sipp.uac_scenario(steps), work, "uac", sipp.Phone(user("caller")), rig.sip, service=name,
                       call_id=call_id)  # fmt: skip
        try:
            page.wait_incoming(timeout=10)
            page.answer()
            assert page.phone is not None
            page.phone.wait_event("session confirmed")
            page.page.evaluate("phone.state.ua._transport.socket._ws.close()")
            with listening(port) as listener:
                assert uac.wait() == 0, uac.errors()
                time.sleep(0.5)
        finally:
            uac.stop()
    finally:
        context.close()
    assert listener.attempts == 0, f"OpenSIPS tried {listener.attempts} connection(s) toward the browser's old port"
    settle(rig, call_id)


# -- re-registration storm -----------------------------------------------------------------------


def test_after_a_restart_every_client_is_registered_again_and_none_failed(opensips_bin: Optional[str]) -> None:
    """bench.storm at test scale (README "Restarts"; the benchmark runs 1,000): 100 clients, half
    JsSIP-like browsers over WSS, half UDP phones, registrations of 10-20 s; after a graceful restart
    every browser registers again, the phones' bindings come back from the database, none fails."""
    if opensips_bin is None:
        pytest.skip("no OpenSIPS")
    need("rtpengine")
    from bench import storm

    settings = DEFAULT_SETTINGS.replace("trusted_sources =", "trusted_sources = 127.0.0.1")
    extra = "\n".join(
        [
            "tcp_connection_lifetime = 25",
            'modparam("registrar", "max_expires", 20)',
            'modparam("registrar", "min_expires", 10)',
            'modparam("registrar", "expires_max_deviation", 5)',
            'modparam("usrloc", "timer_interval", 2)',
        ]
    )
    with Gateway.start(opensips_bin, settings=settings, extra_params=extra) as gateway:
        # a thread of its own: Playwright's sync API may hold an event loop in this one
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            run = pool.submit(lambda: asyncio.run(storm.storm(gateway, 100, after=15, spread=3, asks=15)))
            tally, seen = run.result(timeout=300)
    assert tally.failed == [], tally.failed[:10]
    assert seen["before"] == seen["after"] == {"browsers": 50, "phones": 50}, seen
    assert seen["registered again"] == {"browsers": 50}, seen  # each over its new WebSocket
    peak = max(tally.sent.values())
    print(f"FIGURE storm of 100 after a restart: {sum(tally.sent.values())} REGISTERs in 15 s, peak {peak}/s, 0 failed")
