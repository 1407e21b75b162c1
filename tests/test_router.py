"""The adapter's protocol with the cfg: the actions it answers, for every kind of call.

The cfg (opensips.cfg) serves some messages without asking the router (a branch by its
contact's plan, the quiet replies, ACKs and BYEs of dialogs without browsers, an untracked
dialog's requests); these tests hold the router to answering nothing more for them.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import re
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import core, host
from gateway.host import SEP, Act, Router
from gateway.model import Branch, CallRecord, Leg, Media, Party, Registration, Step
from gateway.policy import Decision, Kind, MediaProxy, Request, Tables, to_uri, to_user
from gateway.profiles import Profiles
from gateway.settings import Settings


class Msg:
    """The host's msg, for routes that need no reads: keeps what the router sets."""

    Type = "SIP_REQUEST"

    def __init__(self) -> None:
        self.sets: Dict[str, str] = {}
        self.dst_uri: Optional[str] = None

    def getHeader(self, name: str) -> Optional[str]:  # noqa: N802
        return None

    def call_function(self, name: str, *args: Optional[str]) -> int:
        raise AssertionError(f"call_function({name!r}): the cfg makes every script function call")

    def get_pseudoVar(self, fmt: str) -> Optional[str]:  # noqa: N802
        raise AssertionError(f"get_pseudoVar({fmt!r}): the facts come in the argument")

    def set_pseudoVar(self, name: str, value: str) -> None:  # noqa: N802
        self.sets[name] = value

    def set_dst_uri(self, uri: str) -> None:
        self.dst_uri = uri

    def rewrite_ruri(self, uri: str) -> None:
        self.sets["$ru"] = uri


def router(settings: Optional[Settings] = None) -> Router:
    return Router.fixed(settings or Settings(), lambda text: None)


def finds(r: Router, msg: Msg, name: str) -> Optional[str]:
    """What the cfg finds in ``name`` after the route: written now, or held in the worker from before."""
    return msg.sets.get(name, r.held.get(name))


def actions(r: Router, msg: Msg, var: str) -> List[str]:
    found = finds(r, msg, var)
    assert found is not None, var
    return found.split(",")


CALLERS = [Party(Leg.WEB, True, "wss:198.51.100.7:4443"), Party(Leg.SIP, True), Party(Leg.SIP, False)]


def calls() -> List[Tuple[Party, bool, bool, Registration]]:
    return list(itertools.product(CALLERS, (True, False), (True, False), Registration))


def plan_of(r: Router, record: CallRecord, registration: Registration) -> Tuple[List[str], str, str]:
    plan = host.branch_plan(record, registration, MediaProxy.AUTO, r.rules)
    acts, part, offer = plan.split("|")
    assert set(acts.split(",")) <= host.BRANCH_ACTIONS
    return acts.split(","), part, offer


@pytest.mark.parametrize(("caller", "early", "private", "registration"), calls())
def test_a_branch_plan_arms_the_python_reply_route_or_the_native_count_of_a_plain_sip_call(
    caller: Party, early: bool, private: bool, registration: Registration
) -> None:
    r = router()
    record = CallRecord(caller, early, private)
    acts, part, offer = plan_of(r, record, registration)
    decided = core.plan_branch(record, 0, registration, r.rules.settings.profiles)
    branch = decided.record.branch(0)
    assert branch is not None
    if branch.media_proxy:
        assert acts[:2] == [Act.TRACK, Act.ON_REPLY if branch.callee.behind_nat else Act.ON_REPLY_QUIET]
        assert Act.RECORD_BRANCH in acts and part == branch.code
    else:
        # onreply_route[gw_answered_sip_to_sip] counts this call without Python: it must be one.
        assert (caller.leg, registration.leg) == (Leg.SIP, Leg.SIP) and acts == [Act.ON_ANSWER]
        assert core.answered_call_stats(decided.record, 0) == ("calls_sip_to_sip",)
    assert (Act.OFFER_BRANCH in acts) == (decided.action is not None) == (branch.media_proxy and early)
    if decided.action is not None:  # the cfg adds the branch's index
        assert offer + "0" == decided.action.flags and offer.endswith(core.BRANCH_PARAM)


def reply_facts(status: int, record: str, body: bool = False, proto: str = "udp", contacts: str = "1") -> str:
    content = b"application/sdp".hex() if body else "<null>"
    return SEP.join((str(status), proto, "0", "120" if body else "0", "INVITE", contacts, "198.51.100.9", "5060",
                     "<null>", record, content))  # fmt: skip


def branched(caller: Party, early: bool, private: bool, registration: Registration) -> str:
    """The call record after branch 0 to a contact of this kind, as the cfg's do_record_branch leaves it."""
    record = CallRecord(caller, early, private)
    acts, part, _ = plan_of(router(), record, registration)
    return f"{record};b0={part}" if Act.RECORD_BRANCH in acts else str(record)


