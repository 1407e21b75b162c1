"""Whole call flows through the real pyscripts on the fake host."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import pytest

from fakes.rtpengine import MemoryEngine
from fakes.runtime import Gateway
from fakes.scenarios import SCENARIOS
from fakes.ua import UA, Network
from gateway import core
from gateway.settings import Settings
from gateway.settings import parse as parse_settings
from tests.flowcheck import assert_clean


def ng_commands(gateway: Gateway) -> List[dict]:  # type: ignore[type-arg]
    return [event.data[0] for event in gateway.events if event.kind == "rtpengine"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("hiding", [False, True], ids=["record-route", "topology-hiding"])
def test_every_scenario_leaves_nothing_behind(name: str, hiding: bool) -> None:
    gateway = Gateway(Settings(topology_hiding=hiding))
    net = Network(gateway)
    SCENARIOS[name](net)
    assert_clean(gateway, net)


def test_registrations_are_kept_with_their_kind_as_branch_flags() -> None:
    gateway = Gateway()
    net = Network(gateway)
    alice, bob, carol = net.browser("alice"), net.phone("bob", nat=True), net.phone("carol")
    for ua in (alice, bob, carol):
        assert net.register(ua).status == 200
    flags = {user: contacts[0].bflags for user, contacts in gateway.location.items()}
    assert flags == {"alice": {"WEBRTC"}, "bob": {"NATED"}, "carol": set()}
    assert gateway.location["alice"][0].received == f"sip:{alice.endpoint.host}:{alice.endpoint.port};transport=wss"
    assert gateway.location["bob"][0].received == f"sip:{bob.endpoint.host}:{bob.endpoint.port}"
    assert gateway.location["carol"][0].received is None
    # a REGISTER's Contact is kept as the phone wrote it (fix_nated_register keeps the source beside it;
    # fix_nated_contact, which rewrites a Contact, is for other requests)
    assert {user: contacts[0].uri for user, contacts in gateway.location.items()} == {
        ua.name: ua.contact for ua in (alice, bob, carol)
    }


def test_a_register_for_another_domain_is_refused() -> None:
    gateway = Gateway()
    net = Network(gateway)
    mallory = net.phone("mallory")
    mallory.domain = "victim.org"
    assert net.register(mallory).status == 403
    assert gateway.location == {}


def test_a_worker_takes_a_registers_answer_again_for_the_same_facts_within_the_second() -> None:
    """route[gw_register]: a REGISTER with the facts of the worker's last one, in the same second, is
    answered (challenged, then saved) without asking the router; another second, or other facts, ask."""
    gateway = Gateway()
    now = [1_000_000.2]
    gateway.clock = lambda: now[0]
    net = Network(gateway)
    bob, carol, alice = net.phone("bob"), net.phone("carol"), net.browser("alice")
    start = len(gateway.events)
    assert net.register(bob).status == 200  # challenged, then with credentials
    assert net.register(carol).status == 200  # another phone, the same facts
    assert python_entries(gateway, start) == ["is_trusted", "on_register"]  # pike's first check writes the list
    assert {c.bflags == set() for contacts in gateway.location.values() for c in contacts} == {True}
    now[0] += 1.0
    start = len(gateway.events)
    assert net.register(bob).status == 200
    assert python_entries(gateway, start) == ["on_register"]  # a new second: asked again
    start = len(gateway.events)
    assert net.register(alice).status == 200
    assert python_entries(gateway, start) == ["on_register"]  # a browser's facts: asked, then taken again
    assert gateway.location["alice"][0].bflags == {"WEBRTC"}
    mallory = net.phone("mallory")
    mallory.domain = "victim.org"
    start = len(gateway.events)
    assert [net.register(mallory).status, net.register(mallory).status] == [403, 403]
    assert python_entries(gateway, start) == ["on_register", "on_register"]  # a refusal is not taken again
    assert "mallory" not in gateway.location


@pytest.mark.parametrize(
    ("fact", "make"),
    [
        ("transport", lambda net: net.phone("carol", proto="tcp")),
        ("NAT", lambda net: net.phone("carol", nat=True)),
        ("address family", lambda net: net.phone("carol", host="2001:db8::5")),
        ("a browser", lambda net: net.browser("carol")),
        ("domain", lambda net: net.phone("carol")),
    ],
)
def test_a_register_that_differs_in_one_fact_asks_the_router_within_the_second(fact: str, make: Any) -> None:
    """route[gw_register] compares each kept fact: a REGISTER that differs from the worker's last in one of
    them alone, in the same second, asks the router and gets its own answer (its own branch flags)."""
    gateway = Gateway()
    gateway.clock = lambda: 1_000_000.2
    net = Network(gateway)
    assert net.register(net.phone("bob")).status == 200
    carol = make(net)
    if fact == "domain":
        carol.domain = "localhost"  # one of our domains, written another way
    start = len(gateway.events)
    assert net.register(carol).status == 200
    assert python_entries(gateway, start) == ["on_register"], fact
    fresh = Gateway()
    fresh_net = Network(fresh)
    twin = make(fresh_net)
    twin.domain = carol.domain
    assert fresh_net.register(twin).status == 200
    assert gateway.location["carol"][0].bflags == fresh.location["carol"][0].bflags, fact


def answers_of(gateway: Gateway, since: int) -> List[Dict[str, Any]]:
    """The rtpengine answers the gateway sent since event ``since``, without what differs by call."""
    commands = [e.data[0] for e in gateway.events[since:] if e.kind == "rtpengine" and e.data[0]["command"] == "answer"]
    return [{k: v for k, v in c.items() if k not in ("call-id", "from-tag", "to-tag", "sdp")} for c in commands]


def a_call_through_rtpengine(net: Network, caller: UA, callee: UA) -> Dict[str, str]:
    """A call answered (180, 200 with SDP); its dialog's values then, before the BYE ends it."""
    call = net.invite(caller, callee.name)
    net.reply(call, callee, 180)
    net.reply(call, callee, 200)
    vals = next(dict(d.vals) for d in net.gateway.dialogs.values() if d.call_id == call.call_id)
    net.bye(call, "caller")
    return vals


