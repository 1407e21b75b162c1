"""README "Changing the routing": recipes of docs/recipes through the real OpenSIPS, as an operator deploys them.

Each rig runs a recipe's own files: its gateway.ini (the dial plan's trunks pointed at SIPp UASs on
loopback, nothing else changed) and its policy.py (the shipped pyscripts/policy.py for a recipe of
gateway.ini only), copied into the rig's folder and named by GATEWAY_SETTINGS and GATEWAY_POLICY as a site
names them.  The recipes set ``auth_realm``: every phone and browser here is a subscriber and answers the
gateway's digest challenges.  After each test the rig holds nothing: no rtpengine session, no live dialog,
no Python failure.

- dial-plan: a registered SIPp phone dials 0044201234 and 030123456; each INVITE reaches its trunk
  (international over TCP, national over UDP), the other trunk gets nothing, the request URI is as
  dialled, and the media flows both ways through rtpengine (the caller is behind NAT for nathelper).
- failover: a registered SIPp phone dials a national number; the carrier (a SIPp UAS) answers 503 and the
  call goes on to the backup trunk with the same request URI, where it is answered and its media flows both
  ways, each trunk's branch with a session of its own; a busy carrier (486) ends the call with 486, and the
  backup gets nothing; when both fail, each is asked once and the caller gets the backup's 503
  (as 500: OpenSIPS relays a 503 so, RFC 3261 16.7); a carrier that sends nothing (nobody listens at its
  port) fails over when tm times out (fr_timeout, 5 s).
- trunk-domain: the same with a ``domain=`` on each trunk ([trunks]): the
  carrier's INVITE has its domain as the request URI's host (the caller's port gone) and the backup's its own
  host and port: what the router sets from Python ($rd, $rp), in the request route and in the failure route.
- headers: a browser (JsSIP in Chromium, over WSS) calls a SIPp phone with a P-Preferred-Identity of its
  own: the phone's INVITE carries ``X-Caller-Kind: webrtc`` and no P-Preferred-Identity; audio flows both
  ways.  A SIPp phone calling another gets ``X-Caller-Kind: sip``, its P-Preferred-Identity removed too.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from gateway.settings import parse
from rig import mi, sipp, web
from rig.gateway import REPO
from rig.subscribers import subscribers

from .conftest import PROBE, Rig, need, own_rig, python_quiet
from .rawsip import SDP, SipSocket
from .sipcalls import Outcome, call, media_both_ways, messages, registered, settle, settle_all, user
from .webphones import WebPhone

RECIPES = REPO / "docs" / "recipes"
SHIPPED_POLICY = REPO / "pyscripts" / "policy.py"

#: The numbers README's dial-plan recipe shows, and the trunk each must reach.
DIALLED = (("0044201234", "international"), ("030123456", "national"))
#: What a caller claims and the headers recipe takes away.
PPI = "P-Preferred-Identity: <sip:boss@127.0.0.1>"


def recipe_rig(
    opensips_bin: Optional[str], folder: Path, settings: str, policy: Path
) -> contextlib.AbstractContextManager[Rig]:
    """A rig running ``settings`` (gateway.ini text) and a copy of ``policy``, both in its folder."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "policy.py"
    shutil.copy(policy, target)
    env = {"GATEWAY_POLICY": str(target), "GATEWAY_PROBE_LOG": str(folder / "probe.jsonl")}
    return own_rig(opensips_bin, folder, settings=settings, env=env, entry=PROBE)


def realm_of(settings: str) -> str:
    realm = parse(settings).auth_realm
    assert realm, "the recipes turn digest authentication on"
    return realm


def subscriber(rig: Rig, prefix: str, realm: str) -> Tuple[str, str]:
    """A new subscriber in the rig's database (auth_db reads it at each request): its name and password."""
    name = user(prefix)
    password = f"pw-{name}-{time.monotonic_ns()}"
    db = subscribers.connect(str(rig.gw.folder / "gateway.sqlite"))
    try:
        subscribers.add(db, name, realm, password)
    finally:
        db.close()
    return name, password


# -- the dial plan -------------------------------------------------------------------------------


