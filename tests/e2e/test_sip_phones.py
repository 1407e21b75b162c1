"""SIP phones (SIPp over UDP and TCP) register and call each other through the real gateway.

Media: the caller plays a G.711 pcap, the callee echoes; rtpengine's counters
(queried just before the delete) show packets from both legs.  After each call
rtpengine holds no session and OpenSIPS no live dialog.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rig import mi, sipp
from rig.gateway import FR_INV_TIMEOUT

from .conftest import Rig, need
from .sipcalls import EXPECT_HOLD_AND_BYE, HOLD_AND_BYE, call, media_both_ways, new_call_id, registered, settle

pytestmark = pytest.mark.usefixtures("have_sipp")


@pytest.fixture
def have_sipp() -> None:
    need("sipp")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_registration_keeps_the_branch_flags(gateway: Rig, work: Path, transport: str) -> None:
    # nathelper counts 127.0.0.0/8 as private (RFC 1122): a 127.x Contact is "behind NAT";
    # a host name is not an address, so "localhost" registers as a plain SIP phone.
    nated = registered(gateway, work, "nat", transport, contact_host="127.0.0.1")
    plain = registered(gateway, work, "plain", transport, contact_host="localhost")
    table = mi.contacts(gateway.gw.mi_url)
    (nat_contact,) = table[nated.user]
    (plain_contact,) = table[plain.user]
    assert nat_contact["Cflags"] == "NATED"
    assert nat_contact["Received"].startswith("sip:127.0.0.1:")
    assert nat_contact["Socket"].startswith(f"{transport}:127.0.0.1:")
    assert plain_contact["Cflags"] == ""
    assert plain_contact["Contact"] == plain.contact
    assert "Received" not in plain_contact or not plain_contact["Received"]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_call_with_media_hold_resume_and_caller_hangs_up(gateway: Rig, work: Path, transport: str) -> None:
    caller = registered(gateway, work, "alice", transport)
    callee = registered(gateway, work, "bob", transport)
    outcome = call(gateway, work, caller, callee, sipp.Call(HOLD_AND_BYE), sipp.Call(EXPECT_HOLD_AND_BYE))
    assert outcome.ops() == ["offer", "answer", "offer", "answer", "offer", "answer", "delete"]
    packets = media_both_ways(outcome.commands, outcome.call_id)
    assert len(packets) == 2, packets
    # re-INVITE answers use the exchange kept in $avp(gw_tx) (no per-branch via-branch)
    assert [e.sent.get("via-branch") for e in outcome.commands[2:6]] == [None] * 4
    settle(gateway, outcome.call_id)


def test_callee_holds_resumes_and_hangs_up(gateway: Rig, work: Path) -> None:
    caller = registered(gateway, work, "carol")
    callee = registered(gateway, work, "dave")
    outcome = call(
        gateway, work, caller, callee,
        sipp.Call(EXPECT_HOLD_AND_BYE),
        sipp.Call((("pause", 1000), ("reinvite", "sendonly"), ("pause", 300), ("reinvite", "sendrecv"),
                   ("pause", 300), ("bye",))),
    )  # fmt: skip
    assert outcome.ops() == ["offer", "answer", "offer", "answer", "offer", "answer", "delete"]
    # the callee's re-offer goes toward the caller: from-tag is the callee's tag
    reoffer = outcome.commands[2]
    assert reoffer.sent["from-tag"] == outcome.commands[1].sent["to-tag"]
    media_both_ways(outcome.commands, outcome.call_id)
    settle(gateway, outcome.call_id)


def test_cancel_before_answer(gateway: Rig, work: Path) -> None:
    caller = registered(gateway, work, "erin")
    callee = registered(gateway, work, "frank")
    outcome = call(
        gateway, work, caller, callee, sipp.Call(outcome="cancel", ring_ms=500), sipp.Call(outcome="noanswer")
    )
    assert outcome.ops()[0] == "offer" and outcome.ops()[-1] == "delete"
    settle(gateway, outcome.call_id)


def test_no_answer_times_out_with_408(gateway: Rig, work: Path) -> None:
    caller = registered(gateway, work, "jill")
    callee = registered(gateway, work, "kent")
    started = time.monotonic()
    outcome = call(gateway, work, caller, callee, sipp.Call(outcome="noanswer"), sipp.Call(outcome="noanswer"))
    # tm's timer, not the caller, ended it (its timer ticks whole seconds: up to one early)
    assert time.monotonic() - started >= FR_INV_TIMEOUT - 1
    assert outcome.ops() == ["offer", "delete"]  # the failure route deleted the call
    settle(gateway, outcome.call_id)


def test_busy(gateway: Rig, work: Path) -> None:
    caller = registered(gateway, work, "gina")
    callee = registered(gateway, work, "hank")
    outcome = call(gateway, work, caller, callee, sipp.Call(outcome="busy"), sipp.Call(outcome="busy"))
    assert outcome.ops()[0] == "offer" and "delete" in outcome.ops()
    settle(gateway, outcome.call_id)


def test_unregistered_user_gets_404_and_leaves_nothing(gateway: Rig, work: Path) -> None:
    caller = registered(gateway, work, "ivan")
    ghost = sipp.Phone("nobody-registered-here")
    scenario = sipp.Scenario("uac404")
    scenario.send(
        """INVITE sip:[service]@[domain] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[caller]@[domain]>;tag=[pid]nf
To: <sip:[service]@[domain]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:[caller]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0
"""
    )
    scenario.recv("404")
    call_id = new_call_id("uac404")
    run = sipp.run(scenario.xml(), work, "uac404", caller, gateway.sip, service=ghost.user, timeout=15, call_id=call_id)
    assert run.wait() == 0, run.errors()
    assert call_id in (work / "uac404.messages.log").read_text()  # the INVITE went out under it
    assert gateway.relay.commands(call_id) == []  # no media proxy for a call that goes nowhere
    settle(gateway, call_id)


def test_a_nated_phone_calls_a_plain_one_through_rtpengine_in_two_python_execs(gateway: Rig, work: Path) -> None:
    """The plain callee's branch runs the plan the router made with the INVITE ($var(gw_to_plain)): the
    cfg offers with the plan's flags and the branch's index, and adds the branch to the call record;
    the ACK and the BYE are the cfg's too (do_quiet_bye).  Python runs for the INVITE and the 200
    only, and the media flows both ways."""
    caller = registered(gateway, work, "planalice")  # a 127.x Contact: behind NAT for nathelper
    callee = registered(gateway, work, "planbob", contact_host="localhost")  # a plain SIP phone
    outcome = call(gateway, work, caller, callee, sipp.Call((("pause", 1000), ("bye",))), sipp.Call((("expect_bye",),)))
    assert outcome.ops() == ["offer", "answer", "delete"]
    offer, answer = outcome.commands[0].sent, outcome.commands[1].sent
    assert offer.get("via-branch") == answer.get("via-branch") == "br0"
    assert offer.get("transport-protocol") == "RTP/AVP" and "SIP-source-address" in str(offer.get("flags"))
    packets = media_both_ways(outcome.commands, outcome.call_id)
    assert len(packets) == 2, packets
    routes = [r["route"] for r in gateway.probes(outcome.call_id)]
    assert routes == ["request", "reply"], routes
    (reply,) = [r for r in gateway.probes(outcome.call_id) if r["route"] == "reply"]
    assert reply["before"]["$dlg_val(gw)"] == "c=S1;o=e;p=0;b0=mS0"  # the cfg's own part: ";b0=mS0"
    settle(gateway, outcome.call_id)
