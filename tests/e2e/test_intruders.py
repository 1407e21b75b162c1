"""Intruders against the real OpenSIPS: digest auth, someone else's address, no open relay, floods, scanners.

This module's rig turns digest auth on (gateway.ini auth_realm) against the SQLite subscriber table
the rig creates, filled here with opensips/subscribers.py; 127.0.0.3 is a trusted source (exempt from
auth and from pike).  Everything else comes from 127.0.0.1, or 127.0.0.2 for the flood.  After each
test the rig settles: within 10 s rtpengine holds no session and OpenSIPS no live dialog.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from rig import mi, sipp, web
from rig.subscribers import subscribers

from .conftest import Rig, need, own_rig
from .rawsip import SDP, SipSocket
from .sipcalls import settle_all, user
from .webphones import WebPhone

REALM = "gateway.local"
TRUSTED = "127.0.0.3"
FLOODER = "127.0.0.2"
SETTINGS = f"""\
[gateway]
domains = 127.0.0.1 localhost gateway.local
sip_destination =
trusted_sources = {TRUSTED}
auth_realm = {REALM}
topology_hiding = no
"""
PASSWORDS: Dict[str, str] = {}


@pytest.fixture(scope="session")
def guarded(opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    need("sipp")
    with own_rig(opensips_bin, tmp_path_factory.mktemp("intruders"), settings=SETTINGS) as rig:
        yield rig


@pytest.fixture(autouse=True)
def settled(guarded: Rig) -> Iterator[None]:
    """Whatever a test did (or failed to do), the rig must settle after it: no session, no live dialog."""
    yield
    settle_all(guarded, seconds=10)


def subscriber(rig: Rig, prefix: str) -> str:
    """A new subscriber in the rig's database (auth_db reads it at each request)."""
    name = user(prefix)
    PASSWORDS[name] = f"pw-{name}-{time.monotonic_ns()}"
    db = subscribers.connect(str(rig.gw.folder / "gateway.sqlite"))
    try:
        subscribers.add(db, name, REALM, PASSWORDS[name])
        db.commit()
    finally:
        db.close()
    return name


def register_xml(phone: sipp.Phone, aor_user: str, expect: str) -> str:
    """REGISTER, 401, REGISTER with credentials (SIPp's -au/-ap), then ``expect``."""
    s = sipp.Scenario("register-auth")
    for cseq, auth in ((1, ""), (2, "[authentication]\n")):
        s.send(
            f"""REGISTER sip:127.0.0.1 SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{aor_user}@127.0.0.1>;tag=[pid]reg
To: <sip:{aor_user}@127.0.0.1>
Call-ID: [call_id]
CSeq: {cseq} REGISTER
Contact: <{phone.contact}>;expires=600
Max-Forwards: 70
{auth}Content-Length: 0
"""
        )
        if cseq == 1:
            s.recv("401", extra=' auth="true"')
    s.recv(expect)
    return s.xml()


def register(rig: Rig, work: Path, phone: sipp.Phone, password: str, aor_user: str = "", expect: str = "200") -> int:
    name = f"reg-{phone.user}-{time.monotonic_ns()}"
    xml = register_xml(phone, aor_user or phone.user, expect)
    run = sipp.run(xml, work, name, phone, rig.sip, auth=(phone.user, password), timeout=15)
    code = run.wait()
    assert code == 0, run.errors()
    return code


def contacts(rig: Rig, name: str) -> List[Dict[str, Any]]:
    return mi.contacts(rig.gw.mi_url).get(name, [])


def test_sip_phone_registers_with_its_password(guarded: Rig, work: Path) -> None:
    phone = sipp.Phone(subscriber(guarded, "authsip"))
    register(guarded, work, phone, PASSWORDS[phone.user])
    assert [c["Contact"] for c in contacts(guarded, phone.user)] == [phone.contact]


def test_a_wrong_password_never_registers(guarded: Rig, work: Path) -> None:
    phone = sipp.Phone(subscriber(guarded, "wrongpw"))
    register(guarded, work, phone, "not-" + PASSWORDS[phone.user], expect="401")
    assert contacts(guarded, phone.user) == []
    # the same phone with its password is in the table read the same way: the empty list above meant something
    register(guarded, work, phone, PASSWORDS[phone.user])
    assert [c["Contact"] for c in contacts(guarded, phone.user)] == [phone.contact]


