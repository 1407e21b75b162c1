"""The operator's rules: their values, gateway.ini's tables, and every fact a rule reads, through the fake host.

A rule that reads one fact of a request must see that fact, afresh, on every request: the
hypothesis test below builds, for each fact a rule can read, a rule that refuses requests with
one value of it, and sends requests that differ in that fact alone, in an order that would
expose an answer kept from an earlier request.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes.runtime import REPO, SHIPPED, Endpoint, Gateway
from fakes.sipmsg import SipMessage
from fakes.ua import Network
from gateway import core
from gateway.loader import load_rules
from gateway.policy import (
    Callee,
    Decision,
    Kind,
    MediaProxy,
    Pattern,
    Request,
    Tables,
    reply,
    to_trunk,
    to_uri,
    to_user,
)
from gateway.settings import Settings, parse
from tests.flowcheck import assert_clean

DOMAINS = frozenset({"127.0.0.1", "gw.example", "other.example"})


# -- the values ---------------------------------------------------------------------------


def test_a_header_that_would_inject_lines_is_refused() -> None:
    with pytest.raises(ValueError):
        to_user().with_header("X-Tenant", "acme\r\nVia: SIP/2.0/UDP evil")
    with pytest.raises(ValueError):
        to_user().with_header("X Tenant", "acme")
    with pytest.raises(ValueError):
        to_user().without_header("X:Y")
    assert to_user().with_header("X-Tenant", "acme").add_headers == (("X-Tenant", "acme"),)


@pytest.mark.parametrize("name", ["From", "to", "Call-ID", "CSeq", "Via", "v", "Max-Forwards", "Contact", "Route",
                                  "Record-Route", "Content-Length", "l", "Content-Type"])  # fmt: skip
def test_the_headers_that_make_a_request_are_neither_added_nor_removed(name: str) -> None:
    """A second From or Call-ID, a Via or Route taken away: no party could answer such a request."""
    with pytest.raises(ValueError, match=f"{name} is one of the headers that make the request"):
        to_user().with_header(name, "x")
    with pytest.raises(ValueError, match=f"{name} is one of the headers that make the request"):
        to_user().without_header(name)
    assert to_user().with_header("P-Asserted-Identity", "<sip:+4930123@gw>").without_header("Privacy").remove_headers


@pytest.mark.parametrize("bad", ["http://x", "sip:a b", "sip:a\r\nb", "tel:+4930", "sip:", "sip:@", "sip:;x",
                                 "sip:[::1", "sip:bob@h\r\nX-Injected: 1", "sip:bob@host:123456"])  # fmt: skip
def test_a_uri_a_rule_sends_to_is_a_sip_uri(bad: str) -> None:
    with pytest.raises(ValueError):
        to_uri(bad)


@pytest.mark.parametrize(
    "good",
    [
        "sip:ivr@10.0.0.5",
        "sips:bob@gw.example:5061;transport=tls",
        "sip:[2001:db8::1]:5060",
        "sip:+4930123@carrier.example;user=phone",
        "sip:10.0.0.5",
    ],
)
def test_a_sip_uri_a_rule_sends_to_is_taken(good: str) -> None:
    assert to_uri(good).uri == good


def test_a_header_name_may_not_end_in_a_line_break() -> None:
    """A token's regular expression anchored with $ let "X-A\n" and "Contact\n" through (a trial)."""
    for name in ("X-A\n", "Contact\n"):
        with pytest.raises(ValueError):
            to_user().with_header(name, "v")
        with pytest.raises(ValueError):
            to_user().without_header(name)


@pytest.mark.parametrize(
    "made",
    [
        lambda: to_user()._replace(add_headers=(("Via", "SIP/2.0/UDP 203.0.113.66;branch=z9hG4bKevil"),)),
        lambda: to_user()._replace(add_headers=(("X-A", "v\r\nFrom: <sip:ceo@127.0.0.1>;tag=x"),)),
        lambda: to_user()._replace(remove_headers=("Route",)),
        lambda: Decision("reply", code=200, reason="OK"),
        lambda: Decision("reply", code="403", reason="Forbidden"),  # type: ignore[arg-type]  # what a rule might do
        lambda: Decision("voicemail"),
        lambda: Decision("uri", uri="sip:bob@h\r\nX-Injected: 1"),
        lambda: Decision("uri"),
        lambda: Decision("user", user="bob@evil"),
        lambda: Decision("trunk"),
        lambda: to_user()._replace(failover=("backup",)),
        lambda: to_user()._replace(rtpengine=((None, "a,b"),)),
        lambda: to_user()._replace(media="always"),  # type: ignore[arg-type]
    ],
)
def test_a_decision_made_by_hand_is_held_to_the_constructors_checks(made: Callable[[], Decision]) -> None:
    """Decision is a public NamedTuple: Decision(...) and _replace skip the constructors, so the gateway checks
    every field of a rule's decision itself (a trial sent a third Via, a second From and a 200 this way)."""
    with pytest.raises(core.Refused):
        core.check_decision(made(), Settings())