def dial_plan_settings(trunks: Dict[str, sipp.Phone], name: str = "dial-plan") -> str:
    """docs/recipes/NAME/gateway.ini with each trunk's host and port those of a SIPp UAS on loopback
    (its URI parameters, ``;transport=tcp``, kept)."""
    text = (RECIPES / name / "gateway.ini").read_text()
    replaced = re.sub(
        r"^(\w+) = sip:[^;\s]+", lambda m: f"{m[1]} = sip:127.0.0.1:{trunks[m[1]].port}", text, flags=re.M
    )
    assert set(parse(replaced).tables.trunks) == set(trunks)
    return replaced


def trunk_phones(name: str = "dial-plan") -> Dict[str, sipp.Phone]:
    """A SIPp phone (the UAS side) per trunk of the recipe, on the transport its URI names."""
    uris = parse((RECIPES / name / "gateway.ini").read_text()).tables.trunks
    return {
        name: sipp.Phone(name, transport="tcp" if "transport=tcp" in uri.lower() else "udp")
        for name, uri in uris.items()
    }


@pytest.fixture(scope="module")
def dial_plan(
    opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tuple[Rig, Dict[str, sipp.Phone], str]]:
    need("sipp")
    trunks = trunk_phones()
    assert {trunk for _, trunk in DIALLED} == set(trunks)
    settings = dial_plan_settings(trunks)
    folder = tmp_path_factory.mktemp("recipe-dial-plan")
    # a recipe of gateway.ini only: the rules are the shipped ones
    with recipe_rig(opensips_bin, folder, settings, SHIPPED_POLICY) as rig:
        yield rig, trunks, realm_of(settings)


def trunks_rig(
    name: str, opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tuple[Rig, Dict[str, sipp.Phone], str]]:
    """docs/recipes/NAME as it is, its trunks SIPp UASs on loopback."""
    need("sipp")
    trunks = trunk_phones(name)
    settings = dial_plan_settings(trunks, name)
    with recipe_rig(opensips_bin, tmp_path_factory.mktemp(f"recipe-{name}"), settings,
                    RECIPES / name / "policy.py") as rig:  # fmt: skip
        yield rig, trunks, realm_of(settings)


@pytest.fixture(scope="module")
def failover_domains(
    opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tuple[Rig, Dict[str, sipp.Phone], str]]:
    """docs/recipes/trunk-domain: the failover's trunks, each with a domain= (README "A trunk's own domain")."""
    assert parse((RECIPES / "trunk-domain" / "gateway.ini").read_text()).tables.domains == {
        "carrier": "carrier.example", "backup": "sip.backup.example:5070"}  # fmt: skip  # and pbx: none
    yield from trunks_rig("trunk-domain", opensips_bin, tmp_path_factory)


#: The trunk-domain recipe's gateway.ini with a rule that rewrites the called number to E.164 for the carrier.
E164_TO_CARRIER = """from gateway.policy import Decision, Request, to_trunk


def route(request: Request, default: Decision) -> Decision:
    if request.ruri_user.startswith("00"):
        return to_trunk("carrier", "+" + request.ruri_user[2:]).or_trunk("pbx").with_header("X-Route", "e164")
    return default
"""


@pytest.fixture(scope="module")
def rewriting_domains(
    opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tuple[Rig, Dict[str, sipp.Phone], str]]:
    """docs/recipes/trunk-domain with a rule of its own: 00 numbers to the carrier as E.164, then to the PBX."""
    need("sipp")
    trunks = trunk_phones("trunk-domain")
    settings = dial_plan_settings(trunks, "trunk-domain")
    folder = tmp_path_factory.mktemp("recipe-trunk-domain-e164")
    policy = folder / "rule.py"
    policy.write_text(E164_TO_CARRIER)
    with recipe_rig(opensips_bin, folder / "rig", settings, policy) as rig:
        yield rig, trunks, realm_of(settings)


@pytest.fixture(scope="module")
def trunk_auth(
    opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tuple[Rig, Dict[str, sipp.Phone], str]]:
    """docs/recipes/trunk-auth: trunks with an account (README "A trunk that asks for an account")."""
    assert set(parse((RECIPES / "trunk-auth" / "gateway.ini").read_text()).credentials) == {"carrier", "backup"}
    yield from trunks_rig("trunk-auth", opensips_bin, tmp_path_factory)


@pytest.fixture(scope="module")
def failover(
    opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tuple[Rig, Dict[str, sipp.Phone], str]]:
    yield from trunks_rig("failover", opensips_bin, tmp_path_factory)