def test_a_worker_takes_a_replys_answer_again_for_the_same_facts_within_the_second() -> None:
    """route[gw_python_reply]: a reply with the facts of the worker's last one (an initial INVITE's, with a
    body, kept by the router), in the same second, gets that answer without asking the router: the same
    rtpengine answer, the call record after it (new_record), the same counts.  Another second asks."""
    gateway = Gateway()
    now = [1_000_000.2]
    gateway.clock = lambda: now[0]
    net = Network(gateway)
    carol, erin = net.phone("carol", nat=True), net.phone("erin")
    net.registered(carol, erin)
    start = len(gateway.events)
    first = a_call_through_rtpengine(net, carol, erin)
    asked = python_entries(gateway, start)
    assert asked.count("on_reply") == 1  # the 200 (the 180 has no body: the cfg never asks for it)
    middle = len(gateway.events)
    second = a_call_through_rtpengine(net, carol, erin)
    assert python_entries(gateway, middle) == [e for e in asked if e != "on_reply"]  # its 200 took the kept answer
    assert answers_of(gateway, middle) == answers_of(gateway, start)[:1] != []
    assert second["gw"] == first["gw"] and second["gw"].endswith(";a=0")  # answered on branch 0
    assert second.get("gw_quiet") == first.get("gw_quiet")
    assert gateway.statistics["calls_sip_to_sip"] == 2 and gateway.statistics["media_proxy_calls"] == 2
    assert gateway.sessions() == [] and gateway.dialogs == {}
    now[0] += 1.0
    start = len(gateway.events)
    assert a_call_through_rtpengine(net, carol, erin)["gw"] == first["gw"]
    assert python_entries(gateway, start) == asked  # a new second: asked again


@pytest.mark.parametrize(
    ("fact", "make"),
    [
        ("the call record (a callee behind NAT)", lambda net: net.phone("dave", nat=True)),
        ("the transport", lambda net: net.phone("dave", proto="tcp")),
        ("a browser (its source)", lambda net: net.browser("dave")),
    ],
)
def test_a_reply_that_differs_in_one_fact_asks_the_router_within_the_second(fact: str, make: Any) -> None:
    """route[gw_python_reply] compares each kept fact: the replies of a call to another kind of callee, in the
    same second as the worker's last, ask the router as a fresh gateway's do and get the same answers."""
    asked: List[List[str]] = []
    calls: List[Tuple[str, List[Dict[str, Any]]]] = []
    for gateway in (Gateway(), Gateway()):
        gateway.clock = lambda: 1_000_000.2
        net = Network(gateway)
        carol, erin, dave = net.phone("carol", nat=True), net.phone("erin"), make(net)
        net.registered(carol, erin, dave)
        if not calls:
            a_call_through_rtpengine(net, carol, erin)  # the worker keeps its reply's answer
        start = len(gateway.events)
        calls.append((a_call_through_rtpengine(net, carol, dave)["gw"], answers_of(gateway, start)))
        asked.append(python_entries(gateway, start))
    assert "on_reply" in asked[1], fact
    assert asked[0] == asked[1] and calls[0] == calls[1], fact


