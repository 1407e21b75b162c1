"""A trunk's domain: gateway.ini ``[trunks] carrier = sip:198.51.100.10 domain=carrier.example``.

A carrier that routes by the request URI's host wants its own domain there, not ours.  A call the
gateway sends to such a trunk (a dial-plan line, ``to_trunk`` in a rule, ``sip_destination`` naming the
trunk) goes to the trunk's address with the request URI's host[:port] the trunk's ``domain=`` (the caller's
port gone, its user and parameters kept); a trunk without one keeps the request URI as the caller wrote it.
A call that fails over takes the next trunk's domain.  All through the fake host running opensips.cfg.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import pytest

from fakes.runtime import Gateway
from fakes.ua import Call, Network
from gateway import core
from gateway.policy import to_trunk
from gateway.settings import parse, split_domain
from tests.flowcheck import assert_clean
from tests.test_failover import gateway_of  # the failover recipe's rules, the trunks of the given ini

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "docs" / "recipes" / "trunk-domain"
DOMAINS = (RECIPE / "gateway.ini").read_text()
INI = DOMAINS.replace(" domain=carrier.example", "").replace(" domain=sip.backup.example:5070", "")


def asked(call: Call) -> List[Tuple[str, str]]:
    return [(endpoint.host, invite.ruri) for endpoint, invite in call.invites_sent()]


def test_a_trunk_with_a_domain_gets_it_in_the_request_uri_and_the_next_trunk_its_own(tmp_path: Path) -> None:
    gateway, net, carrier, backup = gateway_of(DOMAINS, tmp_path)
    bob = net.phone("bob")
    net.register(bob)
    # the caller wrote a port: the carrier's domain has none, so the request URI has none either
    call = net.invite(bob, "030123456", domain="127.0.0.1:5060")
    assert asked(call) == [("198.51.100.10", "sip:030123456@carrier.example")]
    gateway.use_worker(1)  # the failure route runs in another worker: the domain travels with the transaction
    net.reply(call, carrier, 503)
    assert asked(call)[1] == ("198.51.100.20", "sip:030123456@sip.backup.example:5070")
    net.reply(call, backup, 200)
    assert call.statuses() == [200] and call.established
    net.bye(call, "callee")
    assert_clean(gateway, net)


def test_a_rules_new_user_and_the_uris_parameters_stay_and_a_trunk_without_a_domain_keeps_ours(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.py"
    policy.write_text(
        "from gateway.policy import Decision, Request, to_trunk\n\n"
        "def route(request: Request, default: Decision) -> Decision:\n"
        "    if request.ruri_user.startswith('00'):\n"
        "        return to_trunk('carrier', '+' + request.ruri_user[2:])\n"
        "    if request.ruri_user.startswith('0'):\n"
        "        return to_trunk('plain')\n"
        "    return default\n"
    )
    settings = tmp_path / "gateway.ini"
    settings.write_text(DOMAINS.replace("[trunks]\n", "[trunks]\nplain = sip:198.51.100.30\n"))
    gateway = Gateway(files=(str(settings), str(policy)))
    net = Network(gateway)
    carrier = net.trunk("carrier", "sip:198.51.100.10:5060")
    plain = net.trunk("plain", "sip:198.51.100.30")
    bob = net.phone("bob")
    net.register(bob)
    call = net.invite(bob, "0044201234", domain="127.0.0.1;user=phone")
    assert asked(call) == [("198.51.100.10", "sip:+44201234@carrier.example;user=phone")]
    net.reply(call, carrier, 486)
    call = net.invite(bob, "030123456", domain="127.0.0.1:5060")
    assert asked(call) == [("198.51.100.30", "sip:030123456@127.0.0.1:5060")]
    net.reply(call, plain, 404)
    assert_clean(gateway, net)


def test_sip_destination_naming_a_trunk_takes_its_domain(tmp_path: Path) -> None:
    ini = DOMAINS.replace("[gateway]\n", "[gateway]\nsip_destination = carrier\ntrusted_sources = 10.0.0.9\n")
    gateway, net, carrier, _ = gateway_of(ini, tmp_path)
    bob = net.phone("bob")
    net.register(bob)
    call = net.invite(bob, "alice", domain="elsewhere.example")  # another domain: to sip_destination
    assert asked(call) == [("198.51.100.10", "sip:alice@carrier.example")]
    net.reply(call, carrier, 404)
    assert call.statuses() == [404]
    assert_clean(gateway, net)


def test_a_trunks_domain_is_checked_and_a_failover_chain_has_domains_throughout_or_not_at_all() -> None:
    settings = parse(DOMAINS)
    assert settings.trunk_domain("carrier") == "carrier.example" and settings.trunk_uri("carrier").endswith(":5060")
    for bad in ("domain=", "domain=carrier.example/x", "domain=a b", "host=carrier.example",
                "domain=a.example domain=b.example", "domain=carrier.example:port", "domain = carrier.example",
                "domain =carrier.example"):  # fmt: skip
        with pytest.raises(ValueError, match=r"\[trunks\] carrier"):
            parse(INI.replace("carrier = sip:198.51.100.10:5060", f"carrier = sip:198.51.100.10:5060 {bad}"))
    core.check_decision(to_trunk("carrier").or_trunk("backup"), settings)
    v6 = parse(INI.replace("carrier = sip:198.51.100.10:5060", "carrier = sip:198.51.100.10 domain=[2001:db8::1]:5070")
               .replace("0 = carrier backup", "0 = carrier").replace("+ = carrier backup", "+ = carrier"))  # fmt: skip
    assert split_domain(v6.trunk_domain("carrier") or "") == ("[2001:db8::1]", "5070")
    assert split_domain("carrier.example") == ("carrier.example", "") and v6.trunk_domain("backup") is None


def test_sip_destination_naming_several_trunks_fails_over_between_them(tmp_path: Path) -> None:
    """sip_destination = carrier backup: calls to other domains go to the carrier, then to the backup, each with
    its domain, as a [dialplan] line's."""
    ini = DOMAINS.replace("[gateway]\n", "[gateway]\nsip_destination = carrier backup\n")
    gateway, net, carrier, backup = gateway_of(ini, tmp_path)
    bob = net.phone("bob")
    net.register(bob)
    call = net.invite(bob, "alice", domain="elsewhere.example")
    net.reply(call, carrier, 503)
    assert asked(call) == [("198.51.100.10", "sip:alice@carrier.example"),
                           ("198.51.100.20", "sip:alice@sip.backup.example:5070")]  # fmt: skip
    net.reply(call, backup, 200)
    assert call.statuses() == [200]
    net.bye(call, "caller")
    assert_clean(gateway, net)
    settings = parse(ini)
    assert settings.destination_trunks == ("carrier", "backup")
    assert str(settings.destination) == "to trunk carrier, then backup"  # the names the operator gave
    uri = parse(INI.replace("[gateway]\n", "[gateway]\nsip_destination = sip:pbx.example\n"))
    assert uri.destination_trunks == () and str(uri.destination) == "to trunk default"  # sip_destination's URI
    for bad, reason in (("carrier spare", "not 'spare'"), ("carrier, sip:10.0.0.1", "not 'sip:10.0.0.1'")):
        with pytest.raises(ValueError, match=f"sip_destination must be a sip: URI or trunk names, {reason}"):
            parse(ini.replace("carrier backup\n", bad + "\n", 1))
    with pytest.raises(ValueError, match="sip_destination: a call fails over between trunks of one address family"):
        parse(INI.replace("[gateway]\n", "[gateway]\nsip_destination = carrier v6\n").replace(
            "[trunks]\n", "[trunks]\nv6 = sip:[2001:db8::6]\n"))  # fmt: skip
    for destination in ("carrier backup", "sip:pbx.example"):  # which one would to_trunk("default") be?
        with pytest.raises(ValueError, match="a trunk is named 'default'"):
            parse(ini.replace("[trunks]\n", "[trunks]\ndefault = sip:198.51.100.40\n").replace(
                "sip_destination = carrier backup", f"sip_destination = {destination}"))  # fmt: skip
    # a [dialplan] line may name default (sip_destination), checked as a chain with it; not when there is none
    with pytest.raises(ValueError, match=r"\[dialplan\] 0: a call fails over between trunks of one address family"):
        parse(DOMAINS.replace("[gateway]\n", "[gateway]\nsip_destination = sip:[2001:db8::7]\n").replace(
            "0 = carrier backup", "0 = carrier default"))  # fmt: skip
    with pytest.raises(ValueError, match=r"trunk 'default', not in \[trunks\] \(the name of sip_destination, which"):
        parse(DOMAINS.replace("0 = carrier backup", "0 = default"))
    chained = parse(ini.replace("0 = carrier backup", "0 = backup default"))
    assert (
        chained.tables.dialplan[0][1] == ("backup", "default") and chained.trunk_domain("default") == "carrier.example"
    )