@pytest.mark.parametrize("dtls", ["DTLS=no", "DTLS=disable", "DTLS=disabled", "dtls=Off"])
def test_every_spelling_of_dtls_off_is_refused_toward_a_browser(dtls: str) -> None:
    """rtpengine takes no, off, disable and disabled alike (a trial: DTLS=no left a browser without a fingerprint)."""
    with pytest.raises(core.Refused, match="turns DTLS off"):
        core.check_decision(to_user().with_rtpengine(dtls), Settings())


@pytest.mark.parametrize(("code", "reason"), [(200, "OK"), (100, "Trying"), (700, "x"), (403, ""), (403, "a\nb")])
def test_a_rule_replies_with_a_final_reply_only(code: int, reason: str) -> None:
    with pytest.raises(ValueError):
        reply(code, reason)


def test_flags_a_rule_adds_keep_what_the_record_can_carry() -> None:
    for bad in ("a,b", "x|y", "via-branch-param=br9", "a+b"):
        with pytest.raises(ValueError):
            to_user().with_rtpengine(bad)
    decision = to_user().with_rtpengine("record-call=yes").with_rtpengine("transcode-PCMA", toward=Kind.SIP)
    assert decision.extra_flags(Kind.SIP) == "record-call=yes transcode-PCMA"
    assert decision.extra_flags(Kind.BROWSER) == "record-call=yes"


def test_flags_that_would_break_a_browser_leg_are_refused() -> None:
    settings = Settings()
    core.check_decision(to_user().with_rtpengine("transcode-PCMA", toward=Kind.SIP), settings)
    with pytest.raises(ValueError, match="web-bound SDP must not have ICE=remove"):
        core.check_decision(to_user().with_rtpengine("ICE=remove"), settings)
    with pytest.raises(ValueError, match="DTLS") as refused:
        core.check_decision(to_user().with_rtpengine("DTLS=off RTP/AVP", toward=Kind.BROWSER), settings)
    # each problem once, with the rows it would break
    why = str(refused.value)
    assert why.startswith(
        "the rules answered 'to the registered contacts (rtpengine DTLS=off RTP/AVP toward browser)': "
        "rtpengine flags 'DTLS=off RTP/AVP' toward browser legs refused"
    ), why
    assert why.count("must not have DTLS=off") == 1 and why.count("must not have RTP/AVP") == 1, why
    assert "must not have DTLS=off (web->web offer, web->web reoffer, sip->web offer, sip->web reoffer)" in why
    with pytest.raises(core.Refused, match=r"^the rules answered 'to trunk nowhere': no trunk named 'nowhere'"):
        core.check_decision(to_trunk("nowhere"), settings)


@pytest.mark.parametrize(
    ("text", "user", "hit"),
    [("00", "0044123", True), ("00", "044", False), ("/^\\+1(900|976)/", "+1900555", True), ("+", "+49", True)],
)
def test_patterns_are_prefixes_or_regular_expressions(text: str, user: str, hit: bool) -> None:
    assert Pattern.parse(text).matches(user) is hit


def request(**changes: Any) -> Request:
    base = Request("INVITE", "bob", "127.0.0.1", "alice", "127.0.0.1", "bob", "127.0.0.1", "198.51.100.9", 5060,
                   "udp", Kind.SIP, False, True)  # fmt: skip
    return base._replace(**changes)


def test_the_tables_block_route_and_proxy_in_that_order() -> None:
    tables = Tables(
        {"intl": "sip:198.51.100.20", "main": "sip:198.51.100.10"},
        ((Pattern.parse("00"), ("intl", "main")),),
        (Pattern.parse("0900"),),
        frozenset({"carol"}),
    )
    assert tables.apply(request(ruri_user="0900123"), to_user(), may_relay=True) == reply(
        403, "Forbidden - Blocked Number"
    )
    assert tables.apply(request(ruri_user="0044123"), to_user(), may_relay=True) == to_trunk("intl").or_trunk("main")
    # a caller who may not relay (another domain's, not trusted) never reaches a trunk through the dial plan
    assert tables.apply(request(ruri_user="0044123"), to_user(), may_relay=False) == to_user()
    assert tables.apply(request(from_user="carol"), to_user(), may_relay=True).media is MediaProxy.ALWAYS
    assert tables.apply(request(ruri_user="carol"), to_user(), may_relay=True).media is MediaProxy.ALWAYS