def test_a_reply_that_names_sdp_but_has_no_body_is_one_without_a_body() -> None:
    """$var(gw_body) is each reply's own: a 180 with a Content-Type of SDP and no body (Content-Length 0), after
    the worker's reply with a body, gets no rtpengine answer (there is nothing to answer)."""
    gateway = Gateway()
    net = Network(gateway)
    carol, dave = net.phone("carol", nat=True), net.phone("dave", nat=True)  # every reply goes to the router
    net.registered(carol, dave)
    first = net.invite(carol, "dave")
    net.reply(first, dave, 200)
    second = net.invite(carol, "dave")
    ringing = dave.reply_to(dave.pending_invites[second.call_id], 180, "Ringing", "t-empty")
    ringing.set_header("Content-Type", "application/sdp")
    net.send(dave, ringing)
    commands = [e.data[0] for e in gateway.events if e.kind == "rtpengine"]
    assert [c["command"] for c in commands if c["call-id"] == first.call_id] == ["offer", "answer"]
    assert [c["command"] for c in commands if c["call-id"] == second.call_id] == ["offer"]


def test_a_python_failure_for_a_register_gets_500_and_saves_nothing(monkeypatch: Any) -> None:
    gateway = Gateway()
    net = Network(gateway)

    def broken(*args: Any) -> Any:
        raise RuntimeError("bug in the registrar's plan")

    monkeypatch.setattr(core, "registration_of", broken)
    bob = net.phone("bob")
    assert net.register(bob).status == 500
    assert gateway.location == {} and gateway.python_failures == 1
    assert any("RuntimeError" in e and "register route failed" in e for e in gateway.errors)
    assert any(f"python routing failed for REGISTER from {bob.endpoint.host}" in e for e in gateway.errors)


def test_source_flags_reach_branch_and_reply_routes() -> None:
    gateway = Gateway()
    net = Network(gateway)
    alice, bob = net.registered(net.browser("alice"), net.phone("bob"))
    call = net.invite(alice, "bob")
    assert next(iter(gateway.transactions.values())).flags == {"SRC_WS", "SRC_NAT"}
    net.reply(call, bob, 200)
    net.bye(call, "caller")


@pytest.mark.parametrize("order", ["browser first", "phone first"])
def test_a_fork_answered_by_a_branch_without_the_media_proxy_releases_the_other_branchs_session(order: str) -> None:
    # A plain phone calls a user with a browser and a plain desk phone: only the browser's branch
    # goes through rtpengine.  The desk phone answers: that session is nobody's, and no BYE would
    # delete it (the answered branch has no media); rtpengine would keep its ports for an hour.
    gateway = Gateway(Settings(domains=frozenset({"127.0.0.1"})))
    net = Network(gateway)
    carol = net.phone("carol", host="198.51.100.10")
    web, desk = net.browser("gina"), net.phone("gina", host="198.51.100.11")
    net.registered(carol, *((web, desk) if order == "browser first" else (desk, web)))
    call = net.invite(carol, "gina")
    assert len(gateway.sessions()) == 1
    net.reply(call, desk, 200)
    assert gateway.sessions() == []
    assert gateway.statistics["calls_sip_to_sip"] == 1 and gateway.statistics["media_proxy_calls"] == 0
    net.bye(call, "caller")
    assert_clean(gateway, net)


def test_forking_offers_each_branch_its_own_sdp_and_session() -> None:
    gateway = Gateway()
    net = Network(gateway)
    web, desk, carol = net.browser("frank"), net.phone("frank", nat=True), net.phone("carol")
    for ua in (web, desk, carol):
        net.register(ua)
    call = net.invite(carol, "frank")
    offers = [ng for ng in ng_commands(gateway) if ng["command"] == "offer"]
    assert [(o["via-branch"], o["transport-protocol"]) for o in offers] == [
        ("br0", "UDP/TLS/RTP/SAVPF"),
        ("br1", "RTP/AVP"),
    ]
    net.reply(call, web, 183)
    net.reply(call, desk, 200)
    answers = [ng for ng in ng_commands(gateway) if ng["command"] == "answer"]
    assert [a["via-branch"] for a in answers] == ["br0", "br1"]
    deletes = [ng for ng in ng_commands(gateway) if ng["command"] == "delete"]
    assert deletes == [], "a delete would take the answered branch's session too"
    net.bye(call, "callee")
    assert [ng.get("via-branch") for ng in ng_commands(gateway) if ng["command"] == "delete"] == [None]
    assert_clean(gateway, net)


def test_in_dialog_requests_reach_a_browser_over_its_own_connection() -> None:
    gateway = Gateway()
    net = Network(gateway)
    alice, carol = net.registered(net.browser("alice"), net.phone("carol"))
    call = net.invite(carol, "alice")
    net.reply(call, alice, 200)
    net.reinvite(call, "caller", hold=True)
    net.bye(call, "caller")
    to_alice = [
        event.data[0] for event in gateway.events if event.kind == "send" and event.data[0].host == alice.endpoint.host
    ]
    assert to_alice and set(to_alice) == {alice.endpoint}
    assert_clean(gateway, net)


