"""The adapter's protocol with the cfg: what each code asks of it, for every kind of call.

The cfg (opensips.cfg) acts on the bits the router returns; some of what it does
is only right under the core's rules, which these tests hold the router to.
"""

from __future__ import annotations

import itertools
import pathlib
import re
from typing import Dict, List, Optional, Tuple

import pytest

from gateway import core, host
from gateway.host import SEP, Router
from gateway.model import Branch, CallRecord, Do, Leg, Media, Party, Registration, Step, Verdict
from gateway.profiles import Profiles
from gateway.settings import Settings

STAT_MASK = sum(host.STAT_BITS.values())


class Msg:
    """The host's msg, for routes that need no reads: keeps what the router sets."""

    Type = "SIP_REQUEST"
    src_address = ("127.0.0.1", 5060)

    def __init__(self) -> None:
        self.sets: Dict[str, str] = {}
        self.dst_uri: Optional[str] = None

    def getHeader(self, name: str) -> Optional[str]:  # noqa: N802
        return None

    def call_function(self, name: str, *args: Optional[str]) -> int:
        raise AssertionError(f"call_function({name!r}) on a path the cfg serves")

    def get_pseudoVar(self, fmt: str) -> Optional[str]:  # noqa: N802
        raise AssertionError(f"get_pseudoVar({fmt!r}): the facts come in the argument")

    def set_pseudoVar(self, name: str, value: str) -> None:  # noqa: N802
        self.sets[name] = value

    def set_dst_uri(self, uri: str) -> None:
        self.dst_uri = uri


def finds(router: Router, msg: Msg, name: str) -> Optional[str]:
    """What the cfg finds in ``name`` after the route: written now, or held in the worker from before."""
    return msg.sets.get(name, router.held.get(name))


CALLERS = [Party(Leg.WEB, True, "wss:198.51.100.7:4443"), Party(Leg.SIP, True), Party(Leg.SIP, False)]
BFLAGS = {Registration.WEBRTC: "WEBRTC", Registration.NATED_SIP: "NATED", Registration.PLAIN_SIP: "<null>"}


def branches() -> List[Tuple[Party, bool, bool, Registration]]:
    return list(itertools.product(CALLERS, (True, False), (True, False), Registration))


@pytest.mark.parametrize(("caller", "early", "private", "registration"), branches())
def test_a_branch_arms_the_python_reply_route_or_the_native_count_of_a_plain_sip_call(
    caller: Party, early: bool, private: bool, registration: Registration
) -> None:
    record = CallRecord(caller, early, private)
    router = Router(Settings(), lambda text: None)
    msg = Msg()
    code = router.on_branch(msg, SEP.join(("0", BFLAGS[registration], str(record))))
    assert code > 0 and code & Do.VERDICT_MASK == 1
    stored = CallRecord.parse(msg.sets[host.DIALOG_RECORD])
    branch = stored.branch(0)
    assert branch is not None
    if branch.media_proxy:
        assert code & Do.ARM_REPLY and code & Do.TRACK_DIALOG and not code & STAT_MASK
    else:
        # onreply_route[gw_answered_sip_to_sip] counts this call without Python: it must be one.
        assert (caller.leg, registration.leg) == (Leg.SIP, Leg.SIP)
        assert code & STAT_MASK == Do.STAT_SIP_TO_SIP and not code & (Do.ARM_REPLY | Do.TRACK_DIALOG)
        assert core.answered_call_stats(stored, 0) == ("calls_sip_to_sip",)
    assert bool(code & Do.RTP_OFFER) == (branch.media_proxy and early)
    if registration is Registration.PLAIN_SIP:
        # Do.PLAIN_CONTACT lets the cfg fork such a branch without asking: only when this is what it would say.
        assert core.plain_contact_needs_nothing(caller, private) == (not branch.media_proxy)


