"""The decisions, one rule at a time, on plain values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import core
from gateway.core import Target
from gateway.model import Branch, CallRecord, Exchange, Leg, Media, Party, Registration, Source, Step
from gateway.profiles import Profiles
from gateway.settings import Settings, parse

PROFILES = Profiles()
BROWSER = Party(Leg.WEB, True, "wss:198.51.100.7:52044")
PHONE = Party(Leg.SIP, False)
NATED_PHONE = Party(Leg.SIP, True)

parties = st.builds(
    Party, st.sampled_from(list(Leg)), st.booleans(), st.one_of(st.none(), st.just("ws:127.0.0.9:1234"))
)


@pytest.mark.parametrize(
    ("proto", "source"),
    [
        ("ws", Source.WEBSOCKET),
        ("wss", Source.WEBSOCKET),
        ("WSS", Source.WEBSOCKET),
        ("udp", Source.SIP),
        ("tcp", Source.SIP),
        ("tls", Source.SIP),
        ("", Source.SIP),
    ],
)
def test_the_transport_tells_the_source(proto: str, source: Source) -> None:
    assert core.source_of(proto) is source


def test_every_websocket_peer_is_behind_nat() -> None:
    assert core.party_of(Source.WEBSOCKET, False) == Party(Leg.WEB, True)
    assert core.registration_of(Source.WEBSOCKET, False) is Registration.WEBRTC


@pytest.mark.parametrize(("nat", "registration"), [(True, Registration.NATED_SIP), (False, Registration.PLAIN_SIP)])
def test_sip_registrations_follow_the_nat_test(nat: bool, registration: Registration) -> None:
    assert core.registration_of(Source.SIP, nat) is registration


@given(st.sampled_from(list(Registration)), st.lists(st.sampled_from(["SIPPING", "OTHER", "X"]), max_size=3))
def test_branch_flags_round_trip_whatever_else_is_set(registration: Registration, others: list) -> None:  # type: ignore[type-arg]
    names = " ".join(list(core.REGISTRATION_BFLAGS[registration]) + others)
    assert core.registration_from_bflags(names) is registration


@pytest.mark.parametrize(
    ("method", "nat", "fix"),
    [
        ("REGISTER", True, "fix_nated_register"),
        ("INVITE", True, "fix_nated_contact"),
        ("INVITE", False, None),
        ("REGISTER", False, None),
        ("SUBSCRIBE", True, "fix_nated_contact"),
    ],
)
def test_contact_fixing(method: str, nat: bool, fix: str) -> None:
    assert core.contact_fix(method, nat) == fix


@given(parties, parties, st.booleans())
def test_the_media_proxy_decision(caller: Party, callee: Party, private_sdp: bool) -> None:
    proxy = core.needs_media_proxy(caller, callee, private_sdp)
    if Leg.WEB in (caller.leg, callee.leg):
        assert proxy
    else:
        assert proxy == (private_sdp or caller.behind_nat or callee.behind_nat)


SETTINGS = Settings(
    domains=frozenset({"example.com"}), sip_destination="sip:10.0.0.1:5060", trusted_sources=frozenset({"10.0.0.1"})
)


@pytest.mark.parametrize(
    ("method", "user", "domain", "from_domain", "source", "target", "reply"),
    [
        ("INVITE", "bob", "example.com", "elsewhere.net", "1.2.3.4", Target.LOCATION, None),
        ("INVITE", "bob", "EXAMPLE.COM", "elsewhere.net", "1.2.3.4", Target.LOCATION, None),
        ("INVITE", "+4930", "pstn.net", "example.com", "1.2.3.4", Target.DESTINATION, None),
        ("INVITE", "+4930", "pstn.net", "pstn.net", "10.0.0.1", Target.DESTINATION, None),
        ("INVITE", "x", "victim.org", "spoof.org", "1.2.3.4", Target.REFUSE, (403, "Relaying Forbidden")),
        ("OPTIONS", "", "example.com", "x", "1.2.3.4", Target.LOCAL_REPLY, (200, "OK")),
        ("MESSAGE", "", "example.com", "x", "1.2.3.4", Target.REFUSE, (404, "Not Found")),
        ("REGISTER", "", "example.com", "x", "1.2.3.4", Target.LOCATION, None),
        ("REGISTER", "", "other.org", "x", "1.2.3.4", Target.REFUSE, (403, "Forbidden - Not Our Domain")),
    ],
)
def test_where_initial_requests_go(method, user, domain, from_domain, source, target, reply) -> None:  # type: ignore[no-untyped-def]
    routing = core.route_initial(method, user, domain.lower(), from_domain, source, SETTINGS)
    assert (routing.target, routing.reply) == (target, reply)


def test_without_a_sip_destination_calls_out_are_refused() -> None:
    routing = core.route_initial("INVITE", "x", "pstn.net", "127.0.0.1", "1.2.3.4", Settings())
    assert routing.reply == (404, "No Route To Destination")


@pytest.mark.parametrize(("code", "reply"), [(-1, 404), (-2, 405), (-3, 500), (-7, 404)])
def test_lookup_failures(code: int, reply: int) -> None:
    assert core.lookup_failure(code)[0] == reply


def test_a_branch_to_a_browser_gets_an_offer_of_its_own() -> None:
    record = CallRecord(PHONE, early_offer=True, private_sdp=False)
    plan = core.plan_branch(record, 1, Registration.WEBRTC, PROFILES)
    assert plan.record.branch(1) == Branch(Party(Leg.WEB, True), Media.OPEN)
    assert plan.action is not None and plan.action.step is Step.OFFER
    assert plan.action.flags.endswith("via-branch-param=br1")
    assert "UDP/TLS/RTP/SAVPF" in plan.action.flags


def test_plain_sip_to_plain_sip_stays_off_the_media_proxy() -> None:
    record = CallRecord(PHONE, early_offer=True, private_sdp=False)
    plan = core.plan_branch(record, 0, Registration.PLAIN_SIP, PROFILES)
    assert plan.action is None and plan.record.branch(0) == Branch(PHONE, Media.NONE)


def test_private_sdp_from_a_phone_takes_the_media_proxy_and_trusts_the_source_address() -> None:
    record = CallRecord(PHONE, early_offer=True, private_sdp=True)
    plan = core.plan_branch(record, 0, Registration.PLAIN_SIP, PROFILES)
    assert plan.action is not None and "SIP-source-address" in plan.action.flags.split()


def test_a_late_offer_is_offered_in_the_2xx_and_answered_in_the_ack() -> None:
    record = core.plan_branch(CallRecord(PHONE, early_offer=False, private_sdp=False), 0, Registration.WEBRTC, PROFILES)
    assert record.action is None
    reply = core.plan_initial_reply(record.record, 0, 200, True, PROFILES, "wss:127.0.0.2:5000")
    assert reply.action is not None and reply.action.step is Step.OFFER
    assert "RTP/AVP" in reply.action.flags  # the browser's offer goes to the phone
    assert reply.record is not None and reply.record.answered == 0
    ack = core.plan_sequential(reply.record, True, "ACK", True, PROFILES)
    assert ack.action is not None and ack.action.step is Step.ANSWER
    assert "UDP/TLS/RTP/SAVPF" in ack.action.flags  # the phone's answer goes to the browser
    assert ack.dst_uri == "sip:127.0.0.2:5000;transport=wss"


def test_the_failure_route_deletes_what_is_still_open() -> None:
    record = core.plan_branch(CallRecord(BROWSER, True, False), 0, Registration.PLAIN_SIP, PROFILES).record
    action = core.plan_failure(record, PROFILES)
    assert action is not None and action.step is Step.DELETE and action.flags == ""


def answered(caller: Party, callee: Party, media: bool = True) -> CallRecord:
    return CallRecord(caller, True, False, ((0, Branch(callee, Media.OPEN if media else Media.NONE)),), 0)


@given(parties, parties, st.booleans(), st.sampled_from(["INVITE", "UPDATE"]))
def test_re_offers_are_shaped_for_the_other_leg(caller: Party, callee: Party, downstream: bool, method: str) -> None:
    plan = core.plan_sequential(answered(caller, callee), downstream, method, True, PROFILES)
    receiver = callee if downstream else caller
    sender = caller if downstream else callee
    assert plan.action is not None and plan.action.step is Step.REOFFER
    assert plan.action.flags.startswith(PROFILES[(sender.leg, receiver.leg, Step.REOFFER)])
    assert plan.exchange == Exchange(sender, receiver, True)
    answer = core.plan_sequential_reply(plan.exchange, 200, True, PROFILES)
    assert answer is not None and answer.flags.startswith(PROFILES[(receiver.leg, sender.leg, Step.ANSWER)])


def test_a_re_invite_without_sdp_is_re_offered_from_the_reply() -> None:
    plan = core.plan_sequential(answered(BROWSER, PHONE), True, "INVITE", False, PROFILES)
    assert plan.action is None and plan.exchange is not None
    action = core.plan_sequential_reply(plan.exchange, 200, True, PROFILES)
    assert action is not None and action.step is Step.REOFFER and "UDP/TLS/RTP/SAVPF" in action.flags


def test_bye_deletes_the_call() -> None:
    plan = core.plan_sequential(answered(PHONE, BROWSER), False, "BYE", False, PROFILES)
    assert plan.action is not None and plan.action.step is Step.DELETE
    assert plan.dst_uri is None  # toward the phone: its Contact
    plan = core.plan_sequential(answered(PHONE, BROWSER), True, "BYE", False, PROFILES)
    assert plan.dst_uri == "sip:198.51.100.7:52044;transport=wss"


def test_calls_without_media_proxy_touch_no_rtpengine_in_dialog() -> None:
    for method in ("INVITE", "UPDATE", "ACK", "BYE", "INFO"):
        assert core.plan_sequential(answered(PHONE, PHONE, media=False), True, method, True, PROFILES).action is None


def test_sequential_requests_before_an_answer_do_nothing() -> None:
    assert core.plan_sequential(CallRecord(PHONE, True, False), True, "BYE", False, PROFILES) == core.SequentialPlan()
    assert core.plan_sequential(None, True, "BYE", False, PROFILES) == core.SequentialPlan()


def test_settings_from_ini() -> None:
    settings = parse(
        "[gateway]\ndomains = Example.com, sip.example.com\nsip_destination = sip:10.1.1.1:5060\n"
        "trusted_sources = 10.1.1.1\ntopology_hiding = yes\n"
    )
    assert settings.domains == frozenset({"example.com", "sip.example.com"})
    assert settings.topology_hiding and settings.sip_destination == "sip:10.1.1.1:5060"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[gateway]\ntopology_hiding = maybe\n", "topology_hiding must be yes or no"),
        ("[gateway]\nsip_destination = 10.1.1.1\n", "must be a sip: URI"),
        ("[gateway]\ndomian = x\n", "unknown setting"),
        ("[gatway]\n", "unknown section"),
        ("no section\n", "File contains no section headers"),
    ],
)
def test_bad_settings_get_a_clear_answer(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse(text)


@pytest.mark.parametrize("caller", [Party(Leg.WEB, True), Party(Leg.SIP, True)])
@pytest.mark.parametrize("callee", [Party(Leg.WEB, True), Party(Leg.SIP, True), Party(Leg.SIP, False)])
@pytest.mark.parametrize("step", list(Step))
def test_private_sdp_changes_nothing_where_it_is_not_read(caller: Party, callee: Party, step: Step) -> None:
    source = Source.WEBSOCKET if caller.leg is Leg.WEB else Source.SIP
    assert not core.sdp_privacy_matters(source, caller.behind_nat)
    assert core.needs_media_proxy(caller, callee, True) == core.needs_media_proxy(caller, callee, False)
    profiles = Profiles()
    assert core.media_action(profiles, step, caller, callee.leg, True) == core.media_action(
        profiles, step, caller, callee.leg, False
    )


def test_an_offer_toward_an_ipv6_contact_names_the_family_before_the_branch() -> None:
    """rtpengine takes IPv4 toward a side it has not heard from: the offer to a contact registered over
    IPv6 says address-family=IP6; the branch index stays last (the cfg appends it: core.unindexed)."""
    record = CallRecord(PHONE, early_offer=True, private_sdp=False)
    plan = core.plan_branch(record, 2, Registration.WEBRTC, PROFILES, ipv6=True)
    assert plan.action is not None
    assert plan.action.flags.endswith(f" {core.ADDRESS_FAMILY_IP6} {core.BRANCH_PARAM}2")
    assert plan.record.branch(2) == Branch(Party(Leg.WEB, True, None, True), Media.OPEN)
    ipv4 = core.plan_branch(record, 2, Registration.WEBRTC, PROFILES)
    assert ipv4.action is not None and core.ADDRESS_FAMILY_IP6 not in ipv4.action.flags
    # a delete never carries it; an answer toward an IPv6 caller may (harmless: its own family)
    delete = core.media_action(PROFILES, Step.DELETE, PHONE, Leg.WEB, ipv6=True)
    assert delete.flags == ""