@pytest.mark.parametrize(("caller", "early", "private", "registration"), calls())
def test_the_replies_the_cfg_keeps_from_the_router_need_nothing(
    caller: Party, early: bool, private: bool, registration: Registration
) -> None:
    """onreply_route[gw_reply] keeps a 100 without a body from the router, and gw_reply_quiet every
    reply without a body but a 2xx: the router must have nothing to do for them."""
    r = router()
    acts, _, _ = plan_of(r, CallRecord(caller, early, private), registration)
    record = branched(caller, early, private, registration)
    quiet = (100, 101, 180, 183, 199, 300, 302, 404, 486, 500, 603) if Act.ON_REPLY_QUIET in acts else (100,)
    for status, proto, contacts in itertools.product(quiet, ("udp", "tcp", "wss"), ("0", "1")):
        msg = Msg()
        assert r.on_reply(msg, reply_facts(status, record, proto=proto, contacts=contacts)) == 1
        assert actions(r, msg, host.REPLY_VAR) == [Act.NONE], (status, proto, contacts)
        assert set(msg.sets) <= {host.REPLY_VAR, host.REPLY_KEPT_VAR}
        assert finds(r, msg, host.REPLY_KEPT_VAR) == ""  # without a body: the cfg asks each time
    stored = CallRecord.parse(record).branch(0)
    if stored is not None and stored.media_proxy:  # its 2xx with an SDP is work: rtpengine's answer (or offer)
        msg = Msg()
        r.on_reply(msg, reply_facts(200, record, body=True))
        assert {Act.ANSWER, Act.OFFER} & set(actions(r, msg, host.REPLY_VAR))


def answered(r: Router, caller: Party, early: bool, private: bool, registration: Registration) -> Tuple[List[str], str]:
    """The actions of the first 2xx (with an SDP) of a call to a contact of this kind, and the record it stores."""
    record = branched(caller, early, private, registration)
    msg = Msg()
    r.on_reply(msg, reply_facts(200, record, body=True))
    acts = actions(r, msg, host.REPLY_VAR)
    return acts, (finds(r, msg, host.REPLY_RECORD_VAR) or "") if Act.NEW_RECORD in acts else record


@pytest.mark.parametrize(("caller", "early", "private", "registration"), calls())
def test_a_dialog_whose_acks_the_cfg_relays_itself_needs_nothing_for_them(
    caller: Party, early: bool, private: bool, registration: Registration
) -> None:
    """do_quiet_ack/do_quiet_bye (at the first 2xx): route[gw_in_dialog] relays an ACK without a body then."""
    r = router()
    if plan_of(r, CallRecord(caller, early, private), registration)[0] == [Act.ON_ANSWER]:
        return  # the cfg counts its answer itself; its dialog is not tracked (see the test below)
    acts, record = answered(r, caller, early, private, registration)
    web = Leg.WEB in (caller.leg, core.party_registered(registration).leg)
    quiet = bool({Act.QUIET_ACK, Act.QUIET_BYE} & set(acts))
    assert quiet == (not web)
    if quiet:
        for proto, nat, contacts in itertools.product(("udp", "tcp", "tls", "ws", "wss"), ("0", "1"), ("0", "1")):
            msg = Msg()
            ack = SEP.join(("ACK", proto, nat, contacts, "0", "downstream", record, "<null>"))
            assert r.on_in_dialog(msg, ack) == 1
            assert actions(r, msg, host.IN_DIALOG_VAR) == [Act.RELAY] and msg.dst_uri is None
            assert set(msg.sets) <= {host.IN_DIALOG_VAR}
    # an ACK with a body (the answer to a late offer) still gets its sender's flags and fixes
    msg = Msg()
    late = SEP.join(("ACK", "udp", "1", "1", "120", "downstream", record, b"application/sdp".hex()))
    r.on_in_dialog(msg, late)
    assert {Act.NAT, Act.RPORT, Act.FIX_CONTACT} <= set(actions(r, msg, host.IN_DIALOG_VAR))


@pytest.mark.parametrize(("caller", "early", "private", "registration"), calls())
def test_a_dialog_whose_byes_the_cfg_serves_itself_gets_just_that_from_the_router(
    caller: Party, early: bool, private: bool, registration: Registration
) -> None:
    """do_quiet_bye: route[gw_in_dialog] serves a BYE from a SIP peer itself then: for one behind NAT
    setflag("SRC_NAT") and force_rport(), then rtpengine_delete() with no flags, relay."""
    r = router()
    if plan_of(r, CallRecord(caller, early, private), registration)[0] == [Act.ON_ANSWER]:
        return  # no media: nothing to delete
    acts, record = answered(r, caller, early, private, registration)
    callee = CallRecord.parse(record).callee_branch
    assert callee is not None
    quiet = Leg.WEB not in (caller.leg, callee.callee.leg) and callee.media is Media.OPEN
    assert (Act.QUIET_BYE in acts) == quiet
    if not quiet:
        return
    for proto, nat, contacts, body, direction in itertools.product(
        ("udp", "tcp", "tls"), ("0", "1"), ("0", "1"), ("0", "120"), ("downstream", "upstream")
    ):
        msg = Msg()
        bye = SEP.join(("BYE", proto, nat, contacts, body, direction, record, b"application/sdp".hex()))
        behind_nat = [Act.NAT, Act.RPORT] if nat == "1" else []
        assert r.on_in_dialog(msg, bye) == 1
        assert actions(r, msg, host.IN_DIALOG_VAR) == [*behind_nat, Act.DELETE, Act.RELAY]
        delete = host.MEDIA_FLAGS_VARS[Step.DELETE]
        assert msg.dst_uri is None and set(msg.sets) <= {delete, host.IN_DIALOG_VAR} and finds(r, msg, delete) == ""


