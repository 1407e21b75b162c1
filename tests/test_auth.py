"""Digest authentication: REGISTER and our users' calls, over WebSocket and SIP; no one in who does not belong."""

from __future__ import annotations

from typing import List

import pytest

from fakes.runtime import Context, Endpoint, Gateway
from fakes.sipmsg import SipMessage
from fakes.ua import UA, Network
from gateway.settings import Settings
from tests.flowcheck import assert_clean

REALM = "gateway.test"


def network() -> Network:
    return Network(Gateway(Settings(auth_realm=REALM, sip_destination="sip:127.0.0.99:5080")))


def statuses(ua: UA, method: str) -> List[int]:
    return [m.status for m in ua.inbox if not m.is_request and m.cseq_method == method]


@pytest.mark.parametrize("kind", ["browser", "phone"])
def test_register_is_challenged_then_accepted(kind: str) -> None:
    net = network()
    ua = net.browser("alice") if kind == "browser" else net.phone("alice", nat=True)
    assert net.register(ua).status == 200
    assert statuses(ua, "REGISTER") == [401, 200]
    assert "alice" in net.gateway.location
    saved = [e.data for e in net.gateway.events if e.kind == "recv" and e.data[1].method == "REGISTER"][-1][1]
    assert saved.header("authorization") is not None


def test_a_wrong_password_never_registers() -> None:
    net = network()
    ua = net.phone("alice")
    ua.password = "guess"
    assert net.register(ua).status == 401
    assert statuses(ua, "REGISTER") == [401, 401]
    assert net.gateway.location == {}


def test_an_unknown_user_never_registers() -> None:
    net = network()
    ua = net.browser("mallory")
    del net.gateway.subscribers[("mallory", REALM)]
    assert net.register(ua).status == 401
    assert net.gateway.location == {}


def test_a_register_for_someone_elses_address_is_refused() -> None:
    net = network()
    alice, mallory = net.browser("alice"), net.phone("mallory")
    mallory.name, mallory.username = "alice", "mallory"  # mallory's own credentials, alice's address
    assert net.register(mallory).status == 403
    assert net.gateway.location == {}
    assert net.register(alice).status == 200


def test_our_users_calls_are_challenged_and_credentials_go_no_further() -> None:
    net = network()
    alice, bob = net.registered(net.browser("alice"), net.phone("bob"))
    call = net.invite(alice, "bob")
    assert statuses(alice, "INVITE") == [407]
    invite = bob.pending_invites[call.call_id]
    assert invite.header("proxy-authorization") is None
    net.reply(call, bob, 200)
    net.bye(call, "callee")
    assert statuses(alice, "INVITE") == [407, 200]
    assert_clean(net.gateway, net)


def test_calling_as_another_user_is_refused() -> None:
    net = network()
    alice, mallory, bob = net.browser("alice"), net.phone("mallory"), net.phone("bob")
    for ua in (alice, bob):
        net.register(ua)
    mallory.name, mallory.username = "alice", "mallory"
    net.invite(mallory, "bob")
    assert statuses(mallory, "INVITE") == [407, 403]
    assert bob.pending_invites == {}


def test_calls_from_other_domains_reach_our_users_without_credentials() -> None:
    net = network()
    bob, carrier = net.phone("bob"), net.phone("pstn")
    net.register(bob)
    carrier.domain, carrier.password = "carrier.example", None
    call = net.invite(carrier, "bob", domain="127.0.0.1")
    assert net.callees(call) == [bob]


def test_no_open_relay_even_with_credentials_for_another_domain() -> None:
    net = network()
    mallory = net.phone("mallory")
    mallory.domain = "spoof.example"
    net.invite(mallory, "victim", domain="elsewhere.example")
    assert statuses(mallory, "INVITE") == [403]


def test_in_dialog_requests_need_no_new_credentials() -> None:
    net = network()
    alice, bob = net.registered(net.browser("alice"), net.phone("bob"))
    call = net.invite(alice, "bob")
    net.reply(call, bob, 200)
    net.reinvite(call, "caller", hold=True)
    net.bye(call, "caller")
    assert statuses(alice, "INVITE") == [407, 200, 200]
    assert statuses(alice, "BYE") == [200]


