"""Contract: the ng commands the real OpenSIPS sends for our flag strings equal what fakes/rtpengine.py builds.

A SIP->SIP call with a re-INVITE runs through the real gateway; the relay in
front of rtpengine captured every command.  For each one the fake's
``ng_command`` gets the same operation, the flag string the router's table
gives for that step, and a message with the same Call-ID, tags, Via branch
and body; everything but the SDP must come out identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from fakes.rtpengine import ng_command
from fakes.sipmsg import SipMessage
from gateway.model import Leg, Step
from gateway.profiles import UNTRUSTED_SIP_SOURCE, Profiles
from rig import sipp

from .conftest import Rig, need
from .sipcalls import call, registered, settle


def message(is_request: bool, call_id: str, from_tag: str, to_tag: str, body: str) -> SipMessage:
    first = "INVITE sip:x@127.0.0.1 SIP/2.0" if is_request else "SIP/2.0 200 OK"
    headers = [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKcontract"),
        ("From", f"<sip:a@127.0.0.1>;tag={from_tag}"),
        ("To", "<sip:b@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")),
        ("Call-ID", call_id),
        ("CSeq", "1 INVITE"),
    ]
    return SipMessage(first, headers, body.encode())


def test_real_ng_commands_match_the_fake(gateway: Rig, work: Path) -> None:
    need("sipp")
    caller = registered(gateway, work, "ngalice")
    callee = registered(gateway, work, "ngbob")
    steps = (("pause", 500), ("reinvite", "sendonly"), ("pause", 300), ("bye",))
    outcome = call(gateway, work, caller, callee, sipp.Call(steps), sipp.Call((("expect_reinvite",), ("expect_bye",))))
    settle(gateway, outcome.call_id)
    profiles = Profiles()
    nat = " " + UNTRUSTED_SIP_SOURCE  # both loopback phones are NATed for nathelper (127/8 is private to it)
    sent: List[Dict[str, Any]] = [e.sent for e in outcome.commands]
    caller_tag = sent[0]["from-tag"]
    callee_tag = sent[1]["to-tag"]
    expected = [
        # (op, flags, in a request?, From tag, To tag) as the router and the message give them
        ("offer", profiles[(Leg.SIP, Leg.SIP, Step.OFFER)] + nat + " via-branch-param=br0", True, caller_tag, ""),
        ("answer", profiles[(Leg.SIP, Leg.SIP, Step.ANSWER)] + nat + " via-branch-param=br0", False, caller_tag,
         callee_tag),
        ("offer", profiles[(Leg.SIP, Leg.SIP, Step.REOFFER)] + nat, True, caller_tag, callee_tag),
        ("answer", profiles[(Leg.SIP, Leg.SIP, Step.ANSWER)] + nat, False, caller_tag, callee_tag),
        ("delete", "", True, caller_tag, callee_tag),
    ]  # fmt: skip
    assert [s["command"] for s in sent] == [e[0] for e in expected]
    for real, (op, flags, is_request, from_tag, to_tag) in zip(sent, expected):
        msg = message(is_request, outcome.call_id, from_tag, to_tag, str(real.get("sdp", "")))
        fake = ng_command(op, flags or None, msg, "127.0.0.1")
        without_sdp = {k: v for k, v in real.items() if k != "sdp"}
        assert {k: v for k, v in fake.items() if k != "sdp"} == without_sdp, op