def test_browser_contacts_are_fixed_to_their_source() -> None:
    gateway = Gateway()
    net = Network(gateway)
    alice, carol = net.registered(net.browser("alice"), net.phone("carol"))
    call = net.invite(alice, "carol")
    invite = carol.pending_invites[call.call_id]
    assert invite.header("contact") == f"<sip:alicex@{alice.endpoint.host}:{alice.endpoint.port};transport=ws>"
    net.reply(call, carol, 486)
    assert_clean(gateway, net)


def test_plain_sip_calls_stay_off_the_media_proxy() -> None:
    gateway = Gateway()
    net = Network(gateway)
    carol, erin = net.registered(net.phone("carol"), net.phone("erin"))
    call = net.invite(carol, "erin")
    net.reply(call, erin, 200)
    net.reinvite(call, "callee")
    net.bye(call, "callee")
    assert ng_commands(gateway) == []
    assert_clean(gateway, net)


def test_calls_to_other_domains_go_to_the_sip_destination() -> None:
    gateway = Gateway(Settings(sip_destination="sip:127.0.0.99:5080"))
    net = Network(gateway)
    alice = net.browser("alice")
    net.register(alice)
    net.invite(alice, "+4930123", domain="pstn.example")
    sent = [event.data for event in gateway.events if event.kind == "send"]
    endpoint, message = sent[-1]
    assert (endpoint.host, endpoint.port) == ("127.0.0.99", 5080)
    assert message.ruri == "sip:+4930123@pstn.example" and b"RTP/AVP" in message.body


def test_no_open_relay() -> None:
    gateway = Gateway(Settings(sip_destination="sip:127.0.0.99:5080"))
    net = Network(gateway)
    mallory = net.phone("mallory")
    mallory.domain = "spoof.example"
    call = net.invite(mallory, "victim", domain="elsewhere.example")
    assert [m.status for m in mallory.inbox] == [403]
    assert call.call_id not in str(gateway.dialogs)


def test_an_unknown_user_gets_404() -> None:
    gateway = Gateway(Settings())
    net = Network(gateway)
    alice = net.browser("alice")
    net.invite(alice, "nobody")
    assert [m.status for m in alice.inbox] == [404]
    assert gateway.dialogs == {}


class BrokenEngine(MemoryEngine):
    def command(self, ng: dict) -> dict:  # type: ignore[type-arg]
        if ng["command"] in ("offer", "answer"):
            return {"result": "error", "error-reason": "no ports"}
        return super().command(ng)


def test_without_a_media_proxy_the_caller_gets_503_and_nothing_hangs() -> None:
    gateway = Gateway(Settings(), rtpengine=BrokenEngine())
    net = Network(gateway)
    alice, bob = net.registered(net.browser("alice"), net.phone("bob"))
    net.invite(alice, "bob")
    assert [m.status for m in alice.inbox if not m.is_request and m.cseq_method == "INVITE"] == [503]
    assert bob.pending_invites == {}
    assert gateway.dialogs == {} and gateway.transactions == {}


def test_a_python_failure_gets_500_for_new_calls_and_keeps_calls_up(monkeypatch: Any) -> None:
    """The cfg's fail-safe still routes in-dialog requests (by their fixed Contact: a browser on plain
    ws is reached; one on wss needs the flow the Python side sets as destination)."""
    gateway = Gateway()
    net = Network(gateway)
    alice, bob = net.registered(net.browser("alice", secure=False), net.phone("bob"))
    call = net.invite(alice, "bob")
    net.reply(call, bob, 200)

    def broken(*args: Any) -> Any:
        raise RuntimeError("bug in a routing rule")

    monkeypatch.setattr(core, "route_initial", broken)
    monkeypatch.setattr(core, "plan_sequential", broken)
    second = net.invite(bob, "alice")
    assert [m.status for m in bob.inbox if not m.is_request and m.call_id == second.call_id] == [500]
    net.bye(call, "callee")
    assert [m.status for m in bob.inbox if not m.is_request and m.call_id == call.call_id][-1] == 200
    assert gateway.sessions() == []  # the fail-safe released the media of the call the BYE ended
    assert gateway.python_failures == 2
    assert any(second.call_id in e and "RuntimeError" in e for e in gateway.errors)
    assert any(call.call_id in e for e in gateway.errors)
    # the cfg's own line: which request, from where, which call
    assert any(f"python routing failed for INVITE from {bob.endpoint.host}, Call-ID {second.call_id}" in e
               for e in gateway.errors)  # fmt: skip


def python_entries(gateway: Gateway, since: int) -> List[str]:
    """The router methods the cfg ran since event ``since``, in order."""
    found = []
    for event in gateway.events[since:]:
        if event.kind == "exec" and event.data is None and 'python_exec("' in event.text:
            found.append(event.text.split('python_exec("', 1)[1].split('"', 1)[0])
    return found


