"""A trunk that challenges the gateway's calls: gateway.ini ``[trunks] carrier = sip:198.51.100.10
auth_user=acme-gw auth_password=s3cret`` (docs/recipes/trunk-auth).

A carrier asks the gateway, not the caller, for the account it gave the gateway: its 401 or 407 goes to
the failure route, where the router answers with the trunk's credentials (uac_auth() with the AVPs it
writes) and the call goes to the same trunk again, its CSeq one higher; the caller sees none of it (its
replies have its own CSeq back, and so have those of its later requests, which dialog renumbers for the
carrier).  Credentials the carrier challenges again fail over like a 5xx, or the caller gets 503; a
trunk without credentials is not answered with another's.  All through the fake host running
opensips.cfg (its uac_auth() as modules/uac/auth.c does it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from fakes.runtime import Gateway, digest_fields, digest_response
from fakes.sipmsg import SipMessage
from fakes.ua import UA, Call, Network
from gateway.settings import parse
from tests.flowcheck import assert_clean

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "docs" / "recipes" / "trunk-auth"
INI = (RECIPE / "gateway.ini").read_text()
CARRIER = parse(INI).credentials["carrier"]
BACKUP = parse(INI).credentials["backup"]
PASSWORDS = {"acme-gw": "s3cret-Pa55", "1002003": "other-Secret"}


def gateway_of(tmp: Path, ini: str = INI) -> Tuple[Gateway, Network, Dict[str, UA]]:
    settings = tmp / "gateway.ini"
    settings.write_text(ini)
    gateway = Gateway(files=(str(settings), str(RECIPE / "policy.py")))
    net = Network(gateway)
    trunks = {name: net.trunk(name, uri) for name, uri in parse(ini).tables.trunks.items()}
    return gateway, net, trunks


def phone_calls(tmp: Path, number: str, ini: str = INI) -> Tuple[Gateway, Network, Dict[str, UA], UA, Call]:
    """A registered SIP phone, bob, calls ``number`` through the recipe (or ``ini``)."""
    gateway, net, trunks = gateway_of(tmp, ini)
    bob = net.phone("bob")
    net.register(bob)
    return gateway, net, trunks, bob, net.invite(bob, number)


def logged_once(gateway: Gateway, *marks: str) -> None:
    """The one error line logged holds each of ``marks``; taken away, so that assert_clean sees no other."""
    (line,) = gateway.errors
    assert all(mark in line for mark in marks), line
    gateway.errors.clear()


def invites(call: Call) -> List[Tuple[str, SipMessage]]:
    return [(endpoint.host, invite) for endpoint, invite in call.invites_sent()]


def digest(message: SipMessage, header: str) -> Dict[str, str]:
    value = message.header(header)
    assert value is not None and value.startswith("Digest "), (header, str(message))
    return digest_fields(value)


def finals_of(caller: UA, call: Call) -> List[SipMessage]:
    """The final replies the caller got but the gateway's own challenge (the caller is its subscriber)."""
    return [m for m in caller.inbox if not m.is_request and m.call_id == call.call_id and m.status >= 200
            and not (m.status == 407 and "gateway.local" in (m.header("proxy-authenticate") or ""))]  # fmt: skip


def assert_answers(invite: SipMessage, header: str, nonce: str, realm: str) -> Dict[str, str]:
    """``invite`` carries a digest answer to ``nonce`` that the trunk's account computes too."""
    creds = digest(invite, header)
    assert creds["nonce"] == nonce and creds["realm"] == realm
    assert creds["uri"] == invite.ruri
    assert creds["response"] == digest_response(creds, PASSWORDS[creds["username"]], "INVITE")
    return creds