@pytest.mark.parametrize(("caller", "early", "private", "registration"), branches())
def test_the_replies_the_cfg_keeps_from_the_router_need_nothing(
    caller: Party, early: bool, private: bool, registration: Registration
) -> None:
    """onreply_route[gw_reply] keeps a 100 without a body from the router, and gw_reply_quiet
    (Do.QUIET_REPLIES) every reply without a body but a 2xx: the router must say nothing to them."""
    router = Router(Settings(), lambda text: None)
    branch = Msg()
    code = router.on_branch(branch, SEP.join(("0", BFLAGS[registration], str(CallRecord(caller, early, private)))))
    record = branch.sets[host.DIALOG_RECORD]
    quiet = (100, 101, 180, 183, 199, 300, 302, 404, 486, 500, 603) if code & Do.QUIET_REPLIES else (100,)
    assert not code & Do.QUIET_REPLIES or code & Do.ARM_REPLY
    for status, proto, contacts in itertools.product(quiet, ("udp", "tcp", "wss"), ("0", "1")):
        msg = Msg()
        facts = SEP.join((str(status), proto, "0", "0", "INVITE", contacts, "198.51.100.9", "5060", "<null>", record,
                          "<null>"))  # fmt: skip
        assert router.on_reply(msg, facts) == 1 and msg.sets == {}, (status, proto, contacts)
    stored = CallRecord.parse(record).branch(0)
    if stored is not None and stored.media_proxy:  # its 2xx with an SDP is work: rtpengine's answer (or offer)
        answered = SEP.join(("200", "udp", "0", "1", "INVITE", "1", "198.51.100.9", "5060", "<null>", record,
                             b"application/sdp".hex()))  # fmt: skip
        assert router.on_reply(Msg(), answered) & (Do.RTP_ANSWER | Do.RTP_OFFER)


@pytest.mark.parametrize(("caller", "early", "private", "registration"), branches())
def test_a_dialog_whose_acks_the_cfg_relays_itself_needs_nothing_for_them(
    caller: Party, early: bool, private: bool, registration: Registration
) -> None:
    """Do.QUIET_ACK (at the first 2xx): route[gw_in_dialog] relays an ACK without a body then."""
    router = Router(Settings(), lambda text: None)
    branch = Msg()
    router.on_branch(branch, SEP.join(("0", BFLAGS[registration], str(CallRecord(caller, early, private)))))
    answer = Msg()
    facts = SEP.join(("200", "udp", "0", "1", "INVITE", "1", "198.51.100.9", "5060", "<null>",
                      branch.sets[host.DIALOG_RECORD], b"application/sdp".hex()))  # fmt: skip
    code = router.on_reply(answer, facts)
    answered = CallRecord.parse(answer.sets[host.DIALOG_RECORD])
    web = Leg.WEB in (caller.leg, core.party_registered(registration).leg)
    assert bool(code & Do.QUIET_ACK) == (not web)
    if code & Do.QUIET_ACK:
        for proto, nat, contacts in itertools.product(("udp", "tcp", "tls", "ws", "wss"), ("0", "1"), ("0", "1")):
            msg = Msg()
            ack = SEP.join(("ACK", proto, nat, contacts, "0", "downstream", str(answered), "<null>"))
            assert router.on_in_dialog(msg, ack) == Verdict.RELAY and msg.sets == {} and msg.dst_uri is None
    # an ACK with a body (the answer to a late offer) still gets its sender's flags and fixes
    late = SEP.join(("ACK", "udp", "1", "1", "1", "downstream", str(answered), b"application/sdp".hex()))
    assert router.on_in_dialog(Msg(), late) & (Do.SRC_NAT | Do.FORCE_RPORT | Do.FIX_CONTACT)