def own_recipe_rig(name: str, opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Tuple[Rig, str]]:  # fmt: skip
    """docs/recipes/NAME as it is (its gateway.ini and policy.py), on a rig of its own."""
    need("sipp")
    settings = (RECIPES / name / "gateway.ini").read_text()
    with recipe_rig(opensips_bin, tmp_path_factory.mktemp(f"recipe-{name}"), settings,
                    RECIPES / name / "policy.py") as rig:  # fmt: skip
        yield rig, realm_of(settings)


@pytest.fixture(scope="module")
def registrations(opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[Rig, str]]:
    """docs/recipes/registrations: policy.py's register() (README "Who may register")."""
    yield from own_recipe_rig("registrations", opensips_bin, tmp_path_factory)


# -- the headers recipe ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def headers(opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[Rig, str]]:
    yield from own_recipe_rig("headers", opensips_bin, tmp_path_factory)


@pytest.fixture(autouse=True)
def clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """Around each test, on this module's rig it used: no Python failure, and nothing held afterwards."""
    rigs: List[Rig] = [
        request.getfixturevalue(n)[0]
        for n in ("dial_plan", "failover", "headers", "trunk_auth", "registrations")
        if n in request.fixturenames
    ]
    with contextlib.ExitStack() as stack:
        for rig in rigs:
            stack.enter_context(python_quiet(rig))
        yield
    for rig in rigs:
        settle_all(rig, seconds=10)


@pytest.fixture
def browser(chromium: Any, site: web.Server) -> Iterator[Callable[..., WebPhone]]:
    """Browsers (a context each), closed at the end."""
    contexts: List[Any] = []

    def make(rig: Rig, name: str, password: str) -> WebPhone:
        context = chromium.new_context(ignore_https_errors=True, permissions=["microphone"])
        contexts.append(context)
        page = context.new_page()
        page.goto(site.url, timeout=15000)
        return WebPhone(page, name).start(rig, True, password=password)

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


def subscribed_caller(rig: Rig, work: Path, prefix: str, realm: str) -> Tuple[sipp.Phone, Tuple[str, str]]:
    """A new subscriber registered from a SIPp phone (a 127.0.0.1 Contact: behind NAT), and its credentials."""
    name, password = subscriber(rig, prefix, realm)
    return registered(rig, work, "", password=password, name=name), (name, password)


def received_invites(work: Path, name: str) -> List[Any]:
    return [m for m in messages(work, name) if not m.sent and m.first_line.startswith("INVITE ")]


def test_dial_plan_sends_each_number_to_its_trunk_as_dialled_with_media(
    dial_plan: Tuple[Rig, Dict[str, sipp.Phone], str], work: Path
) -> None:
    rig, trunks, realm = dial_plan
    caller, auth = subscribed_caller(rig, work, "dpcaller", realm)
    before = rig.statistics("calls_sip_to_sip", "media_proxy_calls")
    for number, trunk in DIALLED:
        others = {n: p for n, p in trunks.items() if n != trunk}
        idle = {
            n: sipp.run(sipp.uas_scenario(sipp.Call((("expect_bye",),))), work, f"{number}-{n}-idle", p, rig.sip)
            for n, p in others.items()
        }  # the other trunk listens too: it must get nothing
        try:
            outcome = call(
                rig, work, caller, trunks[trunk], sipp.Call((("pause", 1000), ("bye",))),
                sipp.Call((("expect_bye",),)), name=f"{number}-{trunk}", dialled=number, auth=auth,
            )  # fmt: skip
        finally:
            for run in idle.values():
                run.stop()
        (invite,) = received_invites(work, f"{number}-{trunk}-uas")
        assert invite.first_line == f"INVITE sip:{number}@127.0.0.1 SIP/2.0", invite.first_line  # as dialled
        assert invite.transport == trunks[trunk].transport.upper(), (trunk, invite.transport)
        assert invite.call_id == outcome.call_id
        for other in others:
            assert received_invites(work, f"{number}-{other}-idle") == [], f"{number} reached {other} too"
        assert outcome.ops() == ["offer", "answer", "delete"], outcome.ops()
        packets = media_both_ways(outcome.commands, outcome.call_id)
        assert len(packets) == 2, packets
        settle(rig, outcome.call_id)
    after = rig.statistics("calls_sip_to_sip", "media_proxy_calls")
    assert after == {k: v + len(DIALLED) for k, v in before.items()}, (before, after)


