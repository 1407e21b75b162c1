"""What the real OpenSIPS shows the Python router, read by the probe (rig/probe/opensips_probe.py) around each route.

These are the host facts pyscripts/gateway/host.py and the fake rely on; each
assertion names the one it checks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List

from gateway.host import CONTENT_TYPE, REQUEST_FACTS
from rig import sipp

from .conftest import Rig, need
from .sipcalls import call, registered, settle


def records(rig: Rig, call_id: str, route: str) -> List[Dict[str, Any]]:
    return [r for r in rig.probes(call_id) if r["route"] == route]


def test_values_in_each_route_of_an_answered_call(gateway: Rig, work: Path) -> None:
    need("sipp")
    caller = registered(gateway, work, "hostalice", transport="tcp")
    callee = registered(gateway, work, "hostbob", transport="udp")
    outcome = call(
        gateway, work, caller, callee,
        sipp.Call((("expect_reinvite",), ("pause", 300), ("reinvite", "sendrecv"), ("bye",))),
        sipp.Call((("pause", 500), ("reinvite", "sendonly"), ("expect_reinvite",), ("expect_bye",))),
    )  # fmt: skip
    settle(gateway, outcome.call_id)
    requests = records(gateway, outcome.call_id, "request")
    in_dialog = records(gateway, outcome.call_id, "in-dialog")
    replies = records(gateway, outcome.call_id, "reply")
    invite = requests[0]
    # $socket_in(proto): the transport the request came in on
    assert invite["before"]["$socket_in(proto)"] == "tcp"
    # python_exec's argument is formatted by the core: the facts, the head's one a line and the others after
    # tabs (the cfg's "\t" is a tab), the sender's strings hex-encoded ({s.encode.hexa}), a null variable as <null>
    layout = re.compile("([\n\t])")  # the separators kept: the same in the same places as the cfg's format
    names, values = layout.split(REQUEST_FACTS), layout.split(invite["facts"])
    assert values[1::2] == names[1::2]
    facts = dict(zip(names[::2], values[::2]))
    assert facts["$rm"] == "INVITE" and facts["$socket_in(proto)"] == "tcp" and facts["$hdrcnt(Contact)"] == "1"
    # behind NAT (a 127.x Contact); the SDP not tested (so not private)
    assert facts["$var(gw_nat)"] == "1" and facts["$var(gw_private)"] == "0"
    assert int(facts["$cl"]) > 100  # the SDP's length
    assert bytes.fromhex(facts["$(rU{s.encode.hexa})"]).decode() == callee.user
    assert bytes.fromhex(facts["$(rd{s.encode.hexa})"]).decode() == "127.0.0.1"
    assert bytes.fromhex(facts[CONTENT_TYPE]).decode().lower() == "application/sdp"
    # the router's answer: the actions in $var(gw_do), run by the cfg (a NATed SIP caller, no digest auth here)
    assert invite["after"]["$var(gw_do)"].split(",") == [
        "nat", "rport", "fix_contact", "lookup", "dialog", "record_route", "keep_record", "relay_call",
    ]  # fmt: skip
    # the branch route ran the plan of the contact's kind with its $T_branch_idx: the record's ";b0=..."
    initial_replies = [r for r in replies if r["before"]["$avp(gw_tx)"] == "<null>"]
    assert initial_replies[0]["before"]["$bf"] == "NATED"
    assert ";b0=mS1" in initial_replies[0]["before"]["$dlg_val(gw)"]
    # onreply route of the initial INVITE: branch index and the dialog value
    assert {r["before"]["$rs"] for r in initial_replies} >= {"180", "200"}
    assert all(r["before"]["$T_branch_idx"] == "0" for r in initial_replies)
    # the 200's answer: the record after it, which the cfg then stores (new_record; seen below, in-dialog)
    answer = initial_replies[-1]["after"]
    assert "new_record" in answer["$var(gw_reply)"].split(",") and answer["$var(gw_reply_record)"].endswith(";a=0")
    assert answer["$var(gw_reply_kept)"] == "1"  # a reply with a body over UDP: the worker may take it again
    # $DLG_dir in onreply routes: <null> on 3.6.8; on 4.0.1 the reply's own direction (the router reads neither):
    # upstream from the callee (its source port, facts[7], is the one the initial INVITE's replies came from)
    dirs = [r["before"]["$DLG_dir"] for r in replies]
    if gateway.gw.version.startswith("3."):
        assert set(dirs) == {"<null>"}
    else:
        callee_port = initial_replies[0]["facts"].split("\n")[7]
        from_callee = [r["facts"].split("\n")[7] == callee_port for r in replies]
        assert dirs == ["upstream" if up else "downstream" for up in from_callee] and not all(from_callee)
    # in-dialog requests go to on_in_dialog only, after the cfg's loose_route: $dlg_val and $DLG_dir set
    assert all(r["before"]["$tt"] == "<null>" for r in requests)
    matched = next(r for r in in_dialog if r["before"]["$rm"] == "INVITE")
    assert matched["before"]["$DLG_dir"] == "upstream"  # the callee re-INVITEd
    assert matched["before"]["$dlg_val(gw)"].endswith(";a=0")
    # $avp(gw_tx) stored in the request route is seen in the onreply route (tm onreply_avp_mode = 1)
    exchange = matched["after"]["$avp(gw_tx)"]
    assert exchange.startswith("s=S1;r=S1")
    assert any(r["before"]["$avp(gw_tx)"] == exchange for r in replies)
    assert [r["before"]["$DLG_dir"] for r in in_dialog if r["before"]["$rm"] == "INVITE"] == ["upstream", "downstream"]
    # phones only, the answer through rtpengine: the cfg serves the ACKs and the BYE itself (do_quiet_bye),
    # the BYE with rtpengine's delete
    assert [r["before"]["$rm"] for r in in_dialog] == ["INVITE", "INVITE"]
    assert outcome.ops()[-1] == "delete" and outcome.ops().count("delete") == 1
    # every route returned a non-zero verdict
    assert all(r["rc"] not in (0, None) for r in gateway.probes(outcome.call_id))


def test_failure_route_sees_the_dialog_value(gateway: Rig, work: Path) -> None:
    need("sipp")
    caller = registered(gateway, work, "failalice")
    callee = registered(gateway, work, "failbob")
    outcome = call(gateway, work, caller, callee, sipp.Call(outcome="busy"), sipp.Call(outcome="busy"))
    settle(gateway, outcome.call_id)
    (failure,) = records(gateway, outcome.call_id, "failure")
    assert failure["before"]["$dlg_val(gw)"].startswith("c=S1;o=e;p=0;b0=mS1")
    assert failure["before"]["$T_branch_idx"] == "0"
    assert outcome.ops() == ["offer", "delete"]  # the failure route deleted the call; no per-branch delete