@pytest.mark.parametrize(("caller", "early", "private"), list(itertools.product(CALLERS, (True, False), (True, False))))
def test_a_plain_contacts_branch_planned_with_the_request_is_what_on_branch_answers(
    caller: Party, early: bool, private: bool
) -> None:
    """Do.PLAIN_CONTACT: branch_route[gw_branch] takes $var(gw_plain_do) as on_branch's code for a plain
    contact, appends ";b<index>=" $var(gw_plain_branch) to the record, offers with $var(gw_plain_offer)
    and the index; without the media proxy it counts the answer and the branch stays off the record."""
    router = Router(Settings(), lambda text: None)
    start = CallRecord(caller, early, private)
    plan = dict(router._plain_plan(start))
    code = int(plan[host.PLAIN_DO_VAR])
    for index, record in ((0, start), (1, start.with_branch(0, Branch(Party(Leg.WEB, True), Media.OPEN)))):
        msg = Msg()
        assert router.on_branch(msg, SEP.join((str(index), "<null>", str(record)))) == code
        if code & Do.STAT_SIP_TO_SIP:
            assert not core.needs_media_proxy(caller, core.party_registered(Registration.PLAIN_SIP), private)
            continue
        assert msg.sets[host.DIALOG_RECORD] == f"{record};b{index}={plan[host.PLAIN_BRANCH_VAR]}"
        offer = host.MEDIA_FLAGS_VARS[Step.OFFER]
        assert bool(code & Do.RTP_OFFER) == (offer in msg.sets) == (host.PLAIN_OFFER_VAR in plan) == early
        if early:
            assert msg.sets[offer] == f"{plan[host.PLAIN_OFFER_VAR]}{index}"


def answered(router: Router, caller: Party, early: bool, private: bool, registration: Registration) -> Tuple[int, str]:
    """The code of the first 2xx (with an SDP) of a call to a contact of this kind, and the record it stores."""
    branch = Msg()
    router.on_branch(branch, SEP.join(("0", BFLAGS[registration], str(CallRecord(caller, early, private)))))
    answer = Msg()
    facts = SEP.join(("200", "udp", "0", "1", "INVITE", "1", "198.51.100.9", "5060", "<null>",
                      branch.sets[host.DIALOG_RECORD], b"application/sdp".hex()))  # fmt: skip
    return router.on_reply(answer, facts), answer.sets[host.DIALOG_RECORD]


@pytest.mark.parametrize(("caller", "early", "private", "registration"), branches())
def test_a_dialog_whose_byes_the_cfg_serves_itself_gets_just_that_from_the_router(
    caller: Party, early: bool, private: bool, registration: Registration
) -> None:
    """Do.QUIET_BYE (at the first 2xx): route[gw_in_dialog] serves a BYE from a SIP peer itself then: for
    one behind NAT setflag("SRC_NAT") and force_rport(), then rtpengine_delete() with no flags, relay."""
    router = Router(Settings(), lambda text: None)
    code, record = answered(router, caller, early, private, registration)
    callee = CallRecord.parse(record).callee_branch
    assert callee is not None
    quiet = Leg.WEB not in (caller.leg, callee.callee.leg) and callee.media is Media.OPEN
    assert bool(code & Do.QUIET_BYE) == quiet
    assert not code & Do.QUIET_BYE or code & Do.QUIET_ACK  # the cfg reads it only beside QUIET_ACK
    if not quiet:
        return
    for proto, nat, contacts, body, direction in itertools.product(
        ("udp", "tcp", "tls"), ("0", "1"), ("0", "1"), ("0", "1"), ("downstream", "upstream")
    ):
        msg = Msg()
        bye = SEP.join(("BYE", proto, nat, contacts, body, direction, record, b"application/sdp".hex()))
        behind_nat = Do.SRC_NAT | Do.FORCE_RPORT if nat == "1" else 0
        assert router.on_in_dialog(msg, bye) == Verdict.RELAY | Do.RTP_DELETE | behind_nat
        delete = host.MEDIA_FLAGS_VARS[Step.DELETE]
        assert msg.dst_uri is None and set(msg.sets) <= {delete} and finds(router, msg, delete) == ""