def carrier_fails_backup_answers(
    rig: Rig, work: Path, caller: sipp.Phone, trunks: Dict[str, sipp.Phone], auth: Tuple[str, str], number: str,
    name: str, domain: str = "", then: str = "backup",
) -> Tuple[Outcome, Any, Any]:  # fmt: skip
    """``caller`` dials ``number``: the carrier answers 503, the next trunk (``then``) answers and the caller hangs
    up.  The call, and the INVITE each trunk got."""
    carrier = sipp.run(sipp.uas_scenario(sipp.Call(outcome="unavailable")), work, f"{name}-carrier",
                       trunks["carrier"], rig.sip)  # fmt: skip
    try:
        outcome = call(
            rig, work, caller, trunks[then], sipp.Call((("pause", 1000), ("bye",))),
            sipp.Call((("expect_bye",),)), name=f"{name}-backup", dialled=number, auth=auth, domain=domain,
        )  # fmt: skip
        assert carrier.wait() == 0, carrier.errors()
    finally:
        carrier.stop()
    (first,) = received_invites(work, f"{name}-carrier")
    (second,) = received_invites(work, f"{name}-backup-uas")
    assert first.call_id == second.call_id == outcome.call_id
    # the carrier's branch had its session, given back when it failed; the backup's branch its own
    assert outcome.ops() == ["offer", "delete", "offer", "answer", "delete"], outcome.ops()
    return outcome, first, second


def test_failover_a_carriers_503_sends_the_call_to_the_backup_and_busy_ends_it(
    failover: Tuple[Rig, Dict[str, sipp.Phone], str], work: Path
) -> None:
    rig, trunks, realm = failover
    caller, auth = subscribed_caller(rig, work, "focaller", realm)
    number = "030123456"
    outcome, first, second = carrier_fails_backup_answers(rig, work, caller, trunks, auth, number, "fo")
    assert first.first_line == second.first_line == f"INVITE sip:{number}@127.0.0.1 SIP/2.0"
    packets = media_both_ways(outcome.commands[2:], outcome.call_id)
    assert len(packets) == 2, packets
    settle(rig, outcome.call_id)
    # busy is the callee's answer, not the carrier's failure: the caller gets it, the backup nothing
    backup = sipp.run(sipp.uas_scenario(sipp.Call((("expect_bye",),))), work, "fo-idle", trunks["backup"], rig.sip)
    try:
        busy = call(rig, work, caller, trunks["carrier"], sipp.Call(outcome="busy"), sipp.Call(outcome="busy"),
                    name="fo-busy", dialled=number, auth=auth)  # fmt: skip
    finally:
        backup.stop()
    assert received_invites(work, "fo-idle") == []
    assert busy.ops() == ["offer", "delete"], busy.ops()
    settle(rig, busy.call_id)
    # both fail: each trunk is asked once, and the caller gets the last one's reply (503 relayed as 500)
    carrier = sipp.run(sipp.uas_scenario(sipp.Call(outcome="unavailable")), work, "fo-down", trunks["carrier"],
                       rig.sip)  # fmt: skip
    try:
        down = call(rig, work, caller, trunks["backup"], sipp.Call(outcome="server_error"),
                    sipp.Call(outcome="unavailable"), name="fo-both", dialled=number, auth=auth)  # fmt: skip
        assert carrier.wait() == 0, carrier.errors()
    finally:
        carrier.stop()
    assert len(received_invites(work, "fo-down")) == len(received_invites(work, "fo-both-uas")) == 1
    assert down.ops() == ["offer", "delete", "offer", "delete"], down.ops()
    settle(rig, down.call_id)
    # a carrier that is down (nothing listens there): tm's 408 after fr_timeout, and the backup answers
    silent = call(rig, work, caller, trunks["backup"], sipp.Call((("bye",),)), sipp.Call((("expect_bye",),)),
                  name="fo-silent", dialled=number, auth=auth)  # fmt: skip
    assert silent.ops() == ["offer", "delete", "offer", "answer", "delete"], silent.ops()
    settle(rig, silent.call_id)