def test_a_delete_with_flags_keeps_the_byes_with_the_router() -> None:
    profiles = Profiles({(Leg.SIP, Leg.SIP, Step.DELETE): "delete-delay=0"})
    r = router(Settings(profiles=profiles))
    record = CallRecord(Party(Leg.SIP, True), True, False)
    plan = host.branch_plan(record, Registration.PLAIN_SIP, MediaProxy.AUTO, r.rules).split("|")
    msg = Msg()
    r.on_reply(msg, reply_facts(200, f"{record};b0={plan[1]}", body=True))
    assert Act.QUIET_ACK in actions(r, msg, host.REPLY_VAR)
    msg = Msg()
    r.on_in_dialog(msg, SEP.join(("BYE", "udp", "1", "0", "0", "downstream", msg_record(r, record, plan), "<null>")))
    assert actions(r, msg, host.IN_DIALOG_VAR) == [Act.NAT, Act.RPORT, Act.DELETE, Act.RELAY]
    assert finds(r, msg, host.MEDIA_FLAGS_VARS[Step.DELETE]) == "delete-delay=0"


def msg_record(r: Router, record: CallRecord, plan: List[str]) -> str:
    msg = Msg()
    r.on_reply(msg, reply_facts(200, f"{record};b0={plan[1]}", body=True))
    assert Act.NEW_RECORD in actions(r, msg, host.REPLY_VAR)
    return finds(r, msg, host.REPLY_RECORD_VAR) or ""


def request_facts(method: str, proto: str = "udp", nat: str = "0", user: str = "bob", domain: str = "127.0.0.1",
                  from_domain: Optional[str] = None, source: str = "127.0.0.9") -> str:  # fmt: skip
    local = domain.encode().hex()
    origin = (from_domain or domain).encode().hex()
    return host.request_facts(method, proto, nat, "0", "120", "1", source, "5060", user.encode().hex(), local,
                              b"alice".hex(), origin, user.encode().hex(), local, b"application/sdp".hex())  # fmt: skip


def test_a_var_the_worker_holds_already_is_not_written_again() -> None:
    """$var values outlive the message in a worker (opensips.cfg): the router writes a HELD_VARS value
    only when it changes, and the cfg finds it there."""
    r = router()
    invite, web_invite = request_facts("INVITE"), request_facts("INVITE", proto="wss")
    first, again, other, back = Msg(), Msg(), Msg(), Msg()
    r.on_request(first, invite)
    assert {host.RECORD_VAR, host.REQUEST_VAR, *host.BRANCH_VARS.values()} <= set(first.sets) <= host.HELD_VARS
    r.on_request(again, invite)
    assert again.sets == {} and all(finds(r, again, name) == value for name, value in first.sets.items())
    r.on_request(other, web_invite)  # another record, other plans and actions
    assert other.sets[host.RECORD_VAR] != first.sets[host.RECORD_VAR]
    r.on_request(back, invite)
    assert back.sets == {name: value for name, value in first.sets.items() if other.sets.get(name, value) != value}
    assert host.RECORD_VAR in back.sets
    assert r.held == {**first.sets, **other.sets, **back.sets}


def test_a_write_that_fails_is_not_taken_for_held() -> None:
    class Failing(Msg):
        def set_pseudoVar(self, name: str, value: str) -> None:  # noqa: N802
            raise RuntimeError("no memory")

    r = router()
    assert r.on_request(Failing(), request_facts("INVITE")) == host.FAILED
    assert r.held == {}
    msg = Msg()
    r.on_request(msg, request_facts("INVITE"))
    assert host.RECORD_VAR in msg.sets


def test_the_cfg_only_reads_the_vars_the_router_holds() -> None:
    cfg = (pathlib.Path(__file__).resolve().parent.parent / "opensips" / "opensips.cfg").read_text()
    for name in host.HELD_VARS:
        assert name[1:] in cfg and not re.search(re.escape(name) + r"\s*=[^=~]", cfg), name


def register_facts(proto: str = "udp", nat: str = "0", family: str = "INET", trusted: str = "0",
                   domain: str = "127.0.0.1", contacts: str = "1") -> str:  # fmt: skip
    """REGISTER_FACTS as route[gw_register] builds them."""
    hexed = domain.encode().hex()
    return SEP.join((proto, nat, contacts, family, trusted, hexed, hexed, hexed))


