"""Trunk failover: a call to a trunk that fails goes on to the next trunk of its decision.

The decision carries the trunks to try next (``to_trunk("carrier").or_trunk("backup")``, or a [dialplan]
line naming several); the request route leaves their URIs in the transaction ($avp(gw_failover)), and
when every branch failed, failure_route[gw_failure] asks the router, which answers with the next trunk
when tm's final reply is one of gateway.ini's ``failover_on``.  All of it through the fake host running
opensips.cfg: the failure route's new branch, its branch route, the media of each branch.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import pytest

from fakes.runtime import Gateway
from fakes.ua import UA, Call, Network
from gateway.policy import reply, to_trunk, to_user
from gateway.settings import parse
from tests.flowcheck import assert_clean

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "docs" / "recipes" / "failover"
INI = (RECIPE / "gateway.ini").read_text()


def gateway_of(ini: str = INI, tmp: Path = Path()) -> Tuple[Gateway, Network, UA, UA]:
    """The recipe's files (or ``ini`` with its policy.py), a network with both trunks in it."""
    settings = tmp / "gateway.ini"
    settings.write_text(ini)
    gateway = Gateway(files=(str(settings), str(RECIPE / "policy.py")))
    net = Network(gateway)
    trunks = parse(ini).tables.trunks
    return gateway, net, net.trunk("carrier", trunks["carrier"]), net.trunk("backup", trunks["backup"])


def trunks_asked(call: Call) -> List[Tuple[str, str]]:
    return [(endpoint.host, invite.ruri) for endpoint, invite in call.invites_sent()]


def test_a_carriers_503_sends_the_call_to_the_backup_which_answers(tmp_path: Path) -> None:
    gateway, net, carrier, backup = gateway_of(tmp=tmp_path)
    alice = net.browser("alice")
    net.register(alice)
    call = net.invite(alice, "030123456")
    assert call.call_id in carrier.pending_invites
    gateway.use_worker(1)  # the 503 reaches another worker: its $vars hold nothing of this call
    net.reply(call, carrier, 503)
    # the same request URI, the backup's address; the caller sees none of the carrier's failure
    assert trunks_asked(call) == [("198.51.100.10", "sip:030123456@127.0.0.1"),
                                  ("198.51.100.20", "sip:030123456@127.0.0.1")]  # fmt: skip
    assert call.statuses() == []
    offers = call.rtpengine_offers()
    assert len(offers) == 2, "each trunk's branch has its own offer (the first one's session was deleted)"
    assert offers[1]["flags"] == offers[0]["flags"]  # both trunks' branches: a plain SIP contact's plan
    assert offers[0]["via-branch"] != offers[1]["via-branch"]
    net.reply(call, backup, 200)
    assert call.statuses() == [200] and call.established
    gateway.use_worker(0)
    net.bye(call, "caller")
    assert_clean(gateway, net)


def test_busy_is_the_callees_answer_not_the_trunks_failure(tmp_path: Path) -> None:
    gateway, net, carrier, backup = gateway_of(tmp=tmp_path)
    bob = net.phone("bob")
    net.register(bob)
    call = net.invite(bob, "+4930123456")
    net.reply(call, carrier, 486)
    assert call.statuses() == [486]
    assert backup.pending_invites == {}
    assert len(call.invites_sent()) == 1
    assert_clean(gateway, net)


def test_a_trunk_that_never_answers_times_out_into_the_next_and_the_last_failure_reaches_the_caller(
    tmp_path: Path,
) -> None:
    gateway, net, carrier, backup = gateway_of(tmp=tmp_path)
    bob = net.phone("bob")
    net.register(bob)
    call = net.invite(bob, "030123456")
    carrier.pending_invites.clear()  # it never answers: tm's own 408
    net.nobody_answers()
    assert call.call_id in backup.pending_invites and call.statuses() == []
    net.reply(call, backup, 503)  # the last trunk fails too: the caller gets its reply, once
    assert call.statuses() == [500]  # a proxy passes 503 on as 500 (RFC 3261 16.7; msg_translator.c)
    assert len(call.invites_sent()) == 2
    assert_clean(gateway, net)