def test_failover_each_trunk_gets_its_own_domain_in_the_request_uri(
    failover_domains: Tuple[Rig, Dict[str, sipp.Phone], str], work: Path
) -> None:
    rig, trunks, realm = failover_domains
    caller, auth = subscribed_caller(rig, work, "fdcaller", realm)
    number = "030123456"
    # the caller writes the gateway's port in its request URI: the carrier's domain has none
    ours = f"{rig.sip[0]}:{rig.sip[1]}"
    outcome, first, second = carrier_fails_backup_answers(rig, work, caller, trunks, auth, number, "fd", ours)
    sent = [m for m in messages(work, "fd-backup-uac") if m.sent and m.first_line.startswith("INVITE ")]
    assert sent and all(m.first_line == f"INVITE sip:{number}@{ours} SIP/2.0" for m in sent)
    assert first.first_line == f"INVITE sip:{number}@carrier.example SIP/2.0"
    assert second.first_line == f"INVITE sip:{number}@sip.backup.example:5070 SIP/2.0"
    settle(rig, outcome.call_id)
    # a PBX without a domain= after the carrier: the request URI's host and port the caller wrote, back ($ou)
    outcome, first, second = carrier_fails_backup_answers(rig, work, caller, trunks, auth, "+4930123", "fp", ours,
                                                          then="pbx")  # fmt: skip
    assert first.first_line == "INVITE sip:+4930123@carrier.example SIP/2.0"
    assert second.first_line == f"INVITE sip:+4930123@{ours} SIP/2.0"
    settle(rig, outcome.call_id)


def test_failover_keeps_the_user_a_rule_gave_and_a_pbx_after_a_carrier_gets_our_domain_back(
    rewriting_domains: Tuple[Rig, Dict[str, sipp.Phone], str], work: Path
) -> None:
    rig, trunks, realm = rewriting_domains
    caller, auth = subscribed_caller(rig, work, "rwcaller", realm)
    ours = f"{rig.sip[0]}:{rig.sip[1]}"
    outcome, first, second = carrier_fails_backup_answers(rig, work, caller, trunks, auth, "0044201234", "rw", ours,
                                                          then="pbx")  # fmt: skip
    assert first.first_line == "INVITE sip:+44201234@carrier.example SIP/2.0"
    assert first.headers("X-Route") == second.headers("X-Route") == ["e164"], second.text
    assert second.first_line == f"INVITE sip:+44201234@{ours} SIP/2.0"
    settle(rig, outcome.call_id)


def test_a_caller_of_another_domain_never_reaches_the_trunk_a_rule_names(
    rewriting_domains: Tuple[Rig, Dict[str, sipp.Phone], str],
) -> None:
    """No password is asked of another domain's caller (it has none here): the rule's trunk is refused to it,
    as a relay is (README "What protects the gateway").  Found by a trial: a forged From reached the carrier."""
    rig, _, _ = rewriting_domains
    with SipSocket(rig.sip, "127.0.0.71") as sip:
        invite = sip.request("INVITE", "sip:0044201234@127.0.0.1", from_uri="sip:anyone@evil.example", body=SDP)
        replies = sip.replies(sip.send(invite), 5)
    assert [(r.status, r.reason) for r in replies if r.status >= 200] == [(403, "Relaying Forbidden")]
    assert not any(r.status == 100 for r in replies)  # answered at once: no branch was ever sent


def test_headers_a_browsers_call_carries_its_kind_and_loses_its_preferred_identity(
    headers: Tuple[Rig, str], work: Path, browser: Callable[..., WebPhone]
) -> None:
    rig, realm = headers
    alice = browser(rig, *subscriber(rig, "webalice", realm))
    (contact,) = mi.contacts(rig.gw.mi_url)[alice.user]
    assert contact["Cflags"] == "WEBRTC"
    bob_name, bob_password = subscriber(rig, "sipbob", realm)
    bob = registered(rig, work, "", password=bob_password, name=bob_name)
    uas = sipp.run(sipp.uas_scenario(sipp.Call((("expect_bye",),))), work, "bob-uas", bob, rig.sip, echo=True)
    try:
        time.sleep(0.3)  # SIPp binds its port before it can be called
        alice.call(f"sip:{bob.user}@127.0.0.1", headers=[PPI])
        alice.wait_event("session confirmed")
        call_id = alice.call_id()
        sent = alice.sent_invite()  # what the browser sent: its claim, and the answer to the 407
        assert PPI in sent.splitlines() and "Proxy-Authorization:" in sent, sent
        alice.media_grows()
        alice.hangup()
        alice.wait_event("session ended")
        assert uas.wait() == 0, uas.errors()
    finally:
        uas.stop()
    (invite,) = received_invites(work, "bob-uas")
    assert invite.call_id == call_id
    assert invite.headers("X-Caller-Kind") == ["webrtc"], invite.text
    assert invite.headers("P-Preferred-Identity") == [], invite.text
    packets = media_both_ways(rig.relay.commands(call_id), call_id)
    assert len(packets) == 2, packets
    settle(rig, call_id)