def test_our_users_requests_ask_the_cfg_for_digest_auth_in_the_realm() -> None:
    r = router(Settings(auth_realm="gw.example"))
    for method in ("INVITE", "MESSAGE"):
        msg = Msg()
        r.on_request(msg, request_facts(method))
        assert actions(r, msg, host.REQUEST_VAR)[-1] == Act.PROXY_AUTH
        assert finds(r, msg, host.REALM_VAR) == "gw.example"
        # the rules answer after the digest check
        after = Msg()
        assert r.on_authorized(after) == 1
        assert actions(r, after, host.AUTHORIZED_VAR)[-1] in (Act.RELAY_CALL, Act.RELAY)
    assert r.on_authorized(Msg()) == host.FAILED  # once: nothing is pending any more
    # a REGISTER's digest check is one of its actions, its flags and save() follow (no rule sees it)
    msg = Msg()
    r.on_register(msg, register_facts(nat="1"))
    assert actions(r, msg, host.REGISTER_VAR) == [Act.NAT, Act.RPORT, Act.FIX_REGISTER, Act.WWW_AUTH,
                                                  Act.NATED_CONTACT, Act.SAVE]  # fmt: skip
    assert finds(r, msg, host.REALM_VAR) == "gw.example"
    msg = Msg()
    r.on_register(msg, register_facts(trusted="1"))
    assert actions(r, msg, host.REGISTER_VAR) == [Act.SAVE]
    trusted = router(Settings(auth_realm="gw.example", trusted_sources=frozenset({"127.0.0.9"})))
    msg = Msg()
    trusted.on_request(msg, request_facts("INVITE"))
    assert not {Act.WWW_AUTH, Act.PROXY_AUTH} & set(actions(trusted, msg, host.REQUEST_VAR))


METHODS = ("INVITE", "ACK", "BYE", "UPDATE", "PRACK", "INFO", "MESSAGE", "NOTIFY", "OPTIONS", "REFER")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("proto", ["udp", "tcp", "tls"])
@pytest.mark.parametrize("contacts", ["0", "1"])
def test_an_untracked_dialogs_request_from_a_sip_peer_not_behind_nat_needs_nothing(
    method: str, proto: str, contacts: str
) -> None:
    """route[gw_in_dialog] relays such a request without asking on_in_dialog: it must be what the router says."""
    r = router()
    # a dialog without the media proxy: plain SIP to plain SIP, answered (or not: no record at all)
    record = CallRecord(Party(Leg.SIP, False), True, False).with_branch(
        0, Branch(core.party_registered(Registration.PLAIN_SIP), Media.NONE)
    )
    for text in (str(record), str(record.with_answer(0)), "<null>"):
        for direction in ("downstream", "upstream"):
            msg = Msg()
            facts = SEP.join((method, proto, "0", contacts, "200", direction, text, b"application/sdp".hex()))
            assert r.on_in_dialog(msg, facts) == 1
            assert actions(r, msg, host.IN_DIALOG_VAR) == [Act.RELAY], (method, text, direction)
            assert set(msg.sets) <= {host.IN_DIALOG_VAR} and msg.dst_uri is None


def test_in_dialog_requests_of_a_browser_get_their_flags_and_media() -> None:
    r = router()
    record = CallRecord(Party(Leg.WEB, True, "wss:198.51.100.7:4443"), True, False)
    plan = core.plan_branch(record, 0, Registration.PLAIN_SIP, r.rules.settings.profiles)
    answered_record = plan.record.with_answer(0)
    msg = Msg()
    r.on_in_dialog(msg, SEP.join(("BYE", "wss", "0", "0", "0", "downstream", str(answered_record), "<null>")))
    assert actions(r, msg, host.IN_DIALOG_VAR) == [Act.WS, Act.NAT, Act.DELETE, Act.RELAY]
    msg = Msg()
    r.on_in_dialog(msg, SEP.join(("BYE", "udp", "0", "0", "0", "upstream", str(answered_record), "<null>")))
    assert Act.DELETE in actions(r, msg, host.IN_DIALOG_VAR)
    assert msg.dst_uri == "sip:198.51.100.7:4443;transport=wss"  # back over the browser's own connection


def test_a_local_reply_leaves_its_code_and_reason_for_the_cfg() -> None:
    r = router()
    msg = Msg()
    foreign = request_facts("INVITE", domain="example.org", from_domain="example.net", source="203.0.113.9")
    r.on_request(msg, foreign)
    assert actions(r, msg, host.REQUEST_VAR)[-1] == Act.REPLY
    assert (msg.sets[host.REPLY_CODE_VAR], msg.sets[host.REPLY_REASON_VAR]) == ("403", "Relaying Forbidden")


def test_missing_or_garbled_facts_fail_safe_and_are_logged() -> None:
    logged: List[str] = []
    r = Router.fixed(Settings(), logged.append)
    assert r.on_request(Msg()) == host.FAILED  # python_exec without its argument
    assert r.on_request(Msg(), "INVITE\nudp\n0\n0\n0\n1\n127.0.0.9\n5060\n3\nzz") == host.FAILED
    assert r.on_reply(Msg(), "") == host.FAILED
    assert len(logged) == 3 and all("route failed" in line for line in logged)