#: Called numbers near the tables' patterns (a pattern's start, then anything), so that numbers that share
#: their start yet differ in what the tables say of them come often.
NUMBERS = st.builds(
    str.__add__,
    st.sampled_from(["", "0", "00", "09", "090", "0900", "+", "+1", "+190", "1976", "01", "carol"]),
    st.text(alphabet="0123456789+*#a\ufffd", max_size=6),
)


@given(numbers=st.lists(NUMBERS, min_size=1, max_size=30), may_relay=st.booleans())
def test_the_tables_kept_answers_are_those_of_fresh_tables_whatever_came_before(
    numbers: List[str], may_relay: bool
) -> None:
    """Tables keep what their patterns say of each called number (by the number, their complete input):
    numbers in any order, repeated or not, get what tables that never saw a number give."""

    def tables() -> Tables:
        return Tables(
            {"intl": "sip:198.51.100.20", "main": "sip:198.51.100.10"},
            (
                (Pattern.parse("00"), ("intl",)),
                (Pattern.parse("/^0[1-9][0-9]{2,}$/"), ("main", "intl")),
                (Pattern.parse("+"), ("intl",)),
            ),
            (Pattern.parse("0900"), Pattern.parse("/^\\+?1(900|976)/")),
            frozenset({"carol"}),
        )

    kept = tables()
    for number in numbers:
        fresh = tables().apply(request(ruri_user=number), to_user(), may_relay)
        assert kept.apply(request(ruri_user=number), to_user(), may_relay) == fresh


@given(
    header=st.sampled_from(["X-A", "X-B"]),
    value=st.sampled_from(["1", "2", ""]),
    media=st.sampled_from(list(MediaProxy)),
    flags=st.sampled_from(["record-call=yes", "loop-protect"]),
    toward=st.sampled_from([None, Kind.SIP, Kind.BROWSER]),
    steps=st.lists(st.integers(0, 4), max_size=6),
)
def test_a_change_of_a_decision_is_the_replaced_field_whatever_was_changed_before(
    header: str, value: str, media: MediaProxy, flags: str, toward: Optional[Kind], steps: List[int]
) -> None:
    """Decisions keep their changes by their complete inputs (the decision's identity, the change, its
    arguments): each is what ``_replace`` of that field gives, after any changes of any decisions before,
    of this decision or of an equal copy."""
    decision = to_user()
    for step in steps:
        if step == 0:
            changed, expected = (
                decision.with_header(header, value),
                decision._replace(add_headers=(*decision.add_headers, (header, value))),
            )
        elif step == 1:
            changed = decision.without_header(header)
            expected = decision._replace(remove_headers=(*decision.remove_headers, header))
        elif step == 2:
            changed, expected = decision.with_media(media), decision._replace(media=media)
        elif step == 3:
            changed = decision.with_rtpengine(flags, toward)
            expected = decision._replace(rtpengine=(*decision.rtpengine, (toward, flags)))
        else:
            changed, expected = decision.drop(), decision._replace(dropped=True)
        assert changed == expected and type(changed) is Decision
        decision = changed if step % 2 else tuple.__new__(Decision, tuple(changed))  # equal, another object


def test_a_change_is_of_the_decision_asked_even_where_one_gone_before_had_its_id() -> None:
    """Changes are kept by the decision's identity: a decision made after another is gone may get its id
    (CPython reuses the memory), and still gets its own change, not the gone one's."""
    for i in range(300):
        decision = Decision("trunk", trunk=f"t{i}")
        assert decision.with_media(MediaProxy.ALWAYS) == Decision("trunk", trunk=f"t{i}", media=MediaProxy.ALWAYS)
        del decision


INI = """
[gateway]
domains = 127.0.0.1 gw.example
auth_realm = gw.example
[trunks]
main = sip:198.51.100.10:5060
intl = sip:198.51.100.20:5060;transport=tcp
[dialplan]
00 = intl
/^0[1-9][0-9]{5,}$/ = main
[blocked]
prefixes = 0900 /^\\+1(900|976)/
[media]
always_proxy = carol
[policy]
headers = X-Account, P-Asserted-Identity
"""