@pytest.mark.parametrize(
    ("caller_kind", "callee_kind", "expected"),
    [
        # plain phones: the INVITE only (its branches are planned with it, the cfg counts the answer)
        ("plain", "plain", ["on_request", "on_authorized"]),
        # a NATed caller takes rtpengine; the callee is not behind NAT: its 100/180 stay in the cfg
        # (on_reply_quiet), and so do the ACK and the BYE of a dialog without browsers (quiet_bye: the
        # cfg deletes the media)
        ("nat", "plain", ["on_request", "on_authorized", "on_reply"]),
        # a NATed callee (branch flag NATED): its 180 has a Contact to fix, its 100 not
        ("nat", "nat", ["on_request", "on_authorized", "on_reply", "on_reply"]),
        # a browser: its ACK may need the flow of the connection it goes over, so it asks
        ("browser", "plain", ["on_request", "on_authorized", "on_reply", "on_in_dialog", "on_in_dialog"]),
    ],
)
def test_a_call_asks_the_router_only_where_it_has_something_to_decide(
    caller_kind: str, callee_kind: str, expected: List[str]
) -> None:
    gateway = Gateway()
    net = Network(gateway)
    caller = net.browser("alice") if caller_kind == "browser" else net.phone("carol", nat=caller_kind == "nat")
    callee = net.phone("erin", nat=callee_kind == "nat")
    net.registered(caller, callee)
    start = len(gateway.events)
    call = net.invite(caller, "erin")
    for code in (100, 180, 200):
        net.reply(call, callee, code)
    net.bye(call, "caller")
    # our own caller's first INVITE is challenged (407; its ACK absorbed by tm), then sent with credentials,
    # and the rules answer after the digest check (on_authorized)
    assert python_entries(gateway, start) == ["on_request", *expected]
    assert_clean(gateway, net)


class NoDeleteEngine(MemoryEngine):
    def command(self, ng: dict) -> dict:  # type: ignore[type-arg]
        if ng["command"] == "delete":
            super().command(ng)
            return {"result": "error", "error-reason": "unknown call"}
        return super().command(ng)


def test_a_bye_the_cfg_serves_itself_gets_the_senders_nat_flag_and_logs_a_failed_delete() -> None:
    """A dialog without browsers through rtpengine (quiet_bye): the cfg serves a SIP peer's BYE itself."""
    gateway = Gateway(strict=False, rtpengine=NoDeleteEngine())
    net = Network(gateway)
    carol, erin = net.phone("carol", nat=True), net.phone("erin")
    net.registered(carol, erin)
    call = net.invite(carol, "erin")
    net.reply(call, erin, 200)
    start = len(gateway.events)
    net.bye(call, "caller")
    assert not any(e.kind == "exec" for e in gateway.events[start:])  # no python_exec for it
    (bye,) = [t for t in gateway.completed.values() if t.method == "BYE"]
    assert bye.flags == {"SRC_NAT"}
    assert any(f"rtpengine_delete failed for Call-ID {call.call_id}" in e for e in gateway.errors)


def test_a_python_failure_in_a_reply_route_is_counted_and_does_nothing_of_an_earlier_reply() -> None:
    gateway = Gateway(strict=False)
    now = [1_000_000.2]
    gateway.clock = lambda: now[0]
    net = Network(gateway)
    alice, bob = net.browser("alice"), net.phone("bob")
    net.registered(alice, bob)
    first = net.invite(alice, "bob")
    net.reply(first, bob, 200)  # the worker's $var(gw_reply) now holds an answer's actions
    second = net.invite(alice, "bob")
    now[0] += 1.0  # a new second: the cfg asks the router again (route[gw_python_reply])
    router = gateway.router
    original = router.on_reply

    def broken(msg: object, facts: str = "") -> int:
        raise RuntimeError("bug in the reply route")

    router.on_reply = broken
    before = [e.data[0]["command"] for e in gateway.events if e.kind == "rtpengine"]
    counted = dict(gateway.statistics)
    net.reply(second, bob, 200)
    after = [e.data[0]["command"] for e in gateway.events if e.kind == "rtpengine"]
    assert after == before  # no rtpengine answer with the earlier call's flags
    assert gateway.python_failures == counted.get("python_failures", 0) + 1
    assert {k: v for k, v in gateway.statistics.items() if k != "python_failures"} == {
        k: v for k, v in counted.items() if k != "python_failures"
    }  # nothing counted twice
    router.on_reply = original


def test_a_plain_call_answered_on_two_branches_is_counted_once() -> None:
    gateway = Gateway(Settings(domains=frozenset({"127.0.0.1"})))
    net = Network(gateway)
    carol = net.phone("carol", host="198.51.100.10")
    desk, mobile = net.phone("gina", host="198.51.100.11"), net.phone("gina", host="198.51.100.12")
    net.registered(carol, desk, mobile)
    call = net.invite(carol, "gina")
    invite = mobile.pending_invites[call.call_id]
    late = mobile.reply_to(invite, 200, "OK", "t-mobile", mobile.make_answer(call.call_id))
    del mobile.pending_invites[call.call_id]  # it has answered: tm's CANCEL finds nothing to end there
    net.reply(call, desk, 200)
    net.send(mobile, late)  # the mobile's 2xx crossed tm's CANCEL: relayed too, the call counted once
    assert gateway.statistics["calls_sip_to_sip"] == 1
    assert [m.status for m in carol.inbox if m.call_id == call.call_id and not m.is_request].count(200) == 2