def test_branch_plans_are_kept_up_to_a_bound_by_their_complete_inputs() -> None:
    r = router()
    for port in range(5000):
        msg = Msg()
        r.on_request(msg, host.request_facts("INVITE", "wss", "0", "0", "120", "1", "198.51.100.7", str(port),
                                             b"bob".hex(), b"127.0.0.1".hex(), b"alice".hex(), b"127.0.0.1".hex(),
                                             b"bob".hex(), b"127.0.0.1".hex(), b"application/sdp".hex()))  # fmt: skip
    # a browser's connection is no input of a plan: one plan a kind of contact and family, whatever the port
    assert len(r._plans) == 1 and len(next(iter(r._plans.values()))) == len(host.BRANCH_VARS)


def test_a_requests_actions_always_end_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """route[request_actions] ends the script after the last action: a list must end with one that ends it."""
    r = router()
    monkeypatch.setattr(r, "_request", lambda rules, msg, facts: host.Answer((Act.NAT, Act.RPORT)))
    assert r.on_request(Msg(), request_facts("INVITE")) == host.FAILED
    monkeypatch.setattr(r, "_request", lambda rules, msg, facts: host.Answer((Act.NAT, Act.RELAY)))
    assert r.on_request(Msg(), request_facts("INVITE")) == 1
    for facts in (request_facts("INVITE"), request_facts("CANCEL")):
        msg = Msg()
        router().on_request(msg, facts)
        assert msg.sets[host.REQUEST_VAR].split(",")[-1] in host.ENDING[host.REQUEST_VAR]
    msg = Msg()
    router().on_register(msg, register_facts())
    assert msg.sets[host.REGISTER_VAR].split(",")[-1] in host.ENDING[host.REGISTER_VAR]
    monkeypatch.setattr(r, "_register", lambda rules, facts: host.Answer((Act.NAT, Act.WWW_AUTH)))
    assert r.on_register(Msg(), register_facts()) == host.FAILED  # a digest check does not end a REGISTER's


def test_a_register_comes_to_on_register_and_names_its_facts_when_its_answer_holds_for_them() -> None:
    """route[gw_register] takes a REGISTER's answer again, without asking, for REGISTERs with the facts the
    answer names; a refusal names none (its code and reason wait in $vars other answers write)."""
    logged: List[str] = []
    r = Router.fixed(Settings(auth_realm="gw.example"), logged.append)
    assert r.on_request(Msg(), request_facts("REGISTER")) == host.FAILED  # the cfg sends it to on_register
    assert "on_register" in logged[-1]
    for facts, expected in (
        (register_facts(), [Act.WWW_AUTH, Act.SAVE]),
        (register_facts(proto="wss", family="INET6"),
         [Act.WS, Act.NAT, Act.FIX_REGISTER, Act.WWW_AUTH, Act.IPV6_CONTACT, Act.WEBRTC_CONTACT, Act.SAVE]),
        (register_facts(trusted="1", contacts="0"), [Act.SAVE]),
    ):  # fmt: skip
        msg = Msg()
        assert r.on_register(msg, facts) == 1
        assert actions(r, msg, host.REGISTER_VAR) == expected
        assert finds(r, msg, host.REGISTER_KEPT_VAR) == "1"
    for facts, code in ((register_facts(domain="elsewhere.example"), "403"),
                        (register_facts().replace(b"127.0.0.1".hex(), "ff", 1), "400")):  # fmt: skip
        msg = Msg()
        assert r.on_register(msg, facts) == 1
        assert actions(r, msg, host.REGISTER_VAR) == [Act.REPLY] and finds(r, msg, host.REPLY_CODE_VAR) == code
        assert finds(r, msg, host.REGISTER_KEPT_VAR) == ""


# -- kept answers ------------------------------------------------------------------------------


def _hex(text: str) -> str:
    return text.encode().hex() if text else "<null>"


_REQUEST_FIELDS = st.tuples(
    st.sampled_from(["INVITE", "MESSAGE", "OPTIONS", "REGISTER", "ACK"]),
    st.sampled_from(["udp", "tcp", "tls", "ws", "wss"]),
    st.sampled_from(["0", "1"]),  # NAT
    st.sampled_from(["0", "1"]),  # private SDP
    st.sampled_from(["0", "120"]),  # Content-Length
    st.sampled_from(["0", "1"]),  # Contact headers
    st.sampled_from(["127.0.0.9", "198.51.100.7", "203.0.113.5"]),
    st.sampled_from(["5060", "40000", "40001"]),
    st.sampled_from(["bob", "alice", "1000", "2000", "00442071234", ""]),
    st.sampled_from(["127.0.0.1", "other.example"]),
    st.sampled_from(["alice", "carol"]),
    st.sampled_from(["127.0.0.1", "other.example"]),
    st.sampled_from(["application/sdp", "text/plain", ""]),
)