def test_gateway_ini_holds_the_tables() -> None:
    found = parse(INI)
    assert found.trunk_uri("intl") == "sip:198.51.100.20:5060;transport=tcp"
    assert [(p.text, t) for p, t in found.tables.dialplan] == [("00", ("intl",)), ("/^0[1-9][0-9]{5,}$/", ("main",))]
    assert [p.text for p in found.tables.blocked] == ["0900", "/^\\+1(900|976)/"]
    assert found.tables.always_proxy == {"carol"} and found.tables.headers == ("X-Account", "P-Asserted-Identity")


@pytest.mark.parametrize(
    ("bad", "complaint"),
    [
        ("[dialplan]\n00 = nowhere\n", r"not in \[trunks\]"),
        ("[trunks]\nmain = http://x\n", "must be a sip: URI"),
        ("[blocked]\nprefixes = /(/\n", "bad regular expression"),
        ("[media]\nsometimes = x\n", "unknown setting"),
        ("[policy]\nheaders = X(Y)\n", "not header names"),
        ("[gateway]\nsip_destination = nowhere\n", "sip: URI or trunk names"),
        # a trial: these loaded, and the fake then sent calls to host ''
        *((f"[trunks]\ncarrier = {uri}\n", "must be a sip: URI with a host")
          for uri in ("sip:", "sip:@", "sip:;x", "sip:[::1", "sip:198.51.100.10:99999", "sip:198.51.100.10:0")),
        ("[gateway]\nsip_destination = sip:@\n", "must be a sip: URI with a host"),
        ("[trunks]\ncarrier = sip:198.51.100.10\n[dialplan]\n/^(?=00/ = carrier\n", "bad regular expression"),
        ("[trunks]\ncarrier = sip:198.51.100.10\n[dialplan]\n/^(?=00) = carrier\n", "a line is /regular expression/"),
    ],
)  # fmt: skip
def test_a_wrong_table_is_refused_with_the_reason(bad: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse(bad)


def test_a_dial_plan_expression_may_hold_equals_and_colons() -> None:
    """The INI parser cuts a line at its first "=": a lookahead's ``(?=`` was taken for the end of the key (a trial:
    "names trunk '00)/', not in [trunks]")."""
    found = parse("[trunks]\ncarrier = sip:198.51.100.10\nother = sip:198.51.100.11\n[dialplan]\n"
                  "/^(?=00)(?:00)?44/ = carrier other\n/^0[1-9]/ = other\n")  # fmt: skip
    (first, first_trunks), (second, _) = found.tables.dialplan
    assert first.text == "/^(?=00)(?:00)?44/" and first_trunks == ("carrier", "other")
    assert first.matches("0044201234") and not first.matches("44201234") and second.matches("0301234")


# -- through the fake host: every fact a rule reads -----------------------------------------

Source = Endpoint


def invite(
    method: str = "INVITE",
    ruri: str = "sip:bob@127.0.0.1",
    from_uri: str = "sip:alice@127.0.0.1",
    to_uri_: str = "sip:bob@127.0.0.1",
    contact: str = "sip:alice@198.51.100.9:5060",
    via: str = "198.51.100.9:5060",
    sdp: bool = True,
    headers: Tuple[Tuple[str, str], ...] = (),
    call_id: str = "CALL-ID",
) -> SipMessage:
    body = b"v=0\r\no=- 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    lines = [
        ("Via", f"SIP/2.0/UDP {via};branch=z9hG4bK{call_id};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<{from_uri}>;tag=f{call_id}"),
        ("To", f"<{to_uri_}>"),
        ("Call-ID", call_id),
        ("CSeq", f"1 {method}"),
        ("Contact", f"<{contact}>"),
        *headers,
    ]
    if sdp:
        lines.append(("Content-Type", "application/sdp"))
    lines.append(("Content-Length", str(len(body) if sdp else 0)))
    return SipMessage(f"{method} {ruri} SIP/2.0", lines, body if sdp else b"")


#: fact -> (how a request differs in it, a rule's test of it).  Each pair of values gives two requests
#: that differ in this fact alone.
FACTS: Dict[str, Tuple[Callable[[Any], Tuple[SipMessage, Source]], Callable[[Request], Any]]] = {}
SOURCE = Endpoint("udp", "198.51.100.9", 5060)
users = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789+*.-", min_size=1, max_size=12),
    st.sampled_from(["%23", "+4930%2A1", "%30900"]),  # escapes reach a rule undone ("#", "+4930*1", "0900")
)