def test_a_delete_with_flags_keeps_the_byes_with_the_router() -> None:
    profiles = Profiles({(Leg.SIP, Leg.SIP, Step.DELETE): "delete-delay=0"})
    router = Router(Settings(profiles=profiles), lambda text: None)
    code, record = answered(router, Party(Leg.SIP, True), True, False, Registration.PLAIN_SIP)
    assert code & Do.QUIET_ACK and not code & Do.QUIET_BYE
    msg = Msg()
    bye = SEP.join(("BYE", "udp", "1", "0", "0", "downstream", record, "<null>"))
    assert router.on_in_dialog(msg, bye) == Verdict.RELAY | Do.RTP_DELETE | Do.SRC_NAT | Do.FORCE_RPORT
    assert msg.sets == {host.MEDIA_FLAGS_VARS[Step.DELETE]: "delete-delay=0"}


def test_a_var_the_worker_holds_already_is_not_written_again() -> None:
    """$var values outlive the message in a worker (opensips.cfg): the router writes a HELD_VARS value
    only when it changes, and the cfg finds it there."""
    router = Router(Settings(auth_realm="gw.example"), lambda text: None)
    invite, web_invite = request_facts("INVITE"), request_facts("INVITE", proto="wss")
    first, again, other, back = Msg(), Msg(), Msg(), Msg()
    router.on_request(first, invite)
    assert {host.RECORD_VAR, host.REALM_VAR, host.PLAIN_DO_VAR} <= set(first.sets) <= host.HELD_VARS
    router.on_request(again, invite)
    assert again.sets == {} and all(finds(router, again, name) == value for name, value in first.sets.items())
    router.on_request(other, web_invite)  # another record and plan; the same realm
    assert host.REALM_VAR not in other.sets and other.sets[host.RECORD_VAR] != first.sets[host.RECORD_VAR]
    router.on_request(back, invite)
    assert back.sets == {name: value for name, value in first.sets.items() if other.sets.get(name, value) != value}
    assert host.RECORD_VAR in back.sets
    assert router.held == {**first.sets, **other.sets, **back.sets}


def test_a_write_that_fails_is_not_taken_for_held() -> None:
    class Failing(Msg):
        def set_pseudoVar(self, name: str, value: str) -> None:  # noqa: N802
            raise RuntimeError("no memory")

    router = Router(Settings(), lambda text: None)
    assert router.on_request(Failing(), request_facts("INVITE")) == Verdict.FAILED
    assert router.held == {}
    msg = Msg()
    router.on_request(msg, request_facts("INVITE"))
    assert host.RECORD_VAR in msg.sets


def test_the_cfg_only_reads_the_vars_the_router_holds() -> None:
    cfg = (host_root() / "opensips" / "opensips.cfg").read_text()
    for name in host.HELD_VARS:
        assert name in cfg and not re.search(re.escape(name) + r"\s*=[^=~]", cfg), name


def host_root() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parent.parent


def request_facts(method: str, proto: str = "udp", nat: str = "0", user: str = "3") -> str:
    local = b"127.0.0.1".hex()
    return SEP.join(
        (method, proto, nat, "0", "0", "1", "127.0.0.9", "5060", user, local, local, local, b"application/sdp".hex())
    )


def test_our_users_requests_ask_the_cfg_for_digest_auth_in_the_realm() -> None:
    router = Router(Settings(auth_realm="gw.example"), lambda text: None)
    for method, bit in (("REGISTER", Do.AUTH_WWW), ("INVITE", Do.AUTH_PROXY), ("MESSAGE", Do.AUTH_PROXY)):
        msg = Msg()
        code = router.on_request(msg, request_facts(method))
        assert code & (Do.AUTH_WWW | Do.AUTH_PROXY) == bit
        assert finds(router, msg, host.REALM_VAR) == "gw.example"
    trusted = Router(Settings(auth_realm="gw.example", trusted_sources=frozenset({"127.0.0.9"})), lambda text: None)
    assert not trusted.on_request(Msg(), request_facts("INVITE")) & (Do.AUTH_WWW | Do.AUTH_PROXY)