def test_a_trunk_without_a_domain_after_one_with_gets_the_callers_own_back(tmp_path: Path) -> None:
    """carrier (domain=) then pbx (none): the pbx's branch has the request URI's host and port as the caller wrote
    them (the failure route's faked request has the request URI as it came) and its user as the rule made it (the
    failure route writes it again); pbx then carrier: the carrier's domain, the rule's user."""
    policy = tmp_path / "policy.py"
    policy.write_text(
        "from gateway.policy import Decision, Request, to_trunk\n\n"
        "def route(request: Request, default: Decision) -> Decision:\n"
        "    if request.ruri_user.startswith('00'):\n"
        "        return to_trunk('pbx', '+' + request.ruri_user[2:]).or_trunk('carrier')\n"
        "    return default\n"
    )
    settings = tmp_path / "gateway.ini"
    ini = DOMAINS.replace("0 = carrier backup", "0 = carrier pbx")  # the recipe's pbx has no domain=
    settings.write_text(ini.replace("[gateway]\n", "[gateway]\nsip_destination = carrier backup pbx\n"))
    gateway = Gateway(files=(str(settings), str(policy)))
    net = Network(gateway)
    carrier = net.trunk("carrier", "sip:198.51.100.10:5060")
    backup = net.trunk("backup", "sip:198.51.100.20:5060")
    pbx = net.trunk("pbx", "sip:198.51.100.30:5060")
    bob = net.phone("bob")
    net.register(bob)
    call = net.invite(bob, "030123456", domain="Gateway.Local:5060;user=phone")  # the dial plan: carrier, pbx
    gateway.use_worker(1)
    net.reply(call, carrier, 503)
    assert asked(call) == [("198.51.100.10", "sip:030123456@carrier.example;user=phone"),
                           ("198.51.100.30", "sip:030123456@Gateway.Local:5060;user=phone")]  # fmt: skip
    net.reply(call, pbx, 486)
    assert call.statuses() == [486]
    call = net.invite(bob, "alice", domain="elsewhere.example")  # sip_destination: carrier, backup, pbx
    net.reply(call, carrier, 500)
    net.reply(call, backup, 503)
    assert [ruri for _, ruri in asked(call)] == ["sip:alice@carrier.example", "sip:alice@sip.backup.example:5070",
                                                 "sip:alice@elsewhere.example"]  # fmt: skip
    net.reply(call, pbx, 404)
    call = net.invite(bob, "0044201234")  # the rule: pbx first (ours stays), then the carrier
    net.reply(call, pbx, 503)
    assert asked(call) == [
        ("198.51.100.30", "sip:+44201234@127.0.0.1"),
        ("198.51.100.10", "sip:+44201234@carrier.example"),
    ]
    net.reply(call, carrier, 404)
    assert_clean(gateway, net)