def seen(name: str, value: Any) -> Any:
    """A fact's value as a rule sees it: a user's %-escapes undone (RFC 3261 19.1.4: users compare unescaped)."""
    return urllib.parse.unquote(value) if name.endswith("_user") else value


domains = st.sampled_from(sorted(DOMAINS))


def fact(name: str, values: Any, read: Callable[[Request], Any]) -> Callable[[Callable[[Any], Any]], Any]:
    def register(make: Callable[[Any], Tuple[SipMessage, Source]]) -> Any:
        FACTS[name] = (make, read)
        STRATEGIES[name] = values
        return make

    return register


STRATEGIES: Dict[str, Any] = {}


@fact("method", st.sampled_from(["INVITE", "MESSAGE", "OPTIONS", "SUBSCRIBE"]), lambda r: r.method)
def _method(value: str) -> Tuple[SipMessage, Source]:
    return invite(method=value, sdp=value == "INVITE"), SOURCE


@fact("ruri_user", users, lambda r: r.ruri_user)
def _ruri_user(value: str) -> Tuple[SipMessage, Source]:
    return invite(ruri=f"sip:{value}@127.0.0.1"), SOURCE


@fact("ruri_domain", domains, lambda r: r.ruri_domain)
def _ruri_domain(value: str) -> Tuple[SipMessage, Source]:
    return invite(ruri=f"sip:bob@{value}"), SOURCE


@fact("from_user", users, lambda r: r.from_user)
def _from_user(value: str) -> Tuple[SipMessage, Source]:
    return invite(from_uri=f"sip:{value}@127.0.0.1"), SOURCE


@fact("from_domain", domains, lambda r: r.from_domain)
def _from_domain(value: str) -> Tuple[SipMessage, Source]:
    return invite(from_uri=f"sip:alice@{value}"), SOURCE


@fact("to_user", users, lambda r: r.to_user)
def _to_user(value: str) -> Tuple[SipMessage, Source]:
    return invite(to_uri_=f"sip:{value}@127.0.0.1"), SOURCE


@fact("to_domain", domains, lambda r: r.to_domain)
def _to_domain(value: str) -> Tuple[SipMessage, Source]:
    return invite(to_uri_=f"sip:bob@{value}"), SOURCE


@fact("source_ip", st.sampled_from(["198.51.100.9", "198.51.100.10", "203.0.113.5"]), lambda r: r.source_ip)
def _source_ip(value: str) -> Tuple[SipMessage, Source]:
    return invite(via=f"{value}:5060", contact=f"sip:alice@{value}:5060"), Endpoint("udp", value, 5060)


@fact("source_port", st.integers(1024, 65535), lambda r: r.source_port)
def _source_port(value: int) -> Tuple[SipMessage, Source]:
    return invite(via=f"198.51.100.9:{value}", contact=f"sip:alice@198.51.100.9:{value}"), Endpoint(
        "udp", "198.51.100.9", value
    )


@fact("transport", st.sampled_from(["udp", "tcp", "tls", "ws", "wss"]), lambda r: r.transport)
def _transport(value: str) -> Tuple[SipMessage, Source]:
    return invite(), Endpoint(value, "198.51.100.9", 5060)


@fact("caller", st.sampled_from(list(Kind)), lambda r: r.caller)
def _caller(value: Kind) -> Tuple[SipMessage, Source]:
    return invite(), Endpoint("wss" if value is Kind.BROWSER else "udp", "198.51.100.9", 5060)


@fact("caller_behind_nat", st.booleans(), lambda r: r.caller_behind_nat)
def _behind_nat(value: bool) -> Tuple[SipMessage, Source]:
    return invite(contact="sip:alice@192.168.1.7:5060" if value else "sip:alice@198.51.100.9:5060"), SOURCE


@fact("has_sdp", st.booleans(), lambda r: r.has_sdp)
def _has_sdp(value: bool) -> Tuple[SipMessage, Source]:
    return invite(sdp=value), SOURCE