METHODS = ("INVITE", "ACK", "BYE", "UPDATE", "PRACK", "INFO", "MESSAGE", "NOTIFY", "OPTIONS", "REFER")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("proto", ["udp", "tcp", "tls"])
@pytest.mark.parametrize("contacts", ["0", "1"])
def test_an_untracked_dialogs_request_from_a_sip_peer_not_behind_nat_needs_nothing(
    method: str, proto: str, contacts: str
) -> None:
    """route[gw_in_dialog] relays such a request without asking on_in_dialog: it must be what the router says."""
    router = Router(Settings(), lambda text: None)
    # a dialog without the media proxy: plain SIP to plain SIP, answered (or not: no record at all)
    record = CallRecord(Party(Leg.SIP, False), True, False).with_branch(0, branch_of(Registration.PLAIN_SIP))
    for text in (str(record), str(record.with_answer(0)), "<null>"):
        for direction in ("downstream", "upstream"):
            msg = Msg()
            facts = SEP.join((method, proto, "0", contacts, "200", direction, text, b"application/sdp".hex()))
            assert router.on_in_dialog(msg, facts) == Verdict.RELAY, (method, text, direction)
            assert msg.sets == {} and msg.dst_uri is None


def branch_of(registration: Registration) -> Branch:
    from gateway.model import Branch

    return Branch(core.party_registered(registration), Media.NONE)


def test_in_dialog_requests_of_a_browser_get_their_flags_and_media() -> None:
    router = Router(Settings(), lambda text: None)
    record = CallRecord(Party(Leg.WEB, True, "wss:198.51.100.7:4443"), True, False)
    plan = core.plan_branch(record, 0, Registration.PLAIN_SIP, router.profiles)
    answered = plan.record.with_answer(0)
    msg = Msg()
    facts = SEP.join(("BYE", "wss", "0", "0", "0", "downstream", str(answered), "<null>"))
    code = router.on_in_dialog(msg, facts)
    assert code & Do.VERDICT_MASK == Verdict.RELAY
    assert code & Do.SRC_WS and code & Do.SRC_NAT and code & Do.RTP_DELETE
    upstream = SEP.join(("BYE", "udp", "0", "0", "0", "upstream", str(answered), "<null>"))
    msg = Msg()
    assert router.on_in_dialog(msg, upstream) & Do.RTP_DELETE
    assert msg.dst_uri == "sip:198.51.100.7:4443;transport=wss"  # back over the browser's own connection


def test_a_local_reply_leaves_its_code_and_reason_for_the_cfg() -> None:
    router = Router(Settings(), lambda text: None)
    msg = Msg()
    foreign = SEP.join(("INVITE", "udp", "0", "0", "0", "1", "203.0.113.9", "5060", "3",
                        b"example.org".hex(), b"example.org".hex(), b"example.net".hex(), "<null>"))  # fmt: skip
    assert router.on_request(msg, foreign) & Do.VERDICT_MASK == Verdict.REPLY
    assert (msg.sets[host.REPLY_CODE_VAR], msg.sets[host.REPLY_REASON_VAR]) == ("403", "Relaying Forbidden")


def test_missing_or_garbled_facts_fail_safe_and_are_logged() -> None:
    logged: List[str] = []
    router = Router(Settings(), logged.append)
    assert router.on_request(Msg()) == Verdict.FAILED  # python_exec without its argument
    assert router.on_request(Msg(), "INVITE\nudp\n0\n0\n0\n1\n127.0.0.9\n5060\n3\nzz") == Verdict.FAILED
    assert router.on_branch(Msg(), "") == Verdict.FAILED
    assert len(logged) == 3 and all("route failed" in line for line in logged)


def test_decisions_are_kept_up_to_a_bound() -> None:
    router = Router(Settings(), lambda text: None)
    for port in range(host.DECISIONS_KEPT + 10):
        flow = f"wss:198.51.100.7:{port}"
        record = CallRecord(Party(Leg.WEB, True, flow), True, False)
        router.on_branch(Msg(), SEP.join(("0", "NATED", str(record))))
    assert 0 < len(router._branches) <= host.DECISIONS_KEPT