def test_a_trunk_named_twice_in_a_chain_under_two_names_is_asked_once(tmp_path: Path) -> None:
    """`default` is sip_destination's first trunk: `00 = default carrier` names the carrier twice."""
    ini = DOMAINS.replace("[gateway]\n", "[gateway]\nsip_destination = carrier backup\n").replace(
        "[dialplan]\n", "[dialplan]\n00 = default carrier\n"
    )
    gateway, net, carrier, _ = gateway_of(ini, tmp_path)
    bob = net.phone("bob")
    net.register(bob)
    call = net.invite(bob, "0044201234")
    net.reply(call, carrier, 503)
    assert len(call.invites_sent()) == 1 and call.statuses() == [500]  # the 503, relayed as 500
    assert_clean(gateway, net)


def test_an_ipv6_trunk_answers_and_hangs_up_through_the_gateway(tmp_path: Path) -> None:
    ini = INI.replace("[trunks]\n", "[trunks]\nv6 = sip:[2001:db8::30]:5060\n").replace("+ = carrier pbx", "+ = v6")
    gateway, net, _, _ = gateway_of(ini, tmp_path)
    v6 = net.trunk("v6", "sip:[2001:db8::30]:5060")
    bob = net.phone("bob")
    net.register(bob)
    call = net.invite(bob, "+4930123")
    net.reply(call, v6, 200)
    assert call.statuses() == [200] and call.established
    net.bye(call, "callee")
    assert_clean(gateway, net)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("c = sip:192.0.2.1 domain=carrier.example:99999", "domain= takes a host"),
        ("c = sip:192.0.2.1 domain=carrier.example:0", "domain= takes a host"),
        ("c = sip:192.0.2.1 domain=[:]", "domain= takes a host"),
        ("c = sip:192.0.2.1 domain=2001:db8::1", r"in brackets: \[2001:db8::1\]"),
        ("c = sip:192.0.2.1 domain=", "domain= takes a host"),
    ],
)
def test_a_domain_that_is_no_host_and_port_is_refused(line: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse(f"[trunks]\n{line}\n")


def test_sip_destination_is_one_uri_or_trunk_names() -> None:
    for text in ("sip:198.51.100.50 backup", "sip:198.51.100.50,backup"):
        with pytest.raises(ValueError, match="sip_destination is one sip: URI, or trunk names"):
            parse(f"[gateway]\nsip_destination = {text}\n[trunks]\nbackup = sip:192.0.2.2\n")