def test_a_carriers_407_is_answered_with_its_account_and_the_caller_sees_none_of_it(tmp_path: Path) -> None:
    gateway, net, trunks = gateway_of(tmp_path)
    alice = net.browser("alice")
    net.register(alice)
    call = net.invite(alice, "030123456")
    gateway.use_worker(1)  # the challenge reaches another worker: the trunk and its branch's plan travel along
    nonce = net.challenge(call, trunks["carrier"], 407, realm="carrier.example")
    (_, first), (host, second) = invites(call)
    assert host == "198.51.100.10" and second.ruri == first.ruri == "sip:030123456@carrier.example"
    creds = assert_answers(second, "Proxy-Authorization", nonce, "carrier.example")
    assert creds["username"] == CARRIER.user and creds["qop"] == "auth"
    assert first.header("Proxy-Authorization") is None
    assert second.cseq_number == first.cseq_number + 1  # the caller's own (after its challenge by the gateway) + 1
    offers = call.rtpengine_offers()
    assert len(offers) == 2 and offers[0]["flags"] == offers[1]["flags"]  # the browser's media on each branch
    assert call.statuses() == []
    net.reply(call, trunks["carrier"], 200)
    assert call.statuses() == [200] and call.established
    answers = [m for m in alice.inbox if not m.is_request and m.call_id == call.call_id and m.status != 407]
    assert {m.cseq_number for m in answers} == {first.cseq_number}, "the caller's replies have its own CSeq"
    # the caller's BYE reaches the carrier numbered after the INVITE the carrier saw, its 200 the caller's number
    gateway.use_worker(0)
    net.bye(call, "caller")
    (bye,) = [m for m in trunks["carrier"].inbox if m.is_request and m.method == "BYE"]
    (sent,) = [m for who, _, m in net.transcript if who == "alice" and m.is_request and m.method == "BYE"]
    assert bye.cseq_number == second.cseq_number + 1 != sent.cseq_number
    (ok,) = [m for m in alice.inbox if not m.is_request and m.cseq_method == "BYE"]
    assert ok.status == 200 and ok.cseq_number == sent.cseq_number
    assert_clean(gateway, net)


def test_a_401_without_qop_gets_an_authorization_in_the_realm_it_names(
    tmp_path: Path,
) -> None:
    ini = INI.replace("auth_realm=voip.backup.example", "").replace("0 = carrier backup", "0 = backup")
    gateway, net, trunks, _bob, call = phone_calls(tmp_path, "030123456", ini)
    nonce = net.challenge(call, trunks["backup"], 401, realm="198.51.100.20", qop="")
    second = invites(call)[1][1]
    creds = assert_answers(second, "Authorization", nonce, "198.51.100.20")
    assert "qop" not in creds and second.header("Proxy-Authorization") is None
    net.reply(call, trunks["backup"], 200)
    assert call.statuses() == [200]
    net.bye(call, "callee")  # the carrier's BYE goes to the caller as the carrier numbered it
    assert_clean(gateway, net)


def test_credentials_challenged_again_fail_over_and_the_next_trunk_gets_its_own(tmp_path: Path) -> None:
    gateway, net, trunks, _bob, call = phone_calls(tmp_path, "030123456")
    net.challenge(call, trunks["carrier"], 407, realm="carrier.example")
    net.challenge(call, trunks["carrier"], 407, realm="carrier.example")  # a wrong password, say
    assert [host for host, _ in invites(call)] == ["198.51.100.10", "198.51.100.10", "198.51.100.20"]
    logged_once(gateway, "trunk carrier challenged", call.call_id, "answer of auth_user=acme-gw again")  # and why
    third = invites(call)[2][1]
    assert third.header("Proxy-Authorization") is None and third.ruri == "sip:030123456@127.0.0.1"
    nonce = net.challenge(call, trunks["backup"], 407, realm="voip.backup.example")
    fourth = invites(call)[3][1]
    assert assert_answers(fourth, "Proxy-Authorization", nonce, "voip.backup.example")["username"] == BACKUP.user
    assert fourth.header_values("proxy-authorization") == [fourth.header("proxy-authorization")]  # its own only
    net.reply(call, trunks["backup"], 200)
    assert call.statuses() == [200]
    net.bye(call, "caller")
    assert_clean(gateway, net)


def test_the_last_trunk_refusing_the_credentials_gives_the_caller_503_not_the_challenge(tmp_path: Path) -> None:
    gateway, net, trunks, bob, call = phone_calls(
        tmp_path, "030123456", INI.replace("0 = carrier backup", "0 = carrier")
    )
    net.challenge(call, trunks["carrier"], 407, realm="carrier.example")
    net.challenge(call, trunks["carrier"], 407, realm="carrier.example")
    assert len(invites(call)) == 2
    finals = finals_of(bob, call)
    assert [m.first_line for m in finals] == ["SIP/2.0 503 Service Unavailable - Trunk Refused Credentials"]
    assert finals[0].cseq_number == invites(call)[0][1].cseq_number  # the caller's, not the second INVITE's
    logged_once(gateway, "trunk carrier challenged", "check its auth_user= and auth_password=")
    assert_clean(gateway, net)


