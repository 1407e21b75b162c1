"""The rules are read again while OpenSIPS runs: gateway.ini and policy.py, through the fake host.

Each worker looks at the two files at most once a second (loader.Watcher); these tests move its
clock by hand.  A good change routes the next call; a bad one is refused with its reason, logged
once, and the rules before it keep routing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

from fakes.runtime import Context, Endpoint, Gateway
from fakes.sipmsg import SipMessage
from fakes.ua import UA, Network
from tests.flowcheck import assert_clean

INI = """[gateway]
domains = 127.0.0.1
sip_destination = sip:198.51.100.99:5060
[trunks]
first = sip:198.51.100.10:5060
second = sip:198.51.100.20:5060
[dialplan]
00 = first
"""

POLICY = """from gateway.policy import reply

def route(request, default):
    if request.ruri_user.startswith("0900"):
        return reply(403, "{reason}")
    return default
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rig(tmp_path: Path) -> Tuple[Gateway, Network, Clock, Path, Path, UA]:
    ini, policy = tmp_path / "gateway.ini", tmp_path / "policy.py"
    ini.write_text(INI)
    policy.write_text(POLICY.format(reason="Blocked First"))
    gateway = Gateway(files=(str(ini), str(policy)), strict=False)
    clock = Clock()
    gateway.router.watcher.clock = clock
    gateway.router.watcher.next_check = clock.now + 1.0
    net = Network(gateway)
    alice = net.phone("alice")
    net.register(alice)
    return gateway, net, clock, ini, policy, alice


def write(path: Path, text: str) -> None:
    """A change the watcher sees: new content and a new modification time."""
    stamp = path.stat().st_mtime
    path.write_text(text)
    os.utime(path, (stamp + 5, stamp + 5))


def destination(gateway: Gateway, net: Network, alice: UA, user: str) -> Tuple[str, int]:
    """Where a call from alice to ``user`` went: a trunk's (host, port), or ("reply", code)."""
    start = len(gateway.events)
    call = net.invite(alice, user)
    finals = [m.status for m in alice.inbox if not m.is_request and m.call_id == call.call_id and m.status >= 300]
    if finals:
        return ("reply", finals[-1])
    sent = [e.data for e in gateway.events[start:] if e.kind == "send" and e.data[1].is_request]
    endpoint = sent[-1][0]
    gateway.timeout()  # the trunk never answers: the call ends (408) and leaves nothing
    return (endpoint.host, endpoint.port)


def test_a_changed_dial_plan_routes_the_next_call_within_a_second(tmp_path: Path) -> None:
    gateway, net, clock, ini, _policy, alice = rig(tmp_path)
    assert destination(gateway, net, alice, "0044123") == ("198.51.100.10", 5060)
    write(ini, INI.replace("00 = first", "00 = second"))
    assert destination(gateway, net, alice, "0044123") == ("198.51.100.10", 5060)  # not a second yet
    clock.now += 1.0
    assert destination(gateway, net, alice, "0044123") == ("198.51.100.20", 5060)
    assert any("rules loaded again" in e for e in gateway.errors)


def test_a_changed_policy_routes_the_next_call(tmp_path: Path) -> None:
    gateway, net, clock, _ini, policy, alice = rig(tmp_path)
    assert destination(gateway, net, alice, "0900123") == ("reply", 403)
    write(policy, POLICY.replace('"0900"', '"0901"').format(reason="Blocked Now"))
    clock.now += 1.5
    assert destination(gateway, net, alice, "0901999") == ("reply", 403)
    assert destination(gateway, net, alice, "0900123") == ("reply", 404)  # the built-in: nobody registered