@fact("header", st.one_of(st.none(), st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", max_size=10)),
      lambda r: r.header("X-Account"))  # fmt: skip
def _header(value: Optional[str]) -> Tuple[SipMessage, Source]:
    return invite(headers=() if value is None else (("X-Account", value),)), SOURCE


_calls = itertools.count()


def outcome(gateway: Gateway, message: SipMessage, source: Source) -> List[int]:
    """The status codes the gateway answered this request with (a fresh Call-ID each time)."""
    call_id = f"p{next(_calls)}"
    message = SipMessage.parse(message.to_bytes().replace(b"CALL-ID", call_id.encode()))
    sent = gateway.receive(message.to_bytes(), source)
    return [m.status for _, m in sent if not m.is_request and m.call_id == call_id]


@pytest.mark.parametrize("name", sorted(FACTS))
def test_a_rule_that_reads_one_fact_answers_by_that_fact_on_every_request(name: str) -> None:
    make, read = FACTS[name]

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        pair=st.lists(STRATEGIES[name], min_size=2, max_size=2, unique_by=lambda value: seen(name, value)),
        order=st.permutations(range(4)),
    )
    def check(pair: List[Any], order: List[int]) -> None:
        chosen, other = pair

        def route(request: Request, default: Decision) -> Decision:
            return reply(403, "Refused By Rule") if read(request) == seen(name, chosen) else reply(480, "Not Chosen")

        gateway = Gateway(Settings(domains=DOMAINS, tables=Tables({}, headers=("X-Account",))), rules=(route, None))
        requests = [(chosen, 403), (other, 480), (chosen, 403), (other, 480)]
        for index in order:
            value, expected = requests[index]
            message, source = make(value)
            assert outcome(gateway, message, source) == [expected], (name, value)

    check()


def test_a_rule_sees_the_callees_kind_and_may_drop_branches_to_it() -> None:
    def callee(request: Request, who: Callee, decision: Decision) -> Decision:
        return decision.drop() if who.kind is Kind.BROWSER else decision

    gateway = Gateway(Settings(domains=frozenset({"127.0.0.1"})), rules=(None, callee))
    net = Network(gateway)
    carol, web, desk = net.phone("carol"), net.browser("gina"), net.phone("gina")
    net.registered(carol, web, desk)
    call = net.invite(carol, "gina")
    assert call.call_id in desk.pending_invites and call.call_id not in web.pending_invites
    net.reply(call, desk, 200)
    net.bye(call, "caller")
    assert_clean(gateway, net)


def test_a_rule_that_raises_costs_that_request_a_500_and_nothing_else() -> None:
    def route(request: Request, default: Decision) -> Decision:
        if request.ruri_user == "boom":
            raise RuntimeError("a bug in a rule")
        return default

    gateway = Gateway(Settings(domains=frozenset({"127.0.0.1"})), rules=(route, None), strict=False)
    net = Network(gateway)
    alice, bob = net.phone("alice"), net.phone("bob")
    net.registered(alice, bob)
    net.invite(alice, "boom")
    assert [m.status for m in alice.inbox if not m.is_request and m.cseq_method == "INVITE"] == [500]
    assert gateway.python_failures == 1
    (logged,) = [e for e in gateway.errors if "RuntimeError: a bug in a rule" in e and "Call-ID call" in e]
    # the line of the rule that raised, not the gateway's that called it
    raised = route.__code__.co_firstlineno + 2
    assert f"(at {__file__}:{raised} in route)" in logged, logged
    call = net.invite(alice, "bob")  # the next call is routed as ever
    assert call.call_id in bob.pending_invites


def test_a_rule_takes_away_every_header_of_each_name_it_names_and_no_other() -> None:
    def route(request: Request, default: Decision) -> Decision:
        return default.without_header("P-Preferred-Identity").without_header("x-secret").without_header("X-Secret")

    gateway = Gateway(Settings(domains=frozenset({"127.0.0.1"})), rules=(route, None))
    net = Network(gateway)
    alice, bob = net.phone("alice"), net.phone("bob")
    net.registered(alice, bob)
    extra = (("P-Preferred-Identity", "<sip:boss@127.0.0.1>"), ("X-SECRET", "1"), ("X-Kept", "yes"),
             ("x-secret", "2"), ("X-Secret-Too", "3"))  # fmt: skip
    for _ in range(2):  # the cfg's loop starts afresh in a worker that ran it before
        call = net.invite(alice, "bob", extra_headers=extra)
        invite = bob.pending_invites[call.call_id]
        assert invite.header_values("p-preferred-identity") == invite.header_values("x-secret") == []
        assert invite.header_values("x-kept") == ["yes"] and invite.header_values("x-secret-too") == ["3"]
        net.reply(call, bob, 200)
        net.bye(call, "caller")


def test_rules_that_fail_on_a_sample_call_are_not_taken() -> None:
    def route(request: Request, default: Decision) -> Decision:
        return request.header("X-Not-Configured")  # type: ignore[return-value]

    with pytest.raises(ValueError, match=r"not in gateway\.ini"):
        Gateway(Settings(), rules=(route, None))