def _rule(request: Request, default: Decision) -> Decision:
    """A rule that reads many facts, each changing what the kept part of the answer holds."""
    if request.ruri_user == "1000":
        return to_user("alice")
    if request.ruri_user == "2000":
        return to_uri("sip:ivr@192.0.2.5")
    if request.caller is Kind.BROWSER:
        default = default.with_header("X-Caller", request.from_user).with_rtpengine("record-call=yes")
    if request.source_port == 40001:
        default = default.with_media(MediaProxy.ALWAYS)
    return default


def _effects(r: Router, msg: Msg, names: Any) -> Dict[str, Optional[str]]:
    """What the cfg finds in ``names`` (those a fresh router wrote; older ones the cfg does not read)."""
    return {**{name: finds(r, msg, name) for name in names}, "dst_uri": msg.dst_uri}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_REQUEST_FIELDS, min_size=1, max_size=30), st.sampled_from([None, "gateway.local"]))
def test_a_kept_answer_to_a_request_is_the_answer_afresh(requests: List[Tuple[str, ...]], realm: Optional[str]) -> None:
    """The router keeps what it makes of a request's head (host.Head: where it came from, its domains, the
    digest check) and what a decision makes of the request by all they read (host.Outcome), and plans by
    theirs: a router that has seen other requests answers each exactly as one made for it alone, after
    the digest check too."""
    config = Settings(trusted_sources=frozenset({"203.0.113.5"}), sip_destination="sip:198.51.100.50",
                      auth_realm=realm)  # fmt: skip
    kept = Router.fixed(config, lambda text: None, route=_rule)
    for (method, proto, nat, private, length, contacts, src, port, user, domain, caller, from_domain,
         content) in requests:  # fmt: skip
        facts = host.request_facts(method, proto, nat, private, length, contacts, src, port, _hex(user),
                                   _hex(domain), _hex(caller), _hex(from_domain), _hex(user), _hex(domain),
                                   _hex(content))  # fmt: skip
        fresh = Router.fixed(config, lambda text: None, route=_rule)
        one, other = Msg(), Msg()
        assert kept.on_request(one, facts) == fresh.on_request(other, facts)
        assert _effects(kept, one, other.sets) == _effects(fresh, other, other.sets), facts
        if Act.PROXY_AUTH in (finds(fresh, other, host.REQUEST_VAR) or "").split(","):
            one, other = Msg(), Msg()
            assert kept.on_authorized(one) == fresh.on_authorized(other) == 1, "never asked"
            assert _effects(kept, one, other.sets) == _effects(fresh, other, other.sets), facts


def test_a_decision_made_anew_for_each_request_gets_its_own_answer_where_a_gone_one_had_its_id() -> None:
    """The router finds a decision's answer by the decision's identity first (Router._route): a rule that
    makes a new decision for each request, equal to one before or not, gets its own decision's answer even
    where a decision gone before had its id (CPython reuses the memory of the one just dropped)."""
    trunks = {f"t{i}": f"sip:198.51.100.{i + 1}:5060" for i in range(7)}
    config = Settings(trusted_sources=frozenset({"203.0.113.5"}), tables=Tables(trunks))

    def rule(request: Request, default: Decision) -> Decision:
        number = int(request.ruri_user) if request.ruri_user.isdigit() else 0  # (Router.fixed tries "bob")
        return Decision("trunk", trunk=f"t{number % 7}")  # no constructor: never shared

    r = Router.fixed(config, lambda text: None, route=rule)
    for n in range(100):
        facts = host.request_facts("MESSAGE", "udp", "0", "0", "0", "1", "203.0.113.5", "5060", _hex(str(n)),
                                   _hex("127.0.0.1"), _hex("alice"), _hex("127.0.0.1"), _hex(str(n)),
                                   _hex("127.0.0.1"), _hex(""))  # fmt: skip
        msg = Msg()
        assert r.on_request(msg, facts) == 1
        assert msg.dst_uri == trunks[f"t{n % 7}"], n


_REPLY_FIELDS = st.tuples(
    st.sampled_from(calls()), st.sampled_from([100, 180, 183, 200, 486]), st.booleans(),
    st.sampled_from(["udp", "wss"]), st.sampled_from(["0", "1"]),
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_REPLY_FIELDS, min_size=1, max_size=30))
def test_a_kept_answer_to_a_reply_is_the_answer_afresh(replies: List[Tuple[Any, ...]]) -> None:
    kept = router()
    for (caller, early, private, registration), status, body, proto, contacts in replies:
        facts = reply_facts(status, branched(caller, early, private, registration), body, proto, contacts)
        fresh = router()
        one, other = Msg(), Msg()
        assert kept.on_reply(one, facts) == fresh.on_reply(other, facts)
        assert _effects(kept, one, other.sets) == _effects(fresh, other, other.sets), facts