def test_a_register_for_someone_elses_address_is_refused(guarded: Rig, work: Path) -> None:
    victim, mallory = subscriber(guarded, "victim"), sipp.Phone(subscriber(guarded, "mallory"))
    register(guarded, work, mallory, PASSWORDS[mallory.user], aor_user=victim, expect="403")
    assert contacts(guarded, victim) == [] and contacts(guarded, mallory.user) == []
    register(guarded, work, mallory, PASSWORDS[mallory.user])  # her own address she may register
    assert [c["Contact"] for c in contacts(guarded, mallory.user)] == [mallory.contact]
    assert contacts(guarded, victim) == []


def test_our_users_initial_invite_is_challenged_then_goes_through(guarded: Rig, work: Path) -> None:
    caller, callee = sipp.Phone(subscriber(guarded, "invcaller")), sipp.Phone(subscriber(guarded, "invcallee"))
    register(guarded, work, callee, PASSWORDS[callee.user])
    s = sipp.Scenario("uac-auth")
    for cseq, auth in ((1, ""), (2, "[authentication]\n")):
        s.invite_at = s.index
        s.send(
            f"""INVITE sip:[service]@127.0.0.1 SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{caller.user}@127.0.0.1>;tag=[pid]auth
To: <sip:[service]@127.0.0.1>
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:{caller.user}@[local_ip]:[local_port]>
Max-Forwards: 70
{auth}Content-Type: application/sdp
Content-Length: [len]

{sipp.body()}"""
        )
        if cseq == 1:
            s.recv("407", extra=' auth="true"')
            s.send(
                f"""ACK sip:[service]@127.0.0.1 SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={s.branch_of_invite()}
From: <sip:{caller.user}@127.0.0.1>;tag=[pid]auth
To: <sip:[service]@127.0.0.1>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
""",
                retrans=False,
            )
    s.recv("100", optional=True)
    s.recv("180", optional=True)
    s.recv("200", extra=' rrs="true"')
    for method, cseq in (("ACK", 2), ("BYE", 3)):
        if method == "BYE":
            s.pause(300)
        s.send(
            f"""{method} [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{caller.user}@127.0.0.1>;tag=[pid]auth
To: <sip:[service]@127.0.0.1>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} {method}
Max-Forwards: 70
[routes]
Content-Length: 0
""",
            retrans=method != "ACK",
        )
    s.recv("200")
    before = guarded.statistics("calls_sip_to_sip")["calls_sip_to_sip"]
    uas = sipp.run(sipp.uas_scenario(sipp.Call((("expect_bye",),))), work, "auth-uas", callee, guarded.sip, echo=True)
    try:
        time.sleep(0.3)
        uac = sipp.run(s.xml(), work, "auth-uac", caller, guarded.sip, service=callee.user,
                       auth=(caller.user, PASSWORDS[caller.user]))  # fmt: skip
        assert uac.wait() == 0, uac.errors()
        assert uas.wait() == 0, uas.errors()
    finally:
        uas.stop()
    assert guarded.statistics("calls_sip_to_sip")["calls_sip_to_sip"] == before + 1


def test_an_unauthenticated_invite_from_our_domain_gets_a_challenge_not_a_call(guarded: Rig) -> None:
    callee = sipp.Phone(subscriber(guarded, "nochallenge"))
    with SipSocket(guarded.sip) as sip:
        reply = sip.final(sip.request("INVITE", f"sip:{callee.user}@127.0.0.1",
                                      from_uri="sip:someone@127.0.0.1", body=SDP), 5)  # fmt: skip
    assert reply is not None and reply.status == 407
    assert f'realm="{REALM}"' in (reply.header("Proxy-Authenticate") or "")


def test_no_open_relay(guarded: Rig) -> None:
    with SipSocket(guarded.sip) as sip:
        reply = sip.final(sip.request("INVITE", "sip:victim@other.example", from_uri="sip:evil@evil.example",
                                      body=SDP), 5)  # fmt: skip
        assert reply is not None and (reply.status, reply.reason) == (403, "Relaying Forbidden")
        # A forged in-dialog request (made-up To-tag, Route to a loopback port) is not relayed either.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target:
            target.bind(("127.0.0.1", 0))
            target.settimeout(1.0)
            route = f"Route: <sip:127.0.0.1:{target.getsockname()[1]};lr>"
            for method in ("MESSAGE", "BYE"):
                data = sip.request(method, "sip:victim@other.example", from_uri="sip:evil@evil.example",
                                   to_tag="forged", headers=(route,))  # fmt: skip
                reply = sip.final(data, 5)
                assert reply is not None and (reply.status, reply.reason) == (404, "Not Here"), method
            with pytest.raises(socket.timeout):
                target.recvfrom(65535)


