"""Restarts and dead connections on the fake OpenSIPS, which runs opensips.cfg (issue 16).

What the fake takes from the cfg, as OpenSIPS does: usrloc's working mode and dialog's db_mode
(what a restart brings back from the database), db_flush_vals_profiles (whether the timer writes a
dialog's values), and tcp_no_new_conn_bflag (a branch with that flag goes over the peer's open
connection or not at all).  ``Gateway.flush()`` is the modules' timer, ``restart(kill=...)`` a
graceful stop or a kill -9; tests/e2e/test_restart.py shows the same on the real OpenSIPS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import pytest

from fakes.rtpengine import MemoryEngine
from fakes.runtime import CFG, Gateway
from fakes.ua import UA, Call, Network
from gateway.settings import Settings
from tests.flowcheck import assert_clean


class SwitchableEngine(MemoryEngine):
    """Offers and answers fail while ``broken`` (no ports), as tests/test_flows.py's BrokenEngine."""

    broken = True

    def command(self, ng: dict) -> dict:  # type: ignore[type-arg]
        if self.broken and ng["command"] in ("offer", "answer"):
            return {"result": "error", "error-reason": "no ports"}
        return super().command(ng)


def established(net: Network, caller: UA, callee: UA) -> Call:
    call = net.invite(caller, callee.name)
    net.reply(call, callee, 200)
    assert call.established
    return call


def only_it_rings(gateway: Gateway, net: Network, call: Call, callee: UA, hangs_up: str) -> None:
    """``callee`` alone got the call: it answers, ``hangs_up`` ends it; no connection was opened toward
    anyone, nothing is left."""
    assert net.callees(call) == [callee]
    net.reply(call, callee, 200)
    net.bye(call, hangs_up)
    assert gateway.dialled == []
    assert_clean(gateway, net)


# -- a browser's binding without its connection -------------------------------------------------
#
# A binding whose WebSocket closes goes with it (the cfg's event_route[E_CORE_TCP_DISCONNECT]).  One
# whose connection went with a restart of OpenSIPS comes back from the database with no connection
# and no event: tcp_no_new_conn_bflag keeps OpenSIPS from dialling it.


def dead_after_a_restart(gateway: Gateway, net: Network, browser: UA) -> None:
    """OpenSIPS restarts; the browser's WebSocket went with it and it has not come back yet."""
    gateway.restart()
    net.disconnect(browser)
    assert any("WEBRTC" in c.bflags for c in gateway.location[browser.name]), "the binding was not restored"


def test_a_browser_s_binding_goes_with_its_websocket() -> None:
    gateway = Gateway()
    net = Network(gateway)
    alice, bob = net.registered(net.browser("alice"), net.phone("bob"))
    net.disconnect(alice)
    assert "alice" not in gateway.location
    assert net.invite(bob, "alice").statuses() == [404]
    assert gateway.dialled == []
    assert_clean(gateway, net)


def test_a_sip_phone_s_binding_outlives_its_tcp_connection() -> None:
    """A phone over TCP not behind NAT listens where it registered from: OpenSIPS may connect to it anew."""
    gateway = Gateway()
    net = Network(gateway)
    phone, bob = net.registered(net.phone("tcp", proto="tcp"), net.phone("bob"))
    gateway.close_connection(phone.endpoint)  # the connection closes, the phone stays
    assert [c.uri for c in gateway.location["tcp"]] == [phone.contact]
    call = established(net, bob, phone)
    assert gateway.dialled == [phone.endpoint]
    net.bye(call, "caller")
    assert_clean(gateway, net)


def test_a_call_to_a_dead_browser_binding_gets_480_and_dials_nothing() -> None:
    gateway = Gateway()
    net = Network(gateway)
    alice, bob = net.registered(net.browser("alice"), net.phone("bob"))
    dead_after_a_restart(gateway, net, alice)
    call = net.invite(bob, "alice")
    assert call.statuses() == [480]
    assert gateway.dialled == []
    assert call.rtpengine_offers(), "the browser's branch took the media proxy before its send failed"
    assert_clean(gateway, net)  # the offer was taken back; no dialog, no transaction


def test_a_call_forked_to_a_dead_browser_and_a_phone_goes_on_with_the_phone() -> None:
    gateway = Gateway()
    net = Network(gateway)
    web, phone, carol = net.registered(net.browser("both"), net.phone("both", nat=True), net.phone("carol"))
    dead_after_a_restart(gateway, net, web)
    only_it_rings(gateway, net, net.invite(carol, "both"), phone, "callee")


def test_without_a_media_proxy_503_and_then_a_dead_browser_480_in_the_same_worker() -> None:
    """The cfg tells the two apart by $var(gw_dropped), which must be reset for every request: $var
    values live on in the worker from one message to the next."""
    engine = SwitchableEngine()
    engine.broken = False
    gateway = Gateway(Settings(), rtpengine=engine, strict=False)
    net = Network(gateway)
    alice, bob, carol = net.registered(net.browser("alice"), net.phone("bob"), net.browser("carol"))
    dead_after_a_restart(gateway, net, alice)
    net.reconnect(carol)
    net.register(carol)
    engine.broken = True
    assert net.invite(carol, "bob").statuses() == [503]
    engine.broken = False
    assert net.invite(bob, "alice").statuses() == [480]
    assert gateway.dialled == []


def test_a_reloaded_page_leaves_one_binding_its_new_one() -> None:
    gateway = Gateway()
    net = Network(gateway)
    alice, bob = net.registered(net.browser("alice"), net.phone("bob"))
    net.reconnect(alice, reload=True)
    net.register(alice)  # a new Contact; the old one went with its WebSocket
    assert [c.uri for c in gateway.location["alice"]] == [alice.contact]
    only_it_rings(gateway, net, net.invite(bob, "alice"), alice, "caller")