def test_a_slow_rule_is_named_in_a_warning_at_its_load(tmp_path: Any) -> None:
    """A rule runs in the OpenSIPS worker that took the request, which waits for it (a trial: a rule sleeping
    0.5 s made the request that noticed the change wait 11 s for the sample calls).  Nothing bounds it; the
    load says so."""
    (tmp_path / "gateway.ini").write_text("[gateway]\ndomains = 127.0.0.1\n")
    (tmp_path / "policy.py").write_text(
        "import time\n\ndef route(request, default):\n    if request.ruri_user == '112':\n"
        "        time.sleep(0.15)\n    return default\n"
    )
    gateway = Gateway(files=(str(tmp_path / "gateway.ini"), str(tmp_path / "policy.py")))
    slow = [w for w in gateway.warnings if "are slow" in w]
    assert len(slow) == 1 and "route() took" in slow[0] and "on a call to 112" in slow[0], gateway.warnings
    assert not gateway.errors


def test_a_rule_sees_bytes_that_are_not_utf8_as_the_replacement_character() -> None:
    """The cfg hands the users over hex-encoded: such bytes never reach the python module as a str (which
    would fail and poison the worker); the router decodes them with U+FFFD for each bad sequence."""
    seen: List[Tuple[str, str]] = []

    def route(request: Request, default: Decision) -> Decision:
        seen.append((request.from_user, request.to_user))
        return reply(404, "Not Here")

    gateway = Gateway(Settings(domains=DOMAINS), rules=(route, None))
    raw = invite(from_uri="sip:joerg@127.0.0.1", to_uri_="sip:cafe@127.0.0.1").to_bytes()
    raw = raw.replace(b"joerg@", b"j\xf6rg@").replace(b"cafe@", b"caf\xe9@")
    sent = gateway.receive(raw, SOURCE)
    assert [m.status for _, m in sent if not m.is_request] == [404]
    assert seen[-1] == ("j\ufffdrg", "caf\ufffd")
    assert outcome(gateway, invite(), SOURCE) == [404]  # nothing left pending: the next request is answered
    assert gateway.python_failures == 0


def test_gateway_ini_lists_take_commas_and_always_proxy_takes_user_names() -> None:
    found = parse("[blocked]\nprefixes = 0900, 0137,/^x/\n")
    assert [p.text for p in found.tables.blocked] == ["0900", "0137", "/^x/"]
    with pytest.raises(ValueError, match="user names"):
        parse("[media]\nalways_proxy = carol@gateway.local\n")


def test_the_operators_own_files_load_and_route_the_sample_call() -> None:
    """opensips/gateway.ini and pyscripts/policy.py, the files OpenSIPS loads by default, load as mod_init loads
    them (the sample call included).  The rest of the suite runs the gateway as shipped (fakes/shipped, see
    tests/conftest.py), so that an operator's rules change none of the project's tests: this one fails when
    the operator's files would stop OpenSIPS at start-up."""
    ini, policy = os.path.join(REPO, "opensips", "gateway.ini"), os.path.join(REPO, "pyscripts", "policy.py")
    assert load_rules(ini, policy).origin == f"{policy} with {ini}"
    assert os.environ["GATEWAY_POLICY"] == SHIPPED[1]  # the rest of the suite: the shipped rules


def test_a_rules_own_decision_keeps_the_blocked_numbers_and_the_always_proxied_users() -> None:
    """A rule that sends every number to a trunk and every user to their contacts, with decisions of its own:
    a [blocked] number still gets 403 (and the rule never sees it), and a call from or to an always_proxy user
    still takes the media proxy, unless the rule says MediaProxy.NEVER."""
    asked: List[str] = []

    def route(request: Request, default: Decision) -> Decision:
        asked.append(request.ruri_user)
        if request.ruri_user.isdigit():
            return to_trunk("main")
        return to_user().with_media(MediaProxy.NEVER) if request.from_user == "dave" else to_user()

    settings = dataclasses.replace(parse(INI), auth_realm=None)
    gateway = Gateway(settings, rules=(route, None))
    asked.clear()  # the sample call of the rules' check
    net = Network(gateway)
    alice, carol, dave = net.phone("alice"), net.phone("carol"), net.phone("dave")
    net.registered(alice, carol, dave)
    assert net.invite(alice, "0900123456").statuses() == [403] and "0900123456" not in asked
    to_trunk_plain, to_trunk_proxied = net.invite(alice, "0301234567"), net.invite(carol, "0301234567")
    assert [e.host for e, _ in to_trunk_plain.invites_sent() + to_trunk_proxied.invites_sent()] == ["198.51.100.10"] * 2
    assert not to_trunk_plain.rtpengine_offers() and to_trunk_proxied.rtpengine_offers()
    net.nobody_answers()
    for caller, proxied in ((alice, True), (dave, False)):  # to carol; dave's rule says NEVER
        call = net.invite(caller, "carol")
        assert bool(call.rtpengine_offers()) is proxied, caller.name
        net.reply(call, carol, 200)
        net.bye(call, "caller")
    assert asked == ["0301234567", "0301234567", "carol", "carol"]
    assert_clean(gateway, net)