@pytest.mark.parametrize(
    ("which", "broken", "reason"),
    [
        ("policy", "def route(request, default)\n    return default\n", "SyntaxError"),
        ("policy", "def route(request):\n    return None\n", "needs a function route(request, default)"),
        ("policy", "def route(request, default):\n    return request.header('X-Nope')\n", "fail on a sample call"),
        ("ini", "[gateway]\ndomains = 127.0.0.1\n[dialplan]\n00 = nowhere\n", "not in [trunks]"),
        ("ini", "[gateway\n", "no section headers"),
        # an empty or cut-short file: its defaults would route with no digest check and no [blocked] (a trial)
        ("ini", "", "no [gateway] section"),
        ("ini", "; nothing but a comment\n", "no [gateway] section"),
        ("ini", "[trunks]\ncarrier = sip:198.51.100.10:5060\n", "no [gateway] section"),
    ],
)
def test_a_broken_file_is_refused_once_and_the_old_rules_keep_routing(
    tmp_path: Path, which: str, broken: str, reason: str
) -> None:
    gateway, net, clock, ini, policy, alice = rig(tmp_path)
    write(policy if which == "policy" else ini, broken)
    for _ in range(3):
        clock.now += 1.5
        assert destination(gateway, net, alice, "0044123") == ("198.51.100.10", 5060)
        assert destination(gateway, net, alice, "0900123") == ("reply", 403)
    refused = [e for e in gateway.errors if "refused" in e]
    assert len(refused) == 1 and reason in refused[0], refused  # logged once, with the reason
    assert gateway.python_failures == 0
    # mended: taken at the next look
    write(policy if which == "policy" else ini, POLICY.format(reason="Mended") if which == "policy" else INI)
    clock.now += 1.5
    assert destination(gateway, net, alice, "0900123") == ("reply", 403)
    assert sum("rules loaded again" in e for e in gateway.errors) == 1


def test_a_settings_file_gone_is_refused_and_the_old_rules_keep_routing(tmp_path: Path) -> None:
    """A deleted (or renamed) gateway.ini is no file of defaults: they would turn the digest check off."""
    gateway, net, clock, ini, _policy, alice = rig(tmp_path)
    ini.unlink()
    for _ in range(2):
        clock.now += 1.5
        assert destination(gateway, net, alice, "0900123") == ("reply", 403)
    refused = [e for e in gateway.errors if "refused" in e]
    assert len(refused) == 1 and "does not exist" in refused[0], refused
    ini.write_text(INI)
    clock.now += 1.5
    assert destination(gateway, net, alice, "0044123") == ("198.51.100.10", 5060)
    assert sum("rules loaded again" in e for e in gateway.errors) == 1


def test_new_trusted_sources_reach_the_cfgs_copy(tmp_path: Path) -> None:
    """pike's check route searches the trusted sources in a $var the router wrote, and keeps its last
    answer: both are written again when gateway.ini changes."""
    gateway, _net, clock, ini, _policy, _alice = rig(tmp_path)
    trunk = Endpoint("udp", "198.51.100.77", 5060)

    def exempt() -> bool:
        options = SipMessage("OPTIONS sip:127.0.0.1 SIP/2.0", [("Via", "SIP/2.0/UDP 198.51.100.77;branch=z9hG4bKp")])
        return gateway.pike_exempt(Context(gateway, "request", options, trunk))

    assert not exempt()  # and kept as the answer for the trunk, the last source
    write(ini, INI.replace("domains = 127.0.0.1", "domains = 127.0.0.1\ntrusted_sources = 198.51.100.77"))
    clock.now += 1.5
    gateway.receive(SipMessage("OPTIONS sip:127.0.0.1 SIP/2.0", [
        ("Via", "SIP/2.0/UDP 198.51.100.77;branch=z9hG4bKq"), ("From", "<sip:t@198.51.100.77>;tag=1"),
        ("To", "<sip:127.0.0.1>"), ("Call-ID", "q"), ("CSeq", "1 OPTIONS"), ("Content-Length", "0"),
    ]), trunk)  # fmt: skip
    assert gateway.script_vars.get("gw_trusted") == " 198.51.100.77 "
    assert exempt()


def test_without_changes_the_files_are_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway, net, clock, _ini, _policy, alice = rig(tmp_path)
    loads: List[str] = []
    from gateway import loader

    monkeypatch.setattr(loader, "load_rules", lambda *a: loads.append("load") or None)
    for _ in range(5):
        clock.now += 2.0
        destination(gateway, net, alice, "0044123")
    assert loads == []
    calls_left = gateway.sessions(), gateway.dialogs
    assert calls_left == ([], {})
    assert_clean_enough(gateway)


def assert_clean_enough(gateway: Gateway) -> None:
    assert gateway.python_failures == 0 and gateway.transactions == {}


def test_the_shipped_files_load() -> None:
    """What a site starts from: opensips/gateway.ini and pyscripts/policy.py, as mod_init loads them."""
    gateway = Gateway()
    net = Network(gateway)
    alice, bob = net.phone("alice"), net.phone("bob")
    net.registered(alice, bob)
    call = net.invite(alice, "bob")
    net.reply(call, bob, 200)
    net.bye(call, "caller")
    assert_clean(gateway, net)