def test_headers_a_sip_phones_call_carries_its_kind_and_loses_its_preferred_identity(
    headers: Tuple[Rig, str], work: Path
) -> None:
    rig, realm = headers
    carol_name, carol_password = subscriber(rig, "sipcarol", realm)
    carol = registered(rig, work, "", password=carol_password, name=carol_name)
    dave_name, dave_password = subscriber(rig, "sipdave", realm)
    dave = registered(rig, work, "", password=dave_password, name=dave_name)
    outcome = call(
        rig, work, carol, dave, sipp.Call((("pause", 300), ("bye",)), headers=(PPI,)), sipp.Call((("expect_bye",),)),
        name="carol-dave", auth=(carol_name, carol_password),
    )  # fmt: skip
    sent = [m for m in messages(work, "carol-dave-uac") if m.sent and m.first_line.startswith("INVITE ")]
    assert sent and all(m.headers("P-Preferred-Identity") == [PPI.split(": ", 1)[1]] for m in sent), sent
    (invite,) = received_invites(work, "carol-dave-uas")
    assert invite.headers("X-Caller-Kind") == ["sip"], invite.text
    assert invite.headers("P-Preferred-Identity") == [], invite.text
    settle(rig, outcome.call_id)


# -- a trunk that asks for an account ---------------------------------------------------------------


def digest_answer(message: Any, header: str) -> Dict[str, str]:
    """The fields of ``message``'s one digest ``header`` (Proxy-Authorization, Authorization)."""
    (value,) = message.headers(header)
    assert value.startswith("Digest "), value
    return {k.lower(): a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value[7:])}


def assert_digest(message: Any, header: str, user: str, password: str, realm: str) -> None:
    """``message`` answers its trunk's challenge with ``user``'s account: RFC 2617's response, computed here."""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # SIP digest is MD5 (RFC 2617)

    creds = digest_answer(message, header)
    assert (creds["username"], creds["realm"]) == (user, realm), creds
    assert creds["uri"] == message.first_line.split()[1], (creds, message.first_line)
    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"INVITE:{creds['uri']}")
    qop = f"{creds['nc']}:{creds['cnonce']}:{creds['qop']}:" if "qop" in creds else ""
    assert creds["response"] == md5(f"{ha1}:{creds['nonce']}:{qop}{ha2}"), creds


def cseq(message: Any) -> int:
    return int(message.headers("CSeq")[0].split()[0])


def test_trunk_auth_a_carriers_challenge_is_answered_with_its_account_and_the_call_has_media(
    trunk_auth: Tuple[Rig, Dict[str, sipp.Phone], str], work: Path
) -> None:
    rig, trunks, realm = trunk_auth
    account = parse((RECIPES / "trunk-auth" / "gateway.ini").read_text()).credentials["carrier"]
    caller, auth = subscribed_caller(rig, work, "tacaller", realm)
    outcome = call(rig, work, caller, trunks["carrier"], sipp.Call((("pause", 1000), ("bye",))),
                   sipp.Call((("expect_bye",),), challenges=((407, "Carrier Realm 7", False),)), name="ta",
                   dialled="030123456", auth=auth)  # fmt: skip
    first, second = received_invites(work, "ta-uas")
    assert first.first_line == second.first_line == "INVITE sip:030123456@carrier.example SIP/2.0"
    assert first.headers("Proxy-Authorization") == []  # and below: the realm the carrier named (no auth_realm=)
    assert_digest(second, "Proxy-Authorization", account.user, account.password, "Carrier Realm 7")
    assert cseq(second) == cseq(first) + 1
    # the caller saw no challenge but the gateway's own, and its replies carry its own CSeq
    caller_got = [m for m in messages(work, "ta-uac") if not m.sent and not m.is_request]
    assert all("carrier.example" not in " ".join(m.headers("Proxy-Authenticate")) for m in caller_got)
    invite_replies = [m for m in caller_got if m.headers("CSeq")[0].endswith("INVITE") and "407" not in m.first_line]
    assert {cseq(m) for m in invite_replies} == {cseq(first)}, [m.first_line for m in invite_replies]
    # the caller's BYE reached the carrier numbered after the INVITE it answered (dialog's CSeq of its leg)
    (bye,) = [m for m in messages(work, "ta-uas") if not m.sent and m.first_line.startswith("BYE ")]
    assert cseq(bye) == cseq(second) + 1
    # the challenged branch's session went back; the answered one's had media both ways
    assert outcome.ops() == ["offer", "delete", "offer", "answer", "delete"], outcome.ops()
    packets = media_both_ways(outcome.commands[2:], outcome.call_id)
    assert len(packets) == 2, packets
    settle(rig, outcome.call_id)