def test_a_plain_call_is_counted_at_its_answer_not_at_its_ringing() -> None:
    gateway = Gateway(Settings(domains=frozenset({"127.0.0.1"})))
    net = Network(gateway)
    carol, erin = net.phone("carol", host="198.51.100.10"), net.phone("erin", host="198.51.100.11")
    net.registered(carol, erin)
    call = net.invite(carol, "erin")
    net.reply(call, erin, 180)
    assert gateway.statistics["calls_sip_to_sip"] == 0
    net.reply(call, erin, 200)
    assert gateway.statistics["calls_sip_to_sip"] == 1
    net.bye(call, "caller")


def test_a_python_failure_in_the_failure_route_still_releases_the_media() -> None:
    gateway = Gateway(strict=False)
    net = Network(gateway)
    alice, bob = net.browser("alice"), net.phone("bob")
    net.registered(alice, bob)
    earlier = net.invite(alice, "bob")
    net.reply(earlier, bob, 486)  # the worker's $var(gw_failure) now holds a failure's actions: delete
    call = net.invite(alice, "bob")
    assert gateway.sessions()
    start = len(gateway.events)

    def broken(msg: object, facts: str = "") -> int:
        raise RuntimeError("bug in the failure route")

    gateway.router.on_failure = broken
    net.reply(call, bob, 486)
    assert gateway.sessions() == [] and gateway.python_failures == 1
    deletes = [e for e in gateway.events[start:] if e.kind == "rtpengine" and e.data[0]["command"] == "delete"]
    assert len(deletes) == 1  # nothing of the earlier call's failure ran again


def test_the_acks_of_a_dialog_without_browsers_nor_media_stay_in_the_cfg() -> None:
    """quiet_ack: a call between SIP phones behind NAT that the rules keep off the media proxy (their requests
    come to the router for their NAT fixes): the caller's ACK without a body is the cfg's own."""
    from gateway.policy import MediaProxy

    def never(request: object, default: Any) -> Any:
        return default.with_media(MediaProxy.NEVER)

    gateway = Gateway(Settings(domains=frozenset({"127.0.0.1"})), rules=(never, None))
    net = Network(gateway)
    carol, erin = net.phone("carol", nat=True), net.phone("erin", nat=True)
    net.registered(carol, erin)
    call = net.invite(carol, "erin")
    net.reply(call, erin, 200)  # carol ACKs it
    assert call.rtpengine_offers() == []
    assert python_entries(gateway, 0).count("on_in_dialog") == 0
    net.bye(call, "caller")  # carol is behind NAT: her BYE goes to the router
    assert python_entries(gateway, 0).count("on_in_dialog") == 1
    assert_clean(gateway, net)


class FailingEngine(MemoryEngine):
    """Answers every command after the first offer with an error (the session stays where it was)."""

    def __init__(self) -> None:
        super().__init__()
        self.offers = 0

    def command(self, ng: dict) -> dict:  # type: ignore[type-arg]
        if ng["command"] == "offer":
            self.offers += 1
            if self.offers == 1:
                return super().command(ng)
        if ng["command"] == "delete":
            super().command(ng)  # gone, though rtpengine says it failed
        return {"result": "error", "error-reason": "broken"}


def test_a_failed_rtpengine_command_is_logged_with_the_call() -> None:
    gateway = Gateway(strict=False, rtpengine=FailingEngine())
    net = Network(gateway)
    alice, bob = net.browser("alice"), net.phone("bob")
    net.registered(alice, bob)
    call = net.invite(alice, "bob")
    net.reply(call, bob, 200)  # the answer fails
    net.reinvite(call, "caller", hold=True)  # the re-offer fails
    net.bye(call, "caller")  # the delete fails
    for step in ("offer", "answer", "delete"):
        assert any(f"rtpengine_{step} failed for Call-ID {call.call_id}" in e for e in gateway.errors), step


def test_a_branch_rtpengine_cannot_offer_is_dropped_and_logged() -> None:
    gateway = Gateway(Settings(), rtpengine=BrokenEngine(), strict=False)
    net = Network(gateway)
    alice, _bob = net.registered(net.browser("alice"), net.phone("bob"))
    call = net.invite(alice, "bob")
    assert call.statuses() == [503]
    assert any(f"branch 0 dropped for Call-ID {call.call_id}" in e for e in gateway.errors)