def test_a_policy_saved_twice_within_one_second_at_the_same_length_runs_as_last_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python's import would take __pycache__'s bytecode when the source's whole-second mtime and size match:
    the loader compiles the file's bytes itself, and writes no bytecode (OpenSIPS's interpreter writes it)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    gateway, net, clock, _ini, policy, alice = rig(tmp_path)
    stamp = policy.stat().st_mtime
    first, second = POLICY.format(reason="Blocked Twoa"), POLICY.format(reason="Blocked Twob")
    assert len(first) == len(second)
    policy.write_text(first)
    os.utime(policy, (stamp + 5, stamp + 5))
    clock.now += 1.5
    assert destination(gateway, net, alice, "0900123") == ("reply", 403)
    policy.write_text(second)
    os.utime(policy, (stamp + 5.4, stamp + 5.4))  # the same second, the same size
    clock.now += 1.5
    call = net.invite(alice, "0900123")
    reasons = [m.first_line for m in alice.inbox if not m.is_request and m.call_id == call.call_id]
    assert reasons[-1] == "SIP/2.0 403 Blocked Twob"
    assert not (tmp_path / "__pycache__").exists()


#: A rule whose one branch names a trunk gateway.ini lacks: the sample call of check() (a browser calling bob)
#: does not take that branch, so the file loads; the wider sample calls find it.
TYPO = """from gateway.policy import to_trunk

def route(request, default):
    if request.ruri_user in ("112", "110"):
        return to_trunk("secnd").or_trunk("first")
    return default
"""


def test_a_rule_that_fails_on_other_sample_calls_is_taken_and_said_once(tmp_path: Path) -> None:
    """Not refused (such calls may never come), but logged with the load, once, with the calls and the reason."""
    gateway, net, clock, _ini, policy, alice = rig(tmp_path)
    write(policy, TYPO)
    clock.now += 1.5
    assert destination(gateway, net, alice, "0044123") == ("198.51.100.10", 5060)  # the new rules route
    assert destination(gateway, net, alice, "0900123") == ("reply", 404)
    (said,) = gateway.warnings  # a warning, not an error: nothing failed yet
    assert said.startswith("gateway: warning: the rules from ")
    assert "calls to 112, 110 (from a browser and a SIP phone): Refused: the rules answered 'to trunk secnd" in said
    assert "no trunk named 'secnd'" in said and not any("refused" in e for e in gateway.errors)
    assert f"(returned at {policy}:5 in route)" in said  # TYPO's line that returned it
    clock.now += 1.5
    destination(gateway, net, alice, "0044123")
    assert len(gateway.warnings) == 1  # the files did not change: not said again
    gateway.errors.clear()
    assert destination(gateway, net, alice, "112") == ("reply", 500)  # what the line warned of
    assert gateway.python_failures == 1


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).parent.parent / "docs" / "recipes").iterdir()))
def test_the_recipes_fail_on_no_sample_call(name: str) -> None:
    from gateway.loader import doubts, load_rules

    folder = Path(__file__).parent.parent / "docs" / "recipes" / name
    assert doubts(load_rules(str(folder / "gateway.ini"), str(folder / "policy.py"))) == []


def test_with_a_sip_destination_the_sample_calls_reach_another_domain_too() -> None:
    """A rule that fails only for calls to other domains (sip_destination's) is said at load like the others."""
    from gateway.loader import doubts, fixed_rules
    from gateway.policy import Decision, Request, to_trunk
    from gateway.settings import parse

    def route(request: Request, default: Decision) -> Decision:
        return default if request.ruri_domain == "127.0.0.1" else to_trunk("pbxx")

    ini = "[gateway]\ndomains = 127.0.0.1\nsip_destination = pbx\n[trunks]\npbx = sip:10.0.0.5\n"
    (said,) = doubts(fixed_rules(parse(ini), route))
    assert said.startswith("calls to bob@elsewhere.example (from a browser and a SIP phone): Refused: ")
    assert "no trunk named 'pbxx'" in said
    # without a sip_destination such calls get 404 before any rule: no sample call goes there
    assert doubts(fixed_rules(parse(ini.replace("sip_destination = pbx", "")), route)) == []


def test_a_file_whose_rule_raises_on_the_sample_call_is_refused_with_the_line_that_raised(tmp_path: Path) -> None:
    from gateway.loader import load_rules

    policy = tmp_path / "policy.py"
    policy.write_text("from gateway.policy import to_user\n\ndef route(request, default):\n"
                      "    return default.with_header('From', 'x')\n")  # fmt: skip
    with pytest.raises(ValueError, match=rf"From is one of the headers .* \(at {policy}:4 in route\)"):
        load_rules(None, str(policy))