@pytest.mark.parametrize("stale", [False, True], ids=["wrong-password", "stale-nonce"])
def test_trunk_auth_credentials_challenged_again_fail_over_to_the_backup(
    trunk_auth: Tuple[Rig, Dict[str, sipp.Phone], str], work: Path, stale: bool
) -> None:
    """A wrong password, or a nonce the carrier calls stale: the gateway answers a trunk once a call (a second
    uac_auth() would repeat the first answer's CSeq, docs/host-facts.md)."""
    rig, trunks, realm = trunk_auth
    caller, auth = subscribed_caller(rig, work, "tbcaller", realm)
    twice = ((407, "carrier.example", False), (407, "carrier.example", stale))
    carrier = sipp.run(sipp.uas_scenario(sipp.Call(outcome="challenged", challenges=twice)), work, "tb-carrier",
                       trunks["carrier"], rig.sip)  # fmt: skip
    offset = rig.log_size()
    try:
        outcome = call(rig, work, caller, trunks["backup"], sipp.Call((("pause", 1000), ("bye",))),
                       sipp.Call((("expect_bye",),)), name="tb", dialled="030123456", auth=auth)  # fmt: skip
        assert carrier.wait() == 0, carrier.errors()
    finally:
        carrier.stop()
    assert len(received_invites(work, "tb-carrier")) == 2
    (backup,) = received_invites(work, "tb-uas")
    assert backup.headers("Proxy-Authorization") == [] and backup.call_id == outcome.call_id
    logged = [line for line in rig.log_since(offset).splitlines() if "trunk carrier challenged" in line]
    assert len(logged) == 1 and outcome.call_id in logged[0], logged
    assert ("stale" in logged[0]) is stale and ("auth_password=" in logged[0]) is not stale, logged
    assert outcome.ops() == ["offer", "delete", "offer", "delete", "offer", "answer", "delete"], outcome.ops()
    settle(rig, outcome.call_id)


# -- who may register ---------------------------------------------------------------------------------


def test_registrations_a_kiosk_phone_and_an_unsupported_one_are_refused_after_their_digest_and_a_desk_saved(
    registrations: Tuple[Rig, str], work: Path
) -> None:
    rig, realm = registrations
    tried = (("kiosk", "sipp-phone", "403", "Forbidden - Browsers Only"), ("desk", "sipp-phone", "200", "OK"),
             ("old", "OldPhone/1.2", "403", "Forbidden - Unsupported Phone"))  # fmt: skip
    names = {}
    for prefix, agent, answer, reason in tried:
        name, password = subscriber(rig, prefix, realm)
        phone = sipp.Phone(name)
        run = sipp.register(phone, work, rig.sip, domain=rig.sip[0], password=password, answer=answer, agent=agent)
        assert run.wait() == 0, (prefix, run.errors())
        got = [m for m in messages(work, run.name) if not m.sent]
        # the rule answers after the digest check: a 401 first, then its answer to the REGISTER with credentials
        assert [m.first_line for m in got] == ["SIP/2.0 401 Unauthorized", f"SIP/2.0 {answer} {reason}"], got
        names[prefix] = name
    bindings = mi.contacts(rig.gw.mi_url)
    assert names["desk"] in bindings and names["kiosk"] not in bindings and names["old"] not in bindings