def test_a_python_failure_for_a_user_nobody_registered_gets_500() -> None:
    gateway = Gateway(strict=False)
    net = Network(gateway)
    alice = net.phone("alice")
    net.register(alice)

    def broken(msg: object, facts: str = "") -> int:
        raise RuntimeError("bug in the lookup failure route")

    gateway.router.on_lookup_failure = broken
    assert net.invite(alice, "nobody").statuses() == [500]
    assert gateway.python_failures == 1


def infos_received(ua: Any, call_id: str) -> List[Any]:
    return [m for m in ua.inbox if m.is_request and m.method == "INFO" and m.call_id == call_id]


def info_replies(ua: Any, call_id: str) -> List[int]:
    return [m.status for m in ua.inbox if not m.is_request and m.cseq_method == "INFO" and m.call_id == call_id]


@pytest.mark.parametrize("caller", ["browser", "phone"])
def test_a_browser_s_info_digit_reaches_a_sip_phone_as_rfc4733(caller: str) -> None:
    """A DTMF digit of a browser's SIP INFO (JsSIP's default) goes into the media toward the phone as RFC 4733
    events (rtpengine's play DTMF, from the browser's tag); the INFO is answered 200 and not relayed."""
    gateway = Gateway()
    net = Network(gateway)
    alice, carol = net.registered(net.browser("alice"), net.phone("carol"))
    call = net.invite(alice, "carol") if caller == "browser" else net.invite(carol, "alice")
    net.reply(call, carol if caller == "browser" else alice, 200)
    side = "caller" if caller == "browser" else "callee"
    sent = net.info(call, side, "Signal=5\r\nDuration=160\r\n")
    net.info(call, side, "#", "application/dtmf")
    assert infos_received(carol, call.call_id) == []
    assert info_replies(alice, call.call_id) == [200, 200]
    plays = [ng for ng in ng_commands(gateway) if ng["command"] == "play DTMF"]
    assert [(ng["from-tag"], ng["code"]) for ng in plays] == [(sent.from_tag, "5"), (sent.from_tag, "#")]
    net.bye(call, "callee")
    assert_clean(gateway, net)


@pytest.mark.parametrize(
    "body, content_type",
    [("Signal=5\r\nDuration=160\r\n", "application/dtmf-relay"), ("Signal=\r\n", "application/dtmf-relay"),
     ("<xml/>", "application/media_control+xml")],
)  # fmt: skip
def test_other_infos_go_on_as_they_came(body: str, content_type: str) -> None:
    """A phone's INFO to a browser (JsSIP takes INFO), and a browser's INFO that is no digit, go on as INFO."""
    gateway = Gateway()
    net = Network(gateway)
    alice, carol = net.registered(net.browser("alice"), net.phone("carol"))
    call = net.invite(carol, "alice")
    net.reply(call, alice, 200)
    net.info(call, "caller", body, content_type)
    assert [m.body.decode() for m in infos_received(alice, call.call_id)] == [body]
    if "Signal=5" not in body:
        net.info(call, "callee", body, content_type)
        assert [m.body.decode() for m in infos_received(carol, call.call_id)] == [body]
    assert [ng for ng in ng_commands(gateway) if ng["command"] == "play DTMF"] == []
    net.bye(call, "caller")
    assert_clean(gateway, net)


def test_with_info_dtmf_relay_a_browser_s_info_goes_on_as_info() -> None:
    """gateway.ini ``[media] info_dtmf = relay``: no row carries inject-DTMF (rtpengine passes a codec in
    common through untouched), and a browser's INFO digit reaches the phone as the INFO it sent."""
    settings = parse_settings("[media]\ninfo_dtmf = relay\n")
    assert not settings.profiles.plays_info_dtmf
    assert all("inject-DTMF" not in settings.profiles[key] for key in settings.profiles)
    gateway = Gateway(settings)
    net = Network(gateway)
    alice, carol = net.registered(net.browser("alice"), net.phone("carol"))
    call = net.invite(alice, "carol")
    net.reply(call, carol, 200)
    net.info(call, "caller", "Signal=7\r\nDuration=160\r\n")
    assert [m.body.decode() for m in infos_received(carol, call.call_id)] == ["Signal=7\r\nDuration=160\r\n"]
    assert [ng for ng in ng_commands(gateway) if ng["command"] == "play DTMF"] == []
    net.bye(call, "callee")
    assert_clean(gateway, net)


class NoDtmfEngine(MemoryEngine):
    """An rtpengine that refuses to play DTMF (as one without the call would)."""

    def command(self, ng: dict) -> dict:  # type: ignore[type-arg]
        if ng["command"] == "play DTMF":
            return {"result": "error", "error-reason": "Unknown call-id"}
        return super().command(ng)