def _cfg_reads(r: Router, msg: Msg) -> Dict[str, Optional[str]]:
    """What the cfg reads when it takes the reply answer the worker holds again itself (route[gw_python_reply]):
    the actions, the record after the reply, the flags of its rtpengine call."""
    acts = (finds(r, msg, host.REPLY_VAR) or "").split(",")
    names = {host.REPLY_VAR, *([host.REPLY_RECORD_VAR] if Act.NEW_RECORD in acts else [])}
    names |= {host.MEDIA_FLAGS_VARS[step] for step in (Step.OFFER, Step.ANSWER, Step.DELETE) if step.value in acts}
    return {name: finds(r, msg, name) for name in names}


def _answered(call: Tuple[Party, bool, bool, Registration]) -> str:
    """The call record after the call's 200 (with an SDP): what its in-dialog requests bring."""
    record = branched(*call)
    r, msg = router(), Msg()
    r.on_reply(msg, reply_facts(200, record, body=True))
    return finds(r, msg, host.REPLY_RECORD_VAR) or record


_STEPS = st.one_of(
    st.tuples(st.just("reply"), _REPLY_FIELDS),
    st.tuples(st.just("in-dialog"), st.tuples(st.sampled_from(calls()), st.sampled_from(["INVITE", "ACK", "BYE"]),
                                              st.booleans(), st.sampled_from(["upstream", "downstream"]))),
    st.tuples(st.just("failure"), st.sampled_from(calls())),
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_STEPS, min_size=2, max_size=30))
def test_the_cfg_takes_a_reply_answer_again_only_while_what_it_reads_holds(steps: List[Tuple[str, Any]]) -> None:
    """A reply answer the router says the cfg may take again itself ($var(gw_reply_kept) "1") is a reply's
    with a body, not over a WebSocket; while the flag holds, after any other answer, every $var the cfg then
    reads holds what that answer left (an answer that changes one clears the flag)."""
    r = router()
    reads: Optional[Dict[str, Optional[str]]] = None
    for kind, fields in steps:
        msg = Msg()
        if kind == "reply":
            call, status, body, proto, contacts = fields
            assert r.on_reply(msg, reply_facts(status, branched(*call), body, proto, contacts)) == 1
            if finds(r, msg, host.REPLY_KEPT_VAR) == "1":
                assert body and proto != "wss"
                reads = _cfg_reads(r, msg)
        elif kind == "in-dialog":
            call, method, body, direction = fields
            content = b"application/sdp".hex() if body else "<null>"
            facts = SEP.join((method, "udp", "0", "1", "120" if body else "0", direction, _answered(call), content))
            assert r.on_in_dialog(msg, facts) == 1
        else:
            assert r.on_failure(msg, SEP.join((branched(*fields), "480", "0", *["<null>"] * 4))) == 1
        if finds(r, msg, host.REPLY_KEPT_VAR) == "1":
            assert _cfg_reads(r, msg) == reads, (kind, fields)


_LENGTHS = st.sampled_from(["0", "1", "120", "231", "<null>"])
_SOURCES = st.tuples(st.sampled_from(["198.51.100.9", "203.0.113.5", "::1"]), st.sampled_from(["5060", "40001"]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(calls()), st.sampled_from([100, 180, 183, 200, 486]), st.booleans(),
       st.sampled_from(["udp", "tcp", "ws", "wss"]), _LENGTHS, _SOURCES)  # fmt: skip
def test_a_replys_key_holds_all_its_decision_reads(
    call: Tuple[Party, bool, bool, Registration], status: int, body: bool, proto: str, length: str,
    source: Tuple[str, str],
) -> None:  # fmt: skip
    """Replies are kept by host.reply_key, which leaves out what their decision does not read (the
    Content-Length but whether it is 0, the source of a SIP peer): decided from the whole facts or
    from the key, the answer is the same."""
    caller, early, private, registration = call
    fields = reply_facts(status, branched(caller, early, private, registration), body, proto).split(SEP)
    fields[3], (fields[6], fields[7]) = length, source
    facts = SEP.join(fields)
    r = router()
    assert r._reply(r.rules, host.reply_key(facts)) == r._reply(r.rules, facts)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["BYE", "INVITE", "UPDATE", "ACK"]), st.sampled_from(["udp", "wss"]), _LENGTHS,
       st.sampled_from(["upstream", "downstream"]), st.sampled_from([CALLERS[0], CALLERS[2]]),
       st.sampled_from(list(Registration)))  # fmt: skip
def test_an_in_dialog_requests_key_holds_all_its_decision_reads(
    method: str, proto: str, length: str, direction: str, caller: Party, registration: Registration
) -> None:
    r = router()
    plan = core.plan_branch(CallRecord(caller, True, False), 0, registration, r.rules.settings.profiles)
    body = b"application/sdp".hex()
    facts = SEP.join((method, proto, "0", "1", length, direction, str(plan.record.with_answer(0)), body))
    assert r._in_dialog(r.rules, host.in_dialog_key(facts)) == r._in_dialog(r.rules, facts)