def test_a_user_longer_than_the_registrar_keeps_gets_404_and_logs_nothing(guarded: Rig) -> None:
    """lib/reg takes users of up to 64 characters as written: a longer one's lookup() logged two errors and
    answered 500, for anyone to send (a trial).  The router answers 404 first (nobody is registered so)."""
    offset = guarded.log_size()
    with SipSocket(guarded.sip, "127.0.0.81") as sip:
        for user in ("1" * 65, "%41" * 30, "1" * 4096):
            reply = sip.final(sip.request("OPTIONS", f"sip:{user}@127.0.0.1", from_uri="sip:x@evil.example"), 5)
            assert reply is not None and (reply.status, reply.reason) == (404, "Not Found"), len(user)
    assert "too long" not in guarded.log_since(offset)


def burst(rig: Rig, host: str, count: int) -> int:
    """``count`` OPTIONS as fast as they go (bounded: one send each), then the replies within 1.5 s."""
    with SipSocket(rig.sip, host) as sip:
        started = time.monotonic()
        for n in range(count):
            sip.send(sip.request("OPTIONS", "sip:127.0.0.1", call_id=f"flood-{host}-{n}-{time.monotonic_ns()}"))
        return len(sip.replies(started, time.monotonic() - started + 1.5, final=False))


def test_a_flood_from_an_untrusted_source_is_blocked_a_trusted_one_is_not(guarded: Rig) -> None:
    count = 150  # pike: 40 requests per 2 s from one source
    offset = guarded.log_size()
    answered = burst(guarded, FLOODER, count)
    with SipSocket(guarded.sip, FLOODER) as sip:
        later = sip.final(sip.request("OPTIONS", "sip:127.0.0.1"), 1.0)
    trusted = burst(guarded, TRUSTED, count)
    print(f"FIGURE opensips-{guarded.gw.version}: flood of {count} OPTIONS from {FLOODER}: {answered} answered, "
          f"then blocked: {later is None}; from trusted {TRUSTED}: {trusted} answered")  # fmt: skip
    assert answered < count * 2 // 3 and later is None
    assert trusted == count
    assert "PIKE - BLOCKing ip 127.0.0.2" in guarded.log_since(offset)


def test_a_scanner_user_agent_gets_no_reply(guarded: Rig) -> None:
    with SipSocket(guarded.sip) as sip:
        plain = sip.final(sip.request("OPTIONS", "sip:127.0.0.1"), 2.0)
        for agent in ("friendly-scanner", "sipvicious", "sipcli/v1.8"):
            assert sip.final(sip.request("OPTIONS", "sip:127.0.0.1", headers=(f"User-Agent: {agent}",)), 1.0) is None
    assert plain is not None and plain.status == 200


@pytest.fixture
def auth_browser(chromium: Any, site: web.Server, guarded: Rig) -> Iterator[Callable[..., WebPhone]]:
    contexts = []

    def make(name: str, password: str, wait: str = "registered") -> WebPhone:
        context = chromium.new_context(ignore_https_errors=True, permissions=["microphone"])
        contexts.append(context)
        page = context.new_page()
        page.goto(site.url, timeout=15000)
        return WebPhone(page, name).start(guarded, True, password=password, wait=wait)

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


def test_browser_registers_and_calls_with_its_password_over_wss(
    guarded: Rig, work: Path, auth_browser: Callable[..., WebPhone]
) -> None:
    intruder = subscriber(guarded, "webwrong")
    auth_browser(intruder, "guess", wait="registrationFailed")
    assert contacts(guarded, intruder) == []
    name = subscriber(guarded, "webalice")
    alice = auth_browser(name, PASSWORDS[name])
    (contact,) = contacts(guarded, alice.user)
    assert contact["Cflags"] == "WEBRTC"
    bob = sipp.Phone(subscriber(guarded, "sipbob"))
    register(guarded, work, bob, PASSWORDS[bob.user])
    before = guarded.statistics("calls_web_to_sip", "media_proxy_calls")
    uas = sipp.run(sipp.uas_scenario(sipp.Call((("expect_bye",),))), work, "web-uas", bob, guarded.sip, echo=True)
    try:
        alice.call(f"sip:{bob.user}@127.0.0.1")  # challenged with 407; JsSIP answers it
        alice.wait_event("session confirmed")
        alice.hangup()
        alice.wait_event("session ended")
        assert uas.wait() == 0, uas.errors()
    finally:
        uas.stop()
    after = guarded.statistics("calls_web_to_sip", "media_proxy_calls")
    assert after == {name: value + 1 for name, value in before.items()}, (before, after)
    # consume_credentials(): our users' digest answers go no further than the gateway
    assert "Proxy-Authorization" not in (work / "web-uas.messages.log").read_text()
