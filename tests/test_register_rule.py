"""The operator's register(request, default) in policy.py: a rule for REGISTERs.

A REGISTER that passed the digest check (or came from a trusted source) comes to register() with what a call's
rule sees (To/From users and domains, source, transport, the caller's kind and NAT, [policy] headers); it answers
``default`` (the registration is saved) or ``reply(code, reason)``.  The cfg asks it in route[register_rule],
the last action of the REGISTER's list, in place of save("location"): for each REGISTER, also where the cfg keeps
the rest of the REGISTER's answer (route[gw_register]).  Without a register() nothing of this runs.  All through
the fake host running opensips.cfg.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Tuple

import pytest

from fakes.runtime import Gateway
from fakes.ua import Network
from gateway.loader import load_rules
from gateway.policy import Kind, Request

KIOSKS = """from gateway.policy import Decision, Kind, Request, reply

SEEN = []


def route(request: Request, default: Decision) -> Decision:
    return default


def register(request: Request, default: Decision) -> Decision:
    SEEN.append(request)
    if request.to_user.startswith("kiosk") and request.caller is not Kind.BROWSER:
        return reply(403, "Forbidden - Browsers Only")
    return default
"""
INI = "[gateway]\nauth_realm = gateway.local\ndomains = 127.0.0.1 gateway.local\n[policy]\nheaders = User-Agent\n"


def gateway_with(tmp: Path, policy: str = KIOSKS, ini: str = INI) -> Tuple[Gateway, Network, List[Request]]:
    (tmp / "policy.py").write_text(policy)
    (tmp / "gateway.ini").write_text(ini)
    gateway = Gateway(files=(str(tmp / "gateway.ini"), str(tmp / "policy.py")))
    register: Any = gateway.router.rules.register
    seen: List[Request] = register.__globals__["SEEN"] if register else []
    # the load's sample REGISTERs came first (loader.sample_registers): a user no site has, from TEST-NET-1
    assert {(r.to_user, r.source_ip) for r in seen} <= {("load-check", "192.0.2.10")}
    seen.clear()
    return gateway, Network(gateway), seen


def test_a_rule_refuses_a_phones_registration_and_keeps_a_browsers(tmp_path: Path) -> None:
    gateway, net, seen = gateway_with(tmp_path)
    browser, phone = net.browser("kiosk1"), net.phone("kiosk2")
    assert net.register(browser).status == 200
    refused = net.register(phone)
    assert refused.first_line == "SIP/2.0 403 Forbidden - Browsers Only"
    # asked once for each REGISTER that passed the digest check (the challenged ones never reach it)
    assert [(r.method, r.to_user, r.caller, r.transport) for r in seen] == [
        ("REGISTER", "kiosk1", Kind.BROWSER, "wss"), ("REGISTER", "kiosk2", Kind.SIP, "udp")]  # fmt: skip
    assert seen[1].source_ip == phone.endpoint.host and seen[1].source_port == phone.endpoint.port
    assert seen[1].to_domain == "127.0.0.1" and seen[1].caller_behind_nat is False
    assert dict(seen[1].headers) == {"User-Agent": None}  # [policy] headers: this phone sends none
    assert not seen[0].has_sdp and seen[0].caller_behind_nat
    # the refused phone has no binding: a call to it finds nobody; the browser's rings
    caller = net.phone("alice")
    net.register(caller)
    assert net.invite(caller, "kiosk2").statuses() == [404]
    ringing = net.invite(caller, "kiosk1")
    assert [ua.name for ua in net.callees(ringing)] == ["kiosk1"]
    net.reply(ringing, browser, 486)
    assert gateway.errors == [] and gateway.python_failures == 0


def test_every_register_asks_the_rule_also_where_the_cfg_keeps_the_rest(tmp_path: Path) -> None:
    gateway, net, seen = gateway_with(tmp_path)
    phone = net.phone("bob")
    for _ in range(3):  # the same facts within the second: route[gw_register] takes its kept answer
        assert net.register(phone).status == 200
    assert len(seen) == 3
    execs = [e.text for e in gateway.events if e.kind == "exec"]
    planned = [t for t in execs if 'python_exec("on_register",' in t]
    asked = [t for t in execs if 'python_exec("on_register_rule",' in t]
    assert len(asked) == 3 and len(planned) < 6, (planned, asked)  # 6 REGISTERs came, 3 with credentials


def test_without_a_register_rule_a_register_saves_as_before_and_never_asks(tmp_path: Path) -> None:
    gateway, net, _ = gateway_with(tmp_path, KIOSKS.split("\n\ndef register")[0] + "\n")
    assert gateway.router.rules.register is None
    assert net.register(net.phone("kiosk2")).status == 200
    assert not any("register_rule" in e.text for e in gateway.events)


def test_a_rule_that_raises_costs_that_register_a_500_and_says_where(tmp_path: Path) -> None:
    raising = '    if request.to_user == "bob":\n        raise KeyError("x")\n'
    policy = KIOSKS.replace("    SEEN.append(request)\n", raising)
    gateway, net, _ = gateway_with(tmp_path, policy)
    assert net.register(net.phone("bob")).status == 500
    assert gateway.python_failures == 1
    (line,) = [e for e in gateway.errors if "register rule route failed" in e]
    assert "KeyError" in line and f"{tmp_path / 'policy.py'}:" in line
    assert net.register(net.phone("carol")).status == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return to_trunk('carrier')", r"register\(\) answers default .* or reply\(code, reason\), not 'to trunk"),
        ("return default.with_header('X-A', 'b')", r"register\(\) answers default"),
        ("return None", r"register\(\) answered None, not a Decision"),
        ("return default.drop()", r"not 'to the registered contacts.*' \(default, changed\)"),
        ("return reply(401, 'Unauthorized')", r"not a final reply a rule may send \(400-699 but 401 and 407\)"),
        ("return reply(302, 'Moved')", r"not a final reply a rule may send"),
    ],
)
def test_a_rule_that_answers_what_a_register_cannot_take_is_refused_when_it_loads(
    tmp_path: Path, body: str, message: str
) -> None:
    (tmp_path / "gateway.ini").write_text(INI + "[trunks]\ncarrier = sip:198.51.100.10\n")
    (tmp_path / "policy.py").write_text(
        "from gateway.policy import reply, to_trunk\n\ndef route(request, default):\n    return default\n\n"
        f"def register(request, default):\n    {body}\n"
    )
    with pytest.raises(ValueError, match=message):
        load_rules(str(tmp_path / "gateway.ini"), str(tmp_path / "policy.py"))


def test_a_register_that_is_no_function_of_two_is_refused(tmp_path: Path) -> None:
    (tmp_path / "gateway.ini").write_text(INI)
    (tmp_path / "policy.py").write_text("def route(request, default):\n    return default\n\nregister = 3\n")
    with pytest.raises(ValueError, match=r"register must be a function register\(request, default\)"):
        load_rules(str(tmp_path / "gateway.ini"), str(tmp_path / "policy.py"))


def test_a_deregistration_never_asks_the_rule_and_a_user_agent_reaches_it(tmp_path: Path) -> None:
    unsupported = (
        '    if request.header("User-Agent") == "Zoiper 2.10":\n        return reply(403, "Forbidden - Old")\n'
    )
    _gateway, net, seen = gateway_with(tmp_path, KIOSKS.replace("    SEEN.append(request)\n", "    SEEN.append("
                                                                "request)\n" + unsupported))  # fmt: skip
    phone = net.phone("bob")
    assert net.register(phone).status == 200
    zoiper = [("User-Agent", "Zoiper 2.10")]
    assert net.register(phone, extra_headers=zoiper).first_line == "SIP/2.0 403 Forbidden - Old"
    assert seen[-1].header("User-Agent") == "Zoiper 2.10"
    asked = len(seen)
    assert net.register(phone, expires=0, extra_headers=zoiper).status == 200  # removing its binding: allowed
    assert len(seen) == asked, "a de-registration is no rule's business"
    caller = net.phone("alice")
    net.register(caller)
    assert net.invite(caller, "bob").statuses() == [404], "the binding is gone"


@pytest.mark.parametrize(
    ("expires", "contact", "removes"),
    [("0", "<sip:bob@10.0.0.1>", True), ("3600", "<sip:bob@10.0.0.1>;expires=0", True), ("", "*", True),
     ("0", "<sip:bob@10.0.0.1>;expires=60", False), ("", "<sip:bob@10.0.0.1>", False),
     ("0", '<sip:a@10.0.0.1>;expires="0", <sip:b@10.0.0.1>;expires=30', False)],
)  # fmt: skip
def test_what_is_a_deregistration(expires: str, contact: str, removes: bool) -> None:
    from gateway.core import unregisters

    assert unregisters(expires, contact) is removes
