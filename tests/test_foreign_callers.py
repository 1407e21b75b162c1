"""A caller of another domain has no password here, so none is asked of it: its calls reach our users
only, whatever the rules decide (README "What protects the gateway").  Found by a trial: a rule's
``to_trunk`` took such a caller's call to the carrier (toll fraud with a forged From)."""

from __future__ import annotations

from typing import Tuple

import pytest

from fakes.runtime import Gateway
from fakes.ua import UA, Network
from tests.flowcheck import assert_clean
from tests.test_recipes import files


def stranger(net: Network) -> UA:
    """A SIP phone of another domain, from an address no gateway.ini trusts."""
    mallory = net.phone("mallory", host="203.0.113.66")
    mallory.domain = "elsewhere.example"
    return mallory


def recipe(name: str) -> Tuple[Gateway, Network]:
    gateway = Gateway(files=files(name))
    return gateway, Network(gateway)


@pytest.mark.parametrize(
    "name, number",
    [("e164", "0301234567"), ("e164", "00442012345678"), ("rtpengine-flags", "0044201234"),
     ("failover", "0800123456"), ("numbers-to-users", "+4930123459")],
)  # fmt: skip
def test_a_rules_trunk_is_refused_to_a_caller_of_another_domain(name: str, number: str) -> None:
    gateway, net = recipe(name)
    call = net.invite(stranger(net), number, domain="127.0.0.1")
    assert call.answers() == ["403 Relaying Forbidden"]
    assert call.invites_sent() == []  # nothing left the gateway
    assert_clean(gateway, net)


def test_the_same_decision_relays_our_user_and_refuses_the_stranger_in_turn() -> None:
    """The router keeps answers by the decision and what it makes of the request: whether the caller may relay
    must not be lost there (the rule returns an equal trunk decision for both)."""
    _, net = recipe("e164")
    alice = net.phone("alice")
    net.register(alice)
    mallory = stranger(net)
    for caller, relayed in ((alice, True), (mallory, False), (alice, True), (mallory, False)):
        call = net.invite(caller, "0301234567", domain="127.0.0.1")
        sent = call.invites_sent()
        assert bool(sent) is relayed, caller.name
        if relayed:
            assert sent[-1][1].ruri.startswith("sip:+49301234567@"), sent[-1][1].ruri
            net.nobody_answers()
        else:
            assert call.answers() == ["403 Relaying Forbidden"]


@pytest.mark.parametrize(
    "name, number",
    [
        ("numbers-to-users", "+4930123450"),  # the rule's to_user("alice")
        ("blocking", "%61lic%65"),  # lib/reg compares users unescaped (RFC 3261 10.3.5); the fake does too
    ],
)
def test_a_stranger_still_reaches_our_users(name: str, number: str) -> None:
    _, net = recipe(name)
    alice = net.phone("alice")
    net.register(alice)
    call = net.invite(stranger(net), number, domain="127.0.0.1")
    assert [endpoint for endpoint, _ in call.invites_sent()] == [alice.endpoint]
    net.reply(call, alice, 200)
    assert call.statuses() == [200]


@pytest.mark.parametrize("user", ["1" * 65, "%41" * 30, "a" * 300])
def test_a_user_longer_than_the_registrar_keeps_gets_404_before_any_lookup(user: str) -> None:
    """lib/reg's extract_aor() takes users of up to 64 characters as written; a longer one's lookup() answers 500
    and logs two errors (on the real OpenSIPS, tests/e2e/test_intruders.py): the router answers 404 first."""
    gateway, net = recipe("blocking")
    call = net.invite(stranger(net), user, domain="127.0.0.1")
    assert call.answers() == ["404 Not Found"]
    assert not [e for e in gateway.events if e.kind == "call" and e.data[0] == "lookup"]
    assert_clean(gateway, net)
