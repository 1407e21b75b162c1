"""README "Changing the routing": each recipe (docs/recipes/NAME: its gateway.ini and policy.py) through the
fake host running the cfg, as an operator would test his own change before it goes live.

These are also what a test of one's own rules looks like: load the files as OpenSIPS would
(``Gateway(files=(gateway_ini, policy_py))``), place calls, and look at where they went.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from fakes.runtime import Endpoint, Gateway
from fakes.sipmsg import SipMessage
from fakes.trace import main as trace_main
from fakes.ua import UA, Call, Network
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


def sent_invite(gateway: Gateway, call: Call) -> Tuple[Endpoint, SipMessage]:
    """Where the call's (last) INVITE went, and the INVITE as it went."""
    found = [e.data for e in gateway.events if e.kind == "send" and e.data[1].is_request
             and e.data[1].method == "INVITE" and e.data[1].call_id == call.call_id]  # fmt: skip
    assert found, "the INVITE went nowhere"
    endpoint, invite = found[-1]
    return endpoint, invite


def final(ua: UA, call: Call) -> List[int]:
    return [m.status for m in ua.inbox if not m.is_request and m.call_id == call.call_id and m.status >= 200
            and m.status not in (401, 407)]  # fmt: skip


def ng_offers(gateway: Gateway, call: Call) -> List[dict]:  # type: ignore[type-arg]
    commands = [e.data[0] for e in gateway.events if e.kind == "rtpengine"]
    return [c for c in commands if c["command"] == "offer" and c["call-id"] == call.call_id]


def test_dial_plan_sends_numbers_to_their_trunks() -> None:
    gateway, net = recipe("dial-plan")
    alice = net.browser("alice")
    net.register(alice)
    for number, trunk in (("0044201234", ("198.51.100.20", 5060, "tcp")), ("+4930123", ("198.51.100.20", 5060, "tcp")),
                          ("030123456", ("198.51.100.10", 5060, "udp"))):  # fmt: skip
        call = net.invite(alice, number)
        endpoint, invite = sent_invite(gateway, call)
        assert (endpoint.host, endpoint.port, endpoint.proto) == trunk, number
        assert invite.ruri == f"sip:{number}@127.0.0.1"  # the request URI stays as dialled
        gateway.timeout()
    # a number the plan does not know is our own user's: nobody registered it
    assert final(alice, net.invite(alice, "1234")) == [404]
    # a caller of another domain reaches our users only: never a trunk through the dial plan
    stranger = net.phone("mallory", host="203.0.113.66")
    stranger.domain = "elsewhere.example"
    call = net.invite(stranger, "0044201234", domain="127.0.0.1")
    assert final(stranger, call) == [404]


def test_blocking_refuses_the_range_with_403() -> None:
    gateway, net = recipe("blocking")
    alice, bob = net.browser("alice"), net.phone("bob")
    net.registered(alice, bob)
    for number in ("0900123456", "0137777", "+19005551234", "19765550000"):
        assert final(alice, net.invite(alice, number)) == [403], number
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
        proxied.append(bool(ng_offers(gateway, call)))
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
    (offer,) = ng_offers(gateway, call)
    assert "transcode-PCMA" in offer["flags"] and offer.get("record-call") == "yes"
    assert offer["transport-protocol"] == "RTP/AVP"
    gateway.timeout()
    assert {(e.host, e.port) for e, _ in net.undelivered} == {("198.51.100.30", 5060)}  # the carrier: not here
    net.undelivered.clear()
    call = net.invite(alice, "bob")  # a browser: no A-law toward it, still recorded, still DTLS
    (offer,) = ng_offers(gateway, call)
    assert "transcode-PCMA" not in offer["flags"] and offer.get("record-call") == "yes"
    assert offer["transport-protocol"] == "UDP/TLS/RTP/SAVPF"
    net.reply(call, bob, 200)
    net.bye(call, "caller")
    assert_clean(gateway, net)


def test_numbers_to_users_ring_who_owns_them() -> None:
    gateway, net = recipe("numbers-to-users")
    alice = net.browser("alice")
    carrier = net.phone("carrier", host="198.51.100.40")
    carrier.domain = "carrier.example"
    net.register(alice)
    call = net.invite(carrier, "+4930123450", domain="127.0.0.1")
    assert call.call_id in alice.pending_invites
    net.reply(call, alice, 200)
    net.bye(call, "callee")
    call = net.invite(carrier, "+4930123459", domain="127.0.0.1")
    endpoint, _ = sent_invite(gateway, call)
    assert (endpoint.host, endpoint.port) == ("198.51.100.41", 5060)
    gateway.timeout()
    assert final(carrier, net.invite(carrier, "+4930123451", domain="127.0.0.1")) == [404]  # bob: not registered


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
    assert "! " not in out  # nothing logged as an error