def without_no_new_conn(tmp_path: Path) -> str:
    text = Path(CFG).read_text()
    assert "\ntcp_no_new_conn_bflag = WEBRTC\n" in text
    path = tmp_path / "opensips.cfg"
    path.write_text(text.replace("\ntcp_no_new_conn_bflag = WEBRTC\n", "\n"))
    return str(path)


def test_without_tcp_no_new_conn_bflag_opensips_dials_the_dead_browser(tmp_path: Path) -> None:
    """What the core parameter prevents (seen on the real 3.6.8: a connection to the old port)."""
    gateway = Gateway(cfg_path=without_no_new_conn(tmp_path))
    net = Network(gateway)
    alice, bob = net.registered(net.browser("alice"), net.phone("bob"))
    dead_after_a_restart(gateway, net, alice)
    net.invite(bob, "alice")
    assert gateway.dialled == [alice.endpoint]
    net.nobody_answers()


# -- restarts ----------------------------------------------------------------------------------


def phones(net: Network) -> Tuple[UA, UA]:
    return net.registered(net.phone("alice", nat=True), net.phone("bob"))  # type: ignore[return-value]


def test_registrations_come_back_after_a_graceful_restart() -> None:
    gateway = Gateway()
    net = Network(gateway)
    alice, bob = phones(net)
    gateway.restart()
    call = established(net, alice, bob)
    net.bye(call, "caller")
    assert_clean(gateway, net)


def test_after_kill_9_what_the_timer_wrote_comes_back_and_what_came_later_does_not() -> None:
    gateway = Gateway()
    net = Network(gateway)
    alice, bob = phones(net)
    gateway.flush()
    carol = net.registered(net.phone("carol"))[0]
    gateway.restart(kill=True)
    assert set(gateway.location) == {"alice", "bob"}
    assert net.invite(alice, "carol").statuses() == [404]
    call = established(net, carol, bob)
    net.bye(call, "callee")
    assert_clean(gateway, net)


@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "kill-9-after-the-timer"])
def test_a_call_through_the_media_proxy_goes_on_after_a_restart(kill: bool) -> None:
    """After kill -9, the call as the timer wrote it: dialog writes a dialog's values on its timer only
    with db_flush_vals_profiles (else the BYE would not know the call took the media proxy)."""
    gateway = Gateway()
    net = Network(gateway)
    alice, bob = phones(net)
    call = established(net, alice, bob)
    assert call.rtpengine_offers()
    if kill:
        gateway.flush()
    gateway.restart(kill=kill)
    net.reinvite(call, "callee", hold=True)
    net.reinvite(call, "caller")
    net.bye(call, "callee")
    assert_clean(gateway, net)  # the BYE released the media


def test_without_db_flush_vals_profiles_kill_9_loses_the_call_record(tmp_path: Path) -> None:
    text = Path(CFG).read_text()
    line = 'modparam("dialog", "db_flush_vals_profiles", 1)\n'
    assert line in text
    cfg = tmp_path / "opensips.cfg"
    cfg.write_text(text.replace(line, ""))
    gateway = Gateway(cfg_path=str(cfg))
    net = Network(gateway)
    alice, bob = phones(net)
    call = established(net, alice, bob)
    gateway.flush()
    gateway.restart(kill=True)
    net.bye(call, "caller")
    assert gateway.sessions(), "the BYE found no record and left rtpengine's session"


def test_browsers_restored_after_a_restart_are_not_dialled_until_they_register_again() -> None:
    gateway = Gateway()
    net = Network(gateway)
    alice, bob = net.registered(net.browser("alice"), net.phone("bob"))
    dead_after_a_restart(gateway, net, alice)
    assert net.invite(bob, "alice").statuses() == [480]
    net.reconnect(alice)  # JsSIP comes back with the same Contact: its binding is updated, not doubled
    net.register(alice)
    assert len(gateway.location["alice"]) == 1
    only_it_rings(gateway, net, net.invite(bob, "alice"), alice, "callee")


def test_the_registrar_grants_no_more_than_the_connection_idles() -> None:
    """The most the registrar grants (max_expires; its deviation is clamped to it) is below
    tcp_connection_lifetime: a browser refreshes before its WebSocket idles out."""
    gateway = Gateway()
    text = Path(CFG).read_text()
    lifetime = int(text.split("\ntcp_connection_lifetime = ", 1)[1].split()[0])
    net = Network(gateway)
    alice = net.browser("alice")
    reply = net.register(alice, expires=7200)
    granted = int(reply.header_values("contact")[0].rsplit("expires=", 1)[1])
    assert 0 < granted < lifetime


@pytest.mark.parametrize("method", ["BYE", "re-INVITE"])
def test_an_in_dialog_request_toward_a_browser_whose_websocket_is_gone_is_not_dialled(method: str) -> None:
    """The router marks an in-dialog request toward a browser with WEBRTC: OpenSIPS sends it over the
    browser's WebSocket or not at all (480), and a BYE still releases the media."""
    gateway = Gateway()
    net = Network(gateway)
    alice, bob = net.registered(net.browser("alice"), net.phone("bob"))
    call = established(net, bob, alice)
    net.disconnect(alice)
    before = len(bob.inbox)
    if method == "BYE":
        net.bye(call, "caller")
    else:
        net.reinvite(call, "caller", hold=True)
    assert [m.status for m in bob.inbox[before:] if not m.is_request] == [480]
    assert gateway.dialled == []
    if method == "BYE":
        assert gateway.sessions() == [] and gateway.dialogs == {}