def test_a_digit_rtpengine_cannot_play_is_logged_and_the_info_still_answered() -> None:
    gateway = Gateway(Settings(), rtpengine=NoDtmfEngine(), strict=False)
    net = Network(gateway)
    alice, carol = net.registered(net.browser("alice"), net.phone("carol"))
    call = net.invite(alice, "carol")
    net.reply(call, carol, 200)
    net.info(call, "caller", "Signal=1\r\nDuration=160\r\n")
    assert info_replies(alice, call.call_id) == [200]
    assert infos_received(carol, call.call_id) == []
    assert any(f"rtpengine_play_dtmf failed for Call-ID {call.call_id}" in e for e in gateway.errors), gateway.errors
    net.bye(call, "callee")
    assert gateway.sessions() == [] and gateway.dialogs == {}


def test_a_browser_registered_over_ipv6_is_offered_rtpengine_s_ipv6_address() -> None:
    """rtpengine writes the SDP toward a side it has not heard from in its first address's family (IPv4): the
    registration over IPv6 is kept as branch flag IPV6, and the offer toward that contact names IP6; a
    contact over IPv4 in the same fork gets no such flag, nor does the phone's answer leg."""
    gateway = Gateway()
    net = Network(gateway)
    web6 = net.browser("alice", host="::1")
    web4 = net.browser("alice")
    bob = net.phone("bob", nat=True)
    net.registered(web6, web4, bob)
    flags = sorted(sorted(c.bflags) for c in gateway.location["alice"])
    assert flags == [["IPV6", "WEBRTC"], ["WEBRTC"]]
    assert gateway.location["bob"][0].bflags == {"NATED"}
    call = net.invite(bob, "alice")
    offers = [c for c in ng_commands(gateway) if c["command"] == "offer"]
    assert sorted(c.get("address family", "") for c in offers) == ["", "IP6"]
    net.reply(call, web6, 200)
    answer = next(c for c in ng_commands(gateway) if c["command"] == "answer")
    assert "address family" not in answer  # toward the IPv4 phone: its own family
    net.bye(call, "callee")
    assert_clean(gateway, net)


def test_a_browser_calling_over_ipv6_has_its_re_offers_in_ipv6() -> None:
    """A browser over IPv6 calls an IPv4 phone: the record keeps the caller's family, and the phone's
    re-INVITE toward the browser names IP6 (the phone's leg never does)."""
    gateway = Gateway()
    net = Network(gateway)
    web6, bob = net.registered(net.browser("alice", host="2001:db8::7"), net.phone("bob", nat=True))
    call = net.invite(web6, "bob")
    offer = next(c for c in ng_commands(gateway) if c["command"] == "offer")
    assert "address family" not in offer  # toward the IPv4 phone
    net.reply(call, bob, 200)
    record = next(iter(gateway.dialogs.values())).vals["gw"]
    assert record.startswith("c=W16@wss:[2001:db8::7]:"), record
    net.reinvite(call, "callee")
    reoffer = [c for c in ng_commands(gateway) if c["command"] == "offer"][-1]
    assert reoffer.get("address family") == "IP6"
    net.bye(call, "caller")
    assert_clean(gateway, net)


@pytest.mark.parametrize("nat", [True, False], ids=["nated", "plain"])
def test_a_sip_phone_registered_over_ipv6_is_offered_ipv6_by_its_kind_s_plan(nat: bool) -> None:
    """The IPv6 twin of each kind's plan: a browser (through rtpengine) calls a phone that registered over
    IPv6, behind NAT or not; the offer toward it names IP6, the call record says so (S16/S06)."""
    gateway = Gateway()
    net = Network(gateway)
    alice, carol = net.registered(net.browser("alice"), net.phone("carol", nat=nat, host="2001:db8::5"))
    assert gateway.location["carol"][0].bflags == ({"IPV6", "NATED"} if nat else {"IPV6"})
    call = net.invite(alice, "carol")
    offer = next(c for c in ng_commands(gateway) if c["command"] == "offer")
    assert offer.get("address family") == "IP6"
    net.reply(call, carol, 200)
    record = next(iter(gateway.dialogs.values())).vals["gw"]
    assert f"b0=mS{int(nat)}6;" in record + ";", record
    net.bye(call, "callee")
    assert_clean(gateway, net)


def test_a_trunk_at_an_ipv6_address_is_offered_ipv6() -> None:
    """A call to another domain goes to the SIP destination; at an IPv6 address, the browser's offer toward it
    names IP6 (the request route sets IPV6 for its branch), and the call record says so (S06)."""
    gateway = Gateway(Settings(sip_destination="sip:[2001:db8::99]:5080"))
    net = Network(gateway)
    alice = net.registered(net.browser("alice"))[0]
    net.invite(alice, "+4930123", domain="pstn.example")
    endpoint, _message = [event.data for event in gateway.events if event.kind == "send"][-1]
    assert (endpoint.host, endpoint.port) == ("2001:db8::99", 5080)
    offer = next(c for c in ng_commands(gateway) if c["command"] == "offer")
    assert offer.get("address family") == "IP6"
    assert "b0=mS06" in next(iter(gateway.dialogs.values())).vals["gw"]
