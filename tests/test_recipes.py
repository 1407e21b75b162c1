"""README "Changing the routing": each recipe (docs/recipes/NAME: its gateway.ini and policy.py) through the
fake host running the cfg, as an operator would test his own change before it goes live.

These are also what a test of one's own rules looks like: load the files as OpenSIPS would
(``Gateway(files=(gateway_ini, policy_py))``), place calls with a ``Network`` of browsers and phones,
and ask each call where it went (``call.invites_sent()``, ``call.statuses()``,
``call.rtpengine_offers()``; ``net.nobody_answers()`` ends calls that went to a trunk, which is no
UA here).  ``tests.flowcheck.assert_clean`` then says nothing was left behind.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from fakes.runtime import Gateway
from fakes.trace import main as trace_main
from fakes.ua import Network
from tests.flowcheck import assert_clean

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "docs" / "recipes"
README = (ROOT / "README.md").read_text()


def files(name: str) -> Tuple[str, Optional[str]]:
    policy = RECIPES / name / "policy.py"
    return str(RECIPES / name / "gateway.ini"), str(policy) if policy.exists() else None


def recipe(name: str) -> Tuple[Gateway, Network]:
    gateway = Gateway(files=files(name))
    return gateway, Network(gateway)


def test_dial_plan_sends_numbers_to_their_trunks() -> None:
    _, net = recipe("dial-plan")
    alice = net.browser("alice")
    net.register(alice)
    for number, trunk in (("0044201234", ("198.51.100.20", 5060, "tcp")), ("+4930123", ("198.51.100.20", 5060, "tcp")),
                          ("030123456", ("198.51.100.10", 5060, "udp"))):  # fmt: skip
        call = net.invite(alice, number)
        endpoint, invite = call.invites_sent()[-1]
        assert (endpoint.host, endpoint.port, endpoint.proto) == trunk, number
        assert invite.ruri == f"sip:{number}@127.0.0.1"  # the request URI stays as dialled
        net.nobody_answers()  # no trunk here: the call ends with 408
    # a number the plan does not know is our own user's: nobody registered it
    assert net.invite(alice, "1234").statuses() == [404]
    # a caller of another domain reaches our users only: never a trunk through the dial plan
    stranger = net.phone("mallory", host="203.0.113.66")
    stranger.domain = "elsewhere.example"
    call = net.invite(stranger, "0044201234", domain="127.0.0.1")
    assert call.statuses() == [404]


def test_calls_to_trunks_and_to_users_in_turn_each_get_their_branchs_plan() -> None:
    """A call to a trunk writes only the plan of its one branch (a plain SIP contact's); the plans of the
    other kinds stay as the worker's last call to users left them.  In turn through one worker, calls to
    a browser, a SIP phone and the carrier each get the offer of their callee's kind, and the rule's
    transcode-PCMA is added to the carrier's only.  The caller is a SIP phone: a browser's offers toward
    SIP have transcode-PCMA already (each flag goes once)."""
    gateway, net = recipe("rtpengine-flags")
    bob, web, carol = net.phone("bob", nat=True), net.browser("webby"), net.phone("carol")
    net.registered(bob, web, carol)
    flags: Dict[str, List[str]] = {}
    for callee in ["webby", "0044201234", "carol"] * 3:
        call = net.invite(bob, callee)
        (offer,) = call.rtpengine_offers()
        assert flags.setdefault(callee, offer["flags"]) == offer["flags"], callee  # as the first such call's
        if callee.startswith("00"):
            net.nobody_answers()
        else:
            net.reply(call, web if callee == "webby" else carol, 200)
            net.bye(call, "caller")
    assert flags["0044201234"] == [*flags["carol"], "transcode-PCMA"] and flags["webby"] != flags["carol"]
    assert_clean(gateway, net)


def test_blocking_refuses_the_range_with_403() -> None:
    gateway, net = recipe("blocking")
    alice, bob = net.browser("alice"), net.phone("bob")
    net.registered(alice, bob)
    for number in ("0900123456", "0137777", "+19005551234", "19765550000"):
        assert net.invite(alice, number).statuses() == [403], number
    # %-escapes are undone before the prefixes compare (RFC 3261 19.1.4; the carrier would undo them): a trial
    # reached the carrier with these
    for number in ("%30900123456", "0%39%300123456", "%2B19005551234"):
        assert net.invite(alice, number).answers() == ["403 Forbidden - Blocked Number"], number
    call = net.invite(alice, "bob")
    assert call.call_id in bob.pending_invites
    net.reply(call, bob, 200)
    net.bye(call, "caller")
    assert_clean(gateway, net)


def test_headers_follow_the_callers_kind_and_one_is_taken_away() -> None:
    gateway, net = recipe("headers")
    alice, carol, bob = net.browser("alice"), net.phone("carol"), net.phone("bob")
    net.registered(alice, carol, bob)
    for caller, kind in ((alice, "webrtc"), (carol, "sip")):
        call = net.invite(caller, "bob", extra_headers=(("P-Preferred-Identity", "<sip:boss@127.0.0.1>"),))
        invite = bob.pending_invites[call.call_id]
        assert invite.header_values("x-caller-kind") == [kind]
        assert invite.header_values("p-preferred-identity") == []
        net.reply(call, bob, 200)
        net.bye(call, "caller")
    assert_clean(gateway, net)


def test_media_per_user_one_user_always_takes_the_media_proxy_and_the_office_never() -> None:
    gateway, net = recipe("media-per-user")
    carol, erin, dave = net.phone("carol"), net.phone("erin"), net.phone("dave", nat=True)
    net.registered(carol, erin, dave)
    proxied = []
    for caller, callee in ((carol, erin), (erin, carol), (dave, erin), (erin, dave)):
        call = net.invite(caller, callee.name)
        proxied.append(bool(call.rtpengine_offers()))
        net.reply(call, callee, 200)
        net.bye(call, "caller")
    # carol's calls, either way: always; the office's (dave is behind NAT): never; as the gateway would otherwise
    assert proxied == [True, True, False, False]
    assert_clean(gateway, net)


def test_rtpengine_flags_per_call() -> None:
    gateway, net = recipe("rtpengine-flags")
    alice, bob = net.browser("alice"), net.browser("bob")
    net.registered(alice, bob)
    call = net.invite(alice, "00442012345")
    (offer,) = call.rtpengine_offers()
    assert "transcode-PCMA" in offer["flags"] and offer.get("record-call") == "yes"
    # the browser's profile toward SIP has transcode-PCMA too: each flag once (a trial saw it twice)
    assert offer["flags"].count("transcode-PCMA") == 1 and len(set(offer["flags"])) == len(offer["flags"])
    assert offer["transport-protocol"] == "RTP/AVP"
    assert {(e.host, e.port) for e, _ in net.nobody_answers()} == {("198.51.100.30", 5060)}  # the carrier
    call = net.invite(alice, "bob")  # a browser: no A-law toward it, still recorded, still DTLS
    (offer,) = call.rtpengine_offers()
    assert "transcode-PCMA" not in offer["flags"] and offer.get("record-call") == "yes"
    assert offer["transport-protocol"] == "UDP/TLS/RTP/SAVPF"
    net.reply(call, bob, 200)
    net.bye(call, "caller")
    assert_clean(gateway, net)


def test_numbers_to_users_ring_who_owns_them() -> None:
    _, net = recipe("numbers-to-users")
    alice = net.browser("alice")
    carrier = net.phone("carrier", host="198.51.100.40")
    carrier.domain = "carrier.example"
    net.register(alice)
    call = net.invite(carrier, "+4930123450", domain="127.0.0.1")
    assert call.call_id in alice.pending_invites
    net.reply(call, alice, 200)
    net.bye(call, "callee")
    call = net.invite(carrier, "+4930123459", domain="127.0.0.1")
    endpoint, _ = call.invites_sent()[-1]
    assert (endpoint.host, endpoint.port) == ("198.51.100.41", 5060)
    net.nobody_answers()
    assert net.invite(carrier, "+4930123451", domain="127.0.0.1").statuses() == [404]  # bob: not registered


def test_e164_numbers_reach_the_carrier_as_it_wants_them_and_the_blocked_range_never() -> None:
    gateway, net = recipe("e164")
    alice, carol = net.browser("alice"), net.phone("carol")
    net.registered(alice, carol)
    for caller, dialled, sent in ((carol, "0301234567", "+49301234567"), (alice, "0044201234", "+44201234")):
        ((endpoint, invite),) = net.invite(caller, dialled).invites_sent()
        assert (endpoint.host, endpoint.port, invite.ruri) == ("198.51.100.30", 5060, f"sip:{sent}@127.0.0.1")
        net.nobody_answers()
    assert net.invite(carol, "0900123456").statuses() == [403]  # a national number, blocked before the rule
    call = net.invite(carol, "alice")  # users as ever
    assert call.call_id in alice.pending_invites
    net.reply(call, alice, 200)
    net.bye(call, "caller")
    assert_clean(gateway, net)


# -- the README shows these very files, and its tracer commands run ---------------------------


def snippets(name: str) -> List[str]:
    """The code blocks README.md shows for a recipe (under its "#### ... (docs/recipes/NAME)" heading)."""
    section = re.search(
        r"#### [^\n]*\(docs/recipes/" + re.escape(name) + r"\)\n(.*?)(?=\n#### |\n## |\Z)", README, re.S
    )
    assert section is not None, f"README.md has no recipe docs/recipes/{name}"
    return re.findall(r"```(?:ini|python)\n(.*?)```", section.group(1), re.S)


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.iterdir()))
def test_the_readme_shows_each_recipe_as_its_files_hold_it(name: str) -> None:
    texts = [Path(f).read_text() for f in files(name) if f is not None]
    for block in snippets(name):
        assert any(block.strip() in text for text in texts), block


@pytest.mark.parametrize(
    "command",
    [c for c in re.findall(r"^    (python3 -m fakes\.trace [^\n]*call [^\n]*)$", README, re.M) if " my/" not in c],
    ids=lambda c: c[-40:],
)
def test_the_readmes_trace_commands_run(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = command.split()[3:]
    assert trace_main(args) == 0
    out = capsys.readouterr().out
    assert "the INVITE went to" in out or "the caller got" in out
    # nothing logged as an error, but a trunk's challenge the gateway did not answer (what that command shows)
    assert all("! gateway: trunk " in line for line in out.splitlines() if "! " in line), out
