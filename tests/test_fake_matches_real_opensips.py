"""The fake host keeps the behaviours the real OpenSIPS 3.6.8/4.0.1 showed in tests/e2e (see the report there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes.runtime import CFG, Gateway, declared_tables, is_private, onreply_avps, relay_replies_itself
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
    assert "location" in declared_tables()
    assert onreply_avps()


def test_reply_routes_lose_the_exchange_without_onreply_avp_mode(tmp_path: Path) -> None:
    cfg = cfg_without(tmp_path, 'modparam("tm", "onreply_avp_mode", 1)')
    assert not onreply_avps(cfg)
    assert not Gateway(cfg_path=cfg).reply_sees_avps


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_still_ends_clean(name: str) -> None:
    gateway = Gateway()
    SCENARIOS[name](Network(gateway))
    assert not gateway.sessions()
    assert not gateway.dialogs


def test_without_no_auto_477_tm_answers_a_call_it_cannot_relay_with_500(tmp_path: Path) -> None:
    # Both engines stopped on the real 3.6.8/4.0.1: "500 Server error occurred (1/TM)", not the cfg's 503.
    assert not relay_replies_itself()
    cfg = cfg_without(tmp_path, '"no-auto-477"')
    assert relay_replies_itself(cfg)
    assert Gateway(cfg_path=cfg).relay_replies_itself


def test_var_outlives_the_message_so_the_cfg_clears_gw_lr() -> None:
    # On 3.6.8 a BYE whose Python failed before loose_route() met the "1" an earlier in-dialog request
    # had left in $var(gw_lr) in that worker: the fail-safe skipped loose_route(), the dialog and the
    # rtpengine session stayed.  $var values live on in the process: the cfg clears gw_lr first, and
    # now matches in-dialog requests itself before Python, setting it only once it did.
    gateway = Gateway(strict=False)
    assert gateway.clears_routed_var
    net = Network(gateway)
    # a browser's call: its BYE asks the router (phones' BYEs the cfg may relay itself, Do.QUIET_BYE)
    alice, bob = net.browser("alice"), net.phone("bob", nat=True)
    net.registered(alice, bob)
    call = net.invite(alice, "bob")
    net.reply(call, bob, 200)
    net.reinvite(call, "caller", hold=True)  # matched by the cfg: gw_lr = "1"

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