def test_a_challenge_in_another_realm_than_auth_realm_is_not_answered_and_fails_over(tmp_path: Path) -> None:
    ini = INI.replace("auth_password=s3cret-Pa55", "auth_password=s3cret-Pa55 auth_realm=carrier.example")
    gateway, net, trunks, bob, call = phone_calls(tmp_path, "030123456", ini)
    net.challenge(call, trunks["carrier"], 407, realm="sip.elsewhere.example")
    logged_once(gateway, "in realm 'sip.elsewhere.example', and its auth_realm= is 'carrier.example'", call.call_id)
    assert [host for host, _ in invites(call)] == ["198.51.100.10", "198.51.100.20"], "the backup, unanswered"
    net.challenge(call, trunks["backup"], 407, realm="voip.backup.example.org")  # the backup's realm is pinned too
    logged_once(gateway, "trunk backup challenged", "its auth_realm= is 'voip.backup.example'")
    assert [m.first_line for m in finals_of(bob, call)] == [
        "SIP/2.0 503 Service Unavailable - Trunk Refused Credentials"
    ]
    assert_clean(gateway, net)


def test_without_auth_realm_the_realm_the_trunk_names_is_answered(tmp_path: Path) -> None:
    gateway, net, trunks, _bob, call = phone_calls(tmp_path, "030123456")  # carrier: no auth_realm=
    nonce = net.challenge(call, trunks["carrier"], 407, realm="Carrier Realm 7")
    assert_answers(invites(call)[1][1], "Proxy-Authorization", nonce, "Carrier Realm 7")
    net.reply(call, trunks["carrier"], 486)
    assert_clean(gateway, net)


def test_a_stale_nonce_fails_over_as_the_gateway_answers_a_trunk_once_a_call(tmp_path: Path) -> None:
    gateway, net, trunks, _bob, call = phone_calls(tmp_path, "030123456")
    net.challenge(call, trunks["carrier"], 407)
    net.challenge(call, trunks["carrier"], 407, stale=True)  # the nonce ran out: a second answer would repeat a CSeq
    assert [host for host, _ in invites(call)] == ["198.51.100.10"] * 2 + ["198.51.100.20"]
    logged_once(gateway, "trunk carrier challenged", "called the nonce of the gateway's answer stale")
    net.reply(call, trunks["backup"], 486)
    assert_clean(gateway, net)


@pytest.mark.parametrize(("algorithm", "qop"), [("SHA-256", "auth"), ("MD5", "auth-int"), ("SHA-512-256-sess", "")])
def test_the_fake_answers_the_algorithms_and_qop_uac_auth_does(tmp_path: Path, algorithm: str, qop: str) -> None:
    gateway, net, trunks, _bob, call = phone_calls(tmp_path, "030123456")
    nonce = net.challenge(call, trunks["carrier"], 401, algorithm=algorithm, qop=qop)
    retry = invites(call)[1][1]
    creds = digest(retry, "Authorization")
    assert creds["algorithm"] == algorithm.upper() and creds.get("qop", "") == qop and creds["nonce"] == nonce
    assert creds["response"] == digest_response(creds, PASSWORDS["acme-gw"], "INVITE", retry.body)
    net.reply(call, trunks["carrier"], 486)
    assert_clean(gateway, net)


def test_a_challenge_of_a_trunk_renamed_since_the_call_began_fails_over_and_says_so(tmp_path: Path) -> None:
    gateway, net, trunks, _bob, call = phone_calls(tmp_path, "030123456")
    (tmp_path / "gateway.ini").write_text(INI.replace("carrier =", "telco =").replace("= carrier", "= telco"))
    gateway.router.watcher.next_check = 0  # the files are looked at again now
    gateway.router.watcher.current()
    assert [line for line in gateway.errors if "rules loaded again" in line]
    gateway.errors.clear()  # the load says so
    net.challenge(call, trunks["carrier"], 407)
    logged_once(gateway, "trunk carrier challenged", "no auth_user= for it now", call.call_id)
    assert [host for host, _ in invites(call)] == ["198.51.100.10", "198.51.100.20"]
    assert all(m.status != 407 or "gateway.local" in str(m) for m in finals_of(_bob, call))
    net.reply(call, trunks["backup"], 486)
    assert_clean(gateway, net)


