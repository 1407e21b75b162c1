"""The fake host keeps behaviours the real OpenSIPS 3.6.8/4.0.1 showed in tests/e2e (no OpenSIPS runs here).

Each test runs the fake host, often on a copy of opensips.cfg with one line taken out, and shows that
the fake then does what the real OpenSIPS did: the cfg line matters offline as it does there.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from fakes.rtpengine import MemoryEngine
from fakes.runtime import CFG, Gateway, declared_tables, is_private, load_script
from fakes.scenarios import SCENARIOS
from fakes.ua import Network


def cfg_without(tmp_path: Path, *fragments: str) -> str:
    text = Path(CFG).read_text()
    for fragment in fragments:
        assert fragment in text, fragment
        text = text.replace(fragment, "")
    path = tmp_path / "opensips.cfg"
    path.write_text(text)
    return str(path)


def test_nathelper_counts_loopback_as_private() -> None:
    # ip_addr_is_1918() lists 127.0.0.0/8 (RFC 1122): a 127.x Contact is "behind NAT".
    assert is_private("127.0.0.1") and is_private("127.0.0.40")
    assert is_private("192.168.1.2") and not is_private("198.51.100.7")


def test_the_cfg_names_the_location_table_and_shows_avps_to_reply_routes() -> None:
    assert "location" in declared_tables(load_script())
    assert Gateway().reply_sees_avps


def test_reply_routes_lose_the_exchange_without_onreply_avp_mode(tmp_path: Path) -> None:
    cfg = cfg_without(tmp_path, 'modparam("tm", "onreply_avp_mode", 1)')
    assert not Gateway(cfg_path=cfg).reply_sees_avps


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_still_ends_clean(name: str) -> None:
    gateway = Gateway()
    SCENARIOS[name](Network(gateway))
    assert not gateway.sessions()
    assert not gateway.dialogs


class NoPortsEngine(MemoryEngine):
    def command(self, ng: dict) -> dict:  # type: ignore[type-arg]
        if ng["command"] in ("offer", "answer"):
            return {"result": "error", "error-reason": "no ports"}
        return super().command(ng)


def statuses_of_a_call_no_branch_can_take(cfg: str) -> List[int]:
    net = Network(Gateway(cfg_path=cfg, rtpengine=NoPortsEngine(), strict=False))
    alice, _bob = net.registered(net.browser("alice"), net.phone("bob"))
    net.invite(alice, "bob")
    return [m.status for m in alice.inbox if not m.is_request and m.cseq_method == "INVITE" and m.status != 407]


def test_without_no_auto_477_tm_answers_a_call_it_cannot_relay_with_500(tmp_path: Path) -> None:
    # Both engines stopped on the real 3.6.8/4.0.1: "500 Server error occurred (1/TM)", not the cfg's 503.
    assert statuses_of_a_call_no_branch_can_take(CFG) == [503]
    assert statuses_of_a_call_no_branch_can_take(cfg_without(tmp_path, '"no-auto-477"')) == [500]


def test_a_failed_in_dialog_route_still_relays_the_bye_and_releases_its_media() -> None:
    # On 3.6.8 a BYE whose Python failed was once left in the worker with a stale $var from an
    # earlier message ($var values live on in the process), and the dialog and the rtpengine session
    # stayed.  The fail-safe is now reached with a to-tag only from route[gw_in_dialog], after it
    # matched the dialog itself: it relays and deletes the media.
    gateway = Gateway(strict=False)
    net = Network(gateway)
    # a browser's call: its BYE asks the router (phones' BYEs the cfg may relay itself, quiet_bye)
    alice, bob = net.browser("alice"), net.phone("bob", nat=True)
    net.registered(alice, bob)
    call = net.invite(alice, "bob")
    net.reply(call, bob, 200)
    net.reinvite(call, "caller", hold=True)

    def broken(msg: object, facts: str = "") -> int:
        raise RuntimeError("bug in the in-dialog route")

    gateway.router.on_in_dialog = broken
    net.bye(call, "caller")
    assert gateway.python_failures == 1
    assert not gateway.dialogs and not gateway.sessions()  # the fail-safe relayed it and released the media


def test_auth_db_identity_checks_need_a_uri_table_so_the_router_compares_users() -> None:
    # db_is_to_authorized("subscriber") failed on 3.6.8/4.0.1 ("no such column: uri_user"): every
    # authenticated REGISTER got 403.  The router compares $au with $tU/$fU instead.
    gateway = Gateway(strict=False)
    assert gateway.fn_db_is_to_authorized(None, "subscriber") == -1  # type: ignore[arg-type]
    assert any("uri_user" in e for e in gateway.errors)
    assert 'modparam("auth_db", "load_credentials", "")' in Path(CFG).read_text()  # not the default "rpid"


def test_owns_address() -> None:
    from gateway.core import owns_address

    assert owns_address("alice", "alice")
    assert not owns_address("mallory", "alice") and not owns_address("", "")


def test_with_auth_dbs_default_credentials_nobody_registers(tmp_path: Path) -> None:
    from gateway.settings import Settings

    cfg = cfg_without(tmp_path, 'modparam("auth_db", "load_credentials", "")')
    gateway = Gateway(Settings(auth_realm="gateway.test"), cfg_path=cfg, strict=False)
    net = Network(gateway)
    alice = net.phone("alice")
    reply = net.register(alice)
    assert reply is not None and reply.status == 401 and gateway.location == {}
    assert any("rpid" in e for e in gateway.errors)