def test_a_rule_sends_a_number_to_a_trunk_in_the_form_the_trunk_wants() -> None:
    def route(request: Request, default: Decision) -> Decision:
        number = request.ruri_user
        if number.startswith("0") and not number.startswith("00"):
            return to_trunk("main", "+49" + number[1:])
        return default

    settings = dataclasses.replace(parse(INI), auth_realm=None)
    gateway = Gateway(settings, rules=(route, None))
    net = Network(gateway)
    alice = net.phone("alice")
    net.registered(alice)
    normalised, international = net.invite(alice, "0301234567"), net.invite(alice, "0044201234")
    ((where, invite),) = normalised.invites_sent()
    assert (where.host, invite.ruri) == ("198.51.100.10", "sip:+49301234567@127.0.0.1")
    ((where, invite),) = international.invites_sent()  # the dial plan's, as dialled
    assert (where.host, invite.ruri) == ("198.51.100.20", "sip:0044201234@127.0.0.1")
    net.nobody_answers()
    assert_clean(gateway, net)
    assert str(to_trunk("main", "+4930")) == "to trunk main as +4930"
    for bad in ("", "a b", "x@y", "1\r\n2", "a:b", "x>y", '"q"'):
        with pytest.raises(ValueError, match="not a user name"):
            to_trunk("main", bad)


def test_a_refused_answer_says_the_line_of_the_rule_that_returned_it() -> None:
    """loader.returned_at asks the rule again and sees its own frame return: the line of the return statement that
    gave this answer (not another return of the rule, nor a line of a helper or of a decorator's wrapper)."""
    import functools
    import sys

    from gateway.loader import returned_at

    def helper(number: str) -> Decision:
        return to_trunk("nowhere" if number.startswith("0") else "main")

    def wrapped(rule: Callable[[Any, Decision], Decision]) -> Any:
        @functools.wraps(rule)
        def wrapper(request: Any, default: Decision) -> Decision:
            return rule(request, default)

        return wrapper

    @wrapped
    def route(request: Any, default: Decision) -> Decision:
        if request == "call":
            return helper("0301234")
        return default

    first = route.__wrapped__.__code__.co_firstlineno
    here = __file__
    assert returned_at(route, "call", to_user()) == f" (returned at {here}:{first + 3} in route)"
    assert returned_at(route, "other", to_user()) == f" (returned at {here}:{first + 4} in route)"
    profile = sys.getprofile()
    assert returned_at(route, None, None) == f" (returned at {here}:{first + 4} in route)"
    assert returned_at(lambda request, default: 1 / 0, "call", None) == ""  # it raised this time: cannot tell
    assert returned_at(max, 1, 2) == "" and sys.getprofile() is profile  # no Python function; the hook is gone


def test_an_answer_the_gateway_cannot_carry_out_is_logged_as_the_rules_answer() -> None:
    """A rule that names a trunk gateway.ini lacks: the caller gets the fail-safe 500, and the log line names
    the answer, the trunks there are and the rule's line that returned it (no line of the rule raised).  (The
    rules' check at load takes one sample call, to a user: it misses the typo on this rule's path.)"""

    def route(request: Request, default: Decision) -> Decision:
        return to_trunk("mian") if request.ruri_user.isdigit() else default

    settings = dataclasses.replace(parse(INI), auth_realm=None)
    gateway = Gateway(settings, rules=(route, None), strict=False)
    net = Network(gateway)
    alice = net.phone("alice")
    net.registered(alice)
    assert net.invite(alice, "0301234567").statuses() == [500]
    logged, failed = gateway.errors  # the router's line, the cfg's route[python_failed]
    assert logged.endswith(
        "Refused: the rules answered 'to trunk mian': no trunk named 'mian' in gateway.ini [trunks]"
        f" (its trunks: intl, main) (returned at {__file__}:{route.__code__.co_firstlineno + 1} in route)"
    ), logged
    assert "python routing failed for INVITE" in failed