def test_two_accounts_at_one_address_are_two_trunks_of_a_chain(tmp_path: Path) -> None:
    ini = INI.replace("sip:198.51.100.20:5060", "sip:198.51.100.10:5060 domain=carrier.example")  # the same place
    gateway, net, trunks, _bob, call = phone_calls(tmp_path, "030123456", ini)
    carrier = trunks["backup"]  # one UA at that address: the network's last
    net.challenge(call, carrier, 407)
    net.challenge(call, carrier, 407)  # the first account refused
    logged_once(gateway, "trunk carrier challenged")
    nonce = net.challenge(call, carrier, 407, realm="voip.backup.example")
    assert assert_answers(invites(call)[3][1], "Proxy-Authorization", nonce, "voip.backup.example")["username"] == (
        BACKUP.user)  # fmt: skip
    net.reply(call, carrier, 486)
    assert_clean(gateway, net)


def test_a_trunk_without_credentials_after_one_with_them_is_not_answered_with_its_account(tmp_path: Path) -> None:
    gateway, net, trunks, bob, call = phone_calls(tmp_path, "+4930123")
    net.reply(call, trunks["carrier"], 503)
    bob.password = None  # it answers no challenge now: what reaches it stays as it came
    net.challenge(call, trunks["pbx"], 407, realm="carrier.example")  # its realm, even: the PBX has no account
    assert [host for host, _ in invites(call)] == ["198.51.100.10", "198.51.100.30"]
    assert all(invite.header("Proxy-Authorization") is None for _, invite in invites(call))
    finals = [m for m in bob.inbox if not m.is_request and m.call_id == call.call_id and m.status >= 200]
    assert [m.status for m in finals] == [407, 407], "a challenge the gateway has no account for goes to the caller"
    assert "carrier.example" in (finals[1].header("proxy-authenticate") or "")  # the PBX's, after the gateway's
    assert_clean(gateway, net)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("c = sip:192.0.2.1 auth_user=acme", "need both auth_user= and auth_password="),
        ("c = sip:192.0.2.1 auth_password=x", "need both auth_user= and auth_password="),
        ("c = sip:192.0.2.1 auth_user=a auth_password=b auth_realm=", "each once, with a value"),
        ("c = sip:192.0.2.1 auth_user=a auth_user=b auth_password=c", "each once"),
        ("c = sip:192.0.2.1 auth_user= a auth_password=b", "key=value without spaces"),
        ('c = sip:192.0.2.1 auth_user=a"b auth_password=b', "no quotes"),
        ("c = sip:192.0.2.1 password=b", "after the URI only domain=, auth_user="),
        ("c = sip:192.0.2.1,auth_user=a,auth_password=b", "a comma in 'sip:192.0.2.1,auth_user=a,auth_password=b'"),
    ],
)
def test_credentials_are_checked_when_gateway_ini_loads(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse("[trunks]\n" + line + "\n")


def test_the_realm_is_pinned_only_when_given_and_the_password_is_never_shown() -> None:
    settings = parse(
        "[trunks]\n"
        "a = sip:192.0.2.1:5070 domain=carrier.example:5080 auth_user=u auth_password=p#w=1\n"
        "b = sip:192.0.2.2;transport=tcp auth_user=u auth_password=pw\n"
        "c = sip:192.0.2.3 domain=carrier.example auth_user=u auth_password=pw auth_realm=Other\n"
        "[gateway]\nsip_destination = a b\n"
    )
    realms = {name: c.realm for name, c in settings.credentials.items()}
    assert realms == {"a": None, "b": None, "c": "Other", "default": None}
    assert settings.credentials["a"].password == "p#w=1"
    assert "p#w" not in repr(settings) and "p#w" not in repr(settings.credentials)


def test_a_challenge_uac_auth_cannot_compute_gives_the_caller_503_and_says_so(tmp_path: Path) -> None:
    gateway, net, trunks, bob, call = phone_calls(tmp_path, "030123456")
    net.challenge(call, trunks["carrier"], 407, algorithm="SHA-1")  # no digest algorithm OpenSIPS computes
    assert len(invites(call)) == 1
    assert [m.first_line for m in finals_of(bob, call)] == [
        "SIP/2.0 503 Service Unavailable - Trunk Challenge Unanswered"
    ]
    uac, cfg = gateway.errors
    assert "uac_auth" in uac and "could not answer the challenge of trunk sip:198.51.100.10:5060" in cfg
    assert call.call_id in cfg and "its algorithm or qop?" in cfg
    gateway.errors.clear()
    assert_clean(gateway, net)