def test_kept_answers_go_with_the_rules_they_were_made_by(tmp_path: pathlib.Path) -> None:
    """A saved gateway.ini with other profile flags: the next reply is answered by the new flags."""
    ini = tmp_path / "gateway.ini"
    ini.write_text("[gateway]\ndomains = 127.0.0.1\n")
    r = Router.from_files(lambda text: None, str(ini), None)
    record = branched(CALLERS[1], True, False, Registration.PLAIN_SIP)
    msg = Msg()
    r.on_reply(msg, reply_facts(200, record, body=True))
    assert "record-call=yes" not in str(finds(r, msg, host.MEDIA_FLAGS_VARS[Step.ANSWER]))
    ini.write_text("[gateway]\ndomains = 127.0.0.1\n[profiles]\nsip->sip answer = RTP/AVP ICE=remove DTLS=off "
                   "rtcp-mux-demux replace-origin record-call=yes\n")  # fmt: skip
    os.utime(ini, (time.time() + 5, time.time() + 5))
    r.watcher.next_check = 0.0  # the watcher looks at most once a second
    msg = Msg()
    r.on_reply(msg, reply_facts(200, record, body=True))
    assert "record-call=yes" in str(finds(r, msg, host.MEDIA_FLAGS_VARS[Step.ANSWER]))


def test_new_rules_make_the_cfg_forget_a_registers_kept_answer(tmp_path: pathlib.Path) -> None:
    """The first message a worker's router answers under new rules clears the REGISTER facts the cfg keeps an
    answer by (route[gw_register]): its next REGISTER asks again, within the same second too."""
    ini = tmp_path / "gateway.ini"
    ini.write_text("[gateway]\ndomains = 127.0.0.1\n")
    r = Router.from_files(lambda text: None, str(ini), None)
    msg = Msg()
    r.on_register(msg, register_facts())
    assert finds(r, msg, host.REGISTER_KEPT_VAR) == "1"
    ini.write_text("[gateway]\ndomains = 127.0.0.1\nauth_realm = gw.example\n")
    os.utime(ini, (time.time() + 5, time.time() + 5))
    r.watcher.next_check = 0.0  # the watcher looks at most once a second
    msg = Msg()
    r.on_reply(msg, reply_facts(200, str(CallRecord(CALLERS[2], True, False))))
    assert msg.sets[host.REGISTER_KEPT_VAR] == ""
    msg = Msg()
    r.on_register(msg, register_facts())
    assert actions(r, msg, host.REGISTER_VAR) == [Act.WWW_AUTH, Act.SAVE]  # the new rules' answer


def test_new_rules_make_the_cfg_forget_a_replys_kept_answer(tmp_path: pathlib.Path) -> None:
    """As a REGISTER's: the first message a worker's router answers under new rules (here a REGISTER) clears
    the flag by which the cfg takes a reply's answer again (route[gw_python_reply]): the next reply asks."""
    ini = tmp_path / "gateway.ini"
    ini.write_text("[gateway]\ndomains = 127.0.0.1\n")
    r = Router.from_files(lambda text: None, str(ini), None)
    msg = Msg()
    r.on_reply(msg, reply_facts(200, branched(CALLERS[1], True, False, Registration.PLAIN_SIP), body=True))
    assert finds(r, msg, host.REPLY_KEPT_VAR) == "1"
    ini.write_text("[gateway]\ndomains = 127.0.0.1\n[profiles]\nsip->sip answer = RTP/AVP ICE=remove DTLS=off "
                   "rtcp-mux-demux replace-origin record-call=yes\n")  # fmt: skip
    os.utime(ini, (time.time() + 5, time.time() + 5))
    r.watcher.next_check = 0.0  # the watcher looks at most once a second
    msg = Msg()
    r.on_register(msg, register_facts())
    assert msg.sets[host.REPLY_KEPT_VAR] == ""


def test_a_rule_that_answers_no_decision_for_some_requests_gets_the_reason_logged_each_time() -> None:
    """A rule that passed its sample call but answers something other than a Decision for some request gets
    check_decision's reason in the log, every time (the router keeps only decisions it found sound)."""
    logged: List[str] = []

    def rule(request: Request, default: Decision) -> Decision:
        return ["not", "a", "decision"] if request.ruri_user == "carol" else default  # type: ignore[return-value]

    r = Router.fixed(Settings(trusted_sources=frozenset({"203.0.113.5"})), logged.append, route=rule)
    facts = host.request_facts("INVITE", "udp", "0", "0", "0", "1", "203.0.113.5", "5060", _hex("carol"),
                               _hex("127.0.0.1"), _hex("alice"), _hex("127.0.0.1"), _hex("carol"), _hex("127.0.0.1"),
                               "<null>")  # fmt: skip
    assert [r.on_request(Msg(), facts) for _ in range(2)] == [host.FAILED, host.FAILED]
    assert len(logged) == 2 and all("not a Decision" in line for line in logged), logged
    # as in OpenSIPS: the rule is not asked again (one that keeps state would see the call twice)
    at = f"(returned at {__file__}:{rule.__code__.co_firstlineno + 1} in rule)"
    assert not any(at in line for line in logged), logged
    r.explain_refusals = True  # as the fake host (tests, the tracer): the line that returned it
    assert r.on_request(Msg(), facts) == host.FAILED and at in logged[-1], logged