def test_trusted_sources_are_exempt_from_auth_and_from_flood_counting() -> None:
    gateway = Gateway(Settings(auth_realm=REALM, trusted_sources=frozenset({"127.0.0.2"})))
    net = Network(gateway)
    trunk, bob = net.phone("trunk", host="127.0.0.2"), net.phone("bob")
    net.register(bob)
    call = net.invite(trunk, "bob")
    assert statuses(trunk, "INVITE") == [] and net.callees(call) == [bob]

    # route[pike_exempt], as the cfg runs it for each request pike counts.
    options = SipMessage.parse(
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKp\r\nFrom: <sip:t@x>;tag=1\r\n"
        b"To: <sip:127.0.0.1>\r\nCall-ID: p\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    for host, answer in (("127.0.0.2", 1), ("203.0.113.5", -1), ("127.0.0.20", -1)):
        ctx = Context(gateway, "request", options, Endpoint("udp", host, 5060))
        assert gateway.pike_exempt(ctx) == (answer == 1)
    assert gateway.script_vars["gw_trusted"] == " 127.0.0.2 "  # written once, searched by the cfg itself


def test_pike_keeps_the_answer_for_the_last_source_once_the_router_gave_it(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = Gateway(Settings(trusted_sources=frozenset({"127.0.0.2"})))
    options = SipMessage.parse(
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKp\r\nFrom: <sip:t@x>;tag=1\r\n"
        b"To: <sip:127.0.0.1>\r\nCall-ID: p\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )

    def exempt(host: str) -> bool:
        return gateway.pike_exempt(Context(gateway, "request", options, Endpoint("udp", host, 5060)))

    def asked() -> int:
        return sum(1 for e in gateway.events if e.kind == "exec" and 'python_exec("is_trusted"' in e.text)

    # The router fails (its $var is not written): no answer is kept, the next message asks again.
    monkeypatch.setattr(gateway.router, "is_trusted", lambda msg, facts="": -1)
    assert [exempt("127.0.0.2"), exempt("127.0.0.2")] == [False, False] and asked() == 2
    monkeypatch.undo()
    answers = [exempt(host) for host in ("127.0.0.2", "127.0.0.2", "203.0.113.5", "203.0.113.5", "127.0.0.2")]
    assert answers == [True, True, False, False, True]
    assert asked() == 3  # once more, then the trusted list is the worker's: each source is searched natively
    assert gateway.script_vars["gw_pike_source"] == "127.0.0.2"


def test_answered_calls_are_counted_per_direction_and_media() -> None:
    gateway = Gateway(Settings())
    net = Network(gateway)
    alice, bob, carol, dana = net.browser("alice"), net.phone("bob"), net.phone("carol"), net.browser("dana")
    for ua in (alice, bob, carol, dana):
        net.register(ua)
    for caller, callee, user in (
        (alice, bob, "bob"),
        (bob, carol, "carol"),
        (bob, alice, "alice"),
        (alice, dana, "dana"),
    ):
        call = net.invite(caller, user)
        net.reply(call, callee, 200)
        net.bye(call, "caller")
    call = net.invite(carol, "bob")
    net.reply(call, bob, 486)
    assert dict(gateway.statistics) == {
        "calls_web_to_web": 1,
        "calls_web_to_sip": 1,
        "calls_sip_to_sip": 1,
        "calls_sip_to_web": 1,
        "media_proxy_calls": 3,
    }


def test_a_python_failure_after_the_digest_check_gets_500_and_runs_nothing_stale() -> None:
    net = network()
    net.gateway.strict = False
    alice, bob = net.registered(net.browser("alice"), net.phone("bob"))
    call = net.invite(alice, "bob")  # the worker now holds an INVITE's actions in $var(gw_authorized)
    net.reply(call, bob, 200)
    net.bye(call, "caller")

    def broken(msg: object) -> int:
        raise RuntimeError("bug after the digest check")

    net.gateway.router.on_authorized = broken
    second = net.invite(alice, "bob")
    assert second.statuses() == [500] and second.call_id not in bob.pending_invites
    assert net.gateway.python_failures == 1