def test_a_trunk_that_rang_until_tm_gave_up_reached_the_callee_so_no_other_trunk_rings(tmp_path: Path) -> None:
    """tm's 408 fails over only when the trunk sent nothing at all (t_local_replied("branch")): a callee whose
    phone rang through the carrier until fr_inv_timeout is not rung again through the backup."""
    gateway, net, carrier, backup = gateway_of(tmp=tmp_path)
    bob = net.phone("bob")
    net.register(bob)
    # first a carrier that is down, in the same worker: its failure fails over (and leaves that worker's $vars)
    call = net.invite(bob, "030123456")
    carrier.pending_invites.clear()
    net.nobody_answers()
    net.reply(call, backup, 200)
    net.bye(call, "caller")
    call = net.invite(bob, "030123456")
    net.reply(call, carrier, 180)
    carrier.pending_invites.clear()
    net.nobody_answers()
    assert backup.pending_invites == {} and len(call.invites_sent()) == 1
    assert call.statuses() == [408]
    assert_clean(gateway, net)


def test_a_rule_orders_the_trunks_its_own_way(tmp_path: Path) -> None:
    gateway, net, carrier, backup = gateway_of(tmp=tmp_path)
    bob = net.phone("bob")
    net.register(bob)
    call = net.invite(bob, "0800123456")  # the recipe's rule: the backup first
    net.reply(call, backup, 500)
    net.reply(call, carrier, 200)
    assert [host for host, _ in trunks_asked(call)] == ["198.51.100.20", "198.51.100.10"]
    assert call.statuses() == [200]
    net.bye(call, "callee")
    assert_clean(gateway, net)


def test_a_caller_who_gave_up_is_not_sent_on_even_where_487_would_fail_over(tmp_path: Path) -> None:
    """failover_on may name 4xx: the failure route still sends no new branch for a cancelled call."""
    gateway, net, carrier, backup = gateway_of(INI.replace("408 500 502 503 504", "4xx 5xx"), tmp_path)
    bob = net.phone("bob")
    net.register(bob)
    assert net.invite(bob, "nobody").statuses() == [404]  # this worker's $var(gw_code) holds a reply's code now
    call = net.invite(bob, "030123456")
    net.cancel(call)  # the carrier answers the CANCEL and its INVITE with 487
    assert backup.pending_invites == {}
    assert call.statuses() == [200, 487]  # the CANCEL's, the INVITE's: no other reply of the failure route's
    assert_clean(gateway, net)
    # the same reply without a CANCEL does fail over
    call = net.invite(bob, "030123456")
    net.reply(call, carrier, 487)
    assert call.call_id in backup.pending_invites
    net.reply(call, backup, 200)
    net.bye(call, "caller")
    assert_clean(gateway, net)


def test_failover_on_and_the_dial_plans_trunks_are_checked() -> None:
    assert parse(INI).failover_on == frozenset({408, 500, 502, 503, 504})
    assert parse("[gateway]\nfailover_on = 6xx\n").failover_on == frozenset(range(600, 700))
    assert 503 in parse("").failover_on and 486 not in parse("").failover_on
    for bad in ("busy", "200", "7xx"):
        with pytest.raises(ValueError, match="failover_on"):
            parse(f"[gateway]\nfailover_on = {bad}\n")
    with pytest.raises(ValueError, match="names trunk 'spare', not in"):
        parse(INI.replace("0 = carrier backup", "0 = carrier spare"))


def test_only_a_trunk_fails_over_and_to_trunks_of_its_own_family() -> None:
    from gateway import core

    decision = to_trunk("carrier").or_trunk("backup")
    assert decision.failover == ("backup",) and str(decision) == "to trunk carrier, then backup"
    assert decision.or_trunk("backup") is decision and decision.or_trunk("carrier") is decision  # each once
    assert str(to_trunk("carrier", "+4930123").or_trunk("backup")) == "to trunk carrier as +4930123, then backup"
    for other in (to_user(), reply(404, "Not Found")):
        with pytest.raises(ValueError, match="only a call to a trunk"):
            other.or_trunk("backup")
    v6 = INI.replace("[trunks]\n", "[trunks]\nv6 = sip:[2001:db8::1]:5060\n")
    with pytest.raises(ValueError, match=r"\[dialplan\] 0: a call fails over between trunks of one address family"):
        parse(v6.replace("0 = carrier backup", "0 = carrier v6"))
    settings = parse(v6)
    core.check_decision(decision, settings)
    with pytest.raises(core.Refused, match="one address family"):
        core.check_decision(to_trunk("carrier").or_trunk("v6"), settings)
    with pytest.raises(core.Refused, match="no trunk named 'spare'"):
        core.check_decision(to_trunk("carrier").or_trunk("spare"), settings)
