"""The tracer: the command an engineer runs before deploying a change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fakes.scenarios import SCENARIOS
from fakes.trace import main, run


def test_each_scenario_traces_to_a_clean_end() -> None:
    for name in SCENARIOS:
        lines = run(name)
        assert lines[0].startswith(f"=== {name}:")
        assert "rtpengine sessions left: 0; dialogs left: 0" in lines[-1] or any(
            "rtpengine sessions left: 0; dialogs left: 0" in line for line in lines
        )
        assert not any("undelivered" in line or line.strip().startswith("!") for line in lines)


def test_a_trace_shows_functions_flags_and_rtpengine_commands() -> None:
    text = "\n".join(run("web-to-sip"))
    assert "actions: ws, nat, fix_register, www_auth, webrtc_contact, save\n      setflag('SRC_WS') -> 1" in text
    assert "rtpengine_offer('RTP/AVP ICE=remove DTLS=off" in text
    assert "ng offer: transport-protocol=RTP/AVP" in text
    assert "relay_call" in text and "t_on_branch('gw_branch') -> 1" in text
    assert "gateway -> bob(phone): INVITE" in text and "[SDP RTP/AVP]" in text
    assert "gateway -> alice(browser): SIP/2.0 200 OK  [SDP UDP/TLS/RTP/SAVPF ICE DTLS mux]" in text


def test_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--table"]) == 0
    assert "web->sip   offer" in capsys.readouterr().out
    assert main(["--list"]) == 0
    assert set(SCENARIOS) <= set(capsys.readouterr().out.split())
    assert main(["no-such-scenario"]) == 2


def test_the_module_runs_as_documented() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fakes.trace", "forking"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "=== forking:" in out and "rtpengine sessions left: 0" in out


def test_a_call_whose_rules_fail_exits_1_and_a_file_that_does_not_import_2(tmp_path: Path) -> None:
    raising = tmp_path / "raising.py"
    raising.write_text("def route(request, default):\n    if request.ruri_user == '666':\n        raise KeyError(1)\n"
                       "    return default\n")  # fmt: skip
    assert main(["--policy", str(raising), "call", "browser:alice", "666"]) == 1
    assert main(["--policy", str(raising), "call", "browser:alice", "phone:bob"]) == 0
    broken = tmp_path / "broken.py"
    broken.write_text("def route(request, default)\n    return default\n")
    assert main(["--policy", str(broken), "call", "browser:alice", "0044"]) == 2


def test_an_ad_hoc_call_from_an_address_meets_the_rules_that_read_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--from-address: the caller sends from there, and a rule reading request.source_ip sees it; the log
    line of a rule that raises names its line."""
    policy = tmp_path / "by_source.py"
    policy.write_text(
        "import ipaddress\nfrom gateway.policy import reply\n\n"
        "def route(request, default):\n"
        "    if ipaddress.ip_address(request.source_ip) in ipaddress.ip_network('203.0.113.0/24'):\n"
        "        return reply(480, 'Branch Office Closed')\n"
        "    if request.ruri_user == '666':\n"
        "        raise KeyError(request.source_ip)\n"
        "    return default\n"
    )
    assert main(["--policy", str(policy), "call", "--from-address", "203.0.113.7", "phone:carol", "phone:bob"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("=== call phone:carol -> phone:bob from 203.0.113.7\n")
    assert "the caller got 480" in out
    assert main(["--policy", str(policy), "call", "phone:carol", "phone:bob"]) == 0
    assert "the INVITE went to bob(phone)" in capsys.readouterr().out
    assert main(["--policy", str(policy), "call", "--from-address", "198.51.100.77", "phone:carol", "666"]) == 1
    out = capsys.readouterr().out
    assert f"KeyError: '198.51.100.77' (at {policy}:8 in route)" in out
    assert "  the rules decided: route() raised KeyError: '198.51.100.77' (the caller gets 500)\n" in out


def test_a_call_nobody_answers_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """A trunk is no UA in a trace: the caller's 408 is explained, and ACKed."""
    dial_plan = Path(__file__).resolve().parent.parent / "docs" / "recipes" / "dial-plan" / "gateway.ini"
    assert main(["--settings", str(dial_plan), "call", "browser:alice", "0044201234"]) == 0
    out = capsys.readouterr().out
    assert "the INVITE went to tcp:198.51.100.20:5060" in out
    assert "nobody answered (--no-answer, --trunk NAME=180, or a trunk or URI not given with --trunk: no UA" in out
    assert "alice(browser) -> gateway: ACK" in out


def test_trunks_given_answer_and_a_failing_one_hands_the_call_to_the_next(capsys: pytest.CaptureFixture[str]) -> None:
    recipe = Path(__file__).resolve().parent.parent / "docs" / "recipes" / "failover"
    files = ["--settings", str(recipe / "gateway.ini"), "--policy", str(recipe / "policy.py"), "call"]
    assert main([*files, "--trunk", "carrier=503", "--trunk", "backup=200", "phone:carol", "0301234567"]) == 0
    out = capsys.readouterr().out
    assert "the rules decided: to trunk carrier, then backup" in out
    assert "the INVITE went to carrier(trunk) (branch 0:" in out
    assert "the INVITE went to backup(trunk) (branch 1:" in out
    assert "backup(trunk) -> gateway: SIP/2.0 200" in out and "the caller got" not in out
    assert main([*files, "--trunk", "carrier=503", "--trunk", "backup=503", "phone:carol", "0301234567"]) == 0
    assert "the caller got 500 " in capsys.readouterr().out  # the backup's 503, as a proxy passes it on
    assert main([*files, "--trunk", "carrier=486", "phone:carol", "0301234567"]) == 0
    out = capsys.readouterr().out
    assert "the caller got 486 " in out and "the INVITE went to backup" not in out  # busy: the callee's answer
    # a trunk not given is nobody there: tm's timer ends its branch, and the next trunk answers
    assert main([*files, "--trunk", "backup=200", "phone:carol", "0301234567"]) == 0
    out = capsys.readouterr().out
    assert "backup(trunk) -> gateway: SIP/2.0 200 OK" in out and "dialogs left: 0" in out
    assert "the caller got" not in out
    # a trunk that rings until tm gives up reached the callee: no failover; a trunk's own 408 is no timeout of tm's
    assert main([*files, "--trunk", "carrier=180", "--trunk", "backup=200", "phone:carol", "0301234567"]) == 0
    out = capsys.readouterr().out
    assert "  the caller got" not in out and "so the caller got 408 when tm timed out" in out
    assert "has no final reply (provisional replies only): tm's own 408" in out and "backup(trunk) ->" not in out
    assert main([*files, "--trunk", "carrier=408", "--trunk", "backup=200", "phone:carol", "0301234567"]) == 0
    out = capsys.readouterr().out
    assert "the caller got 408 Request Timeout" in out and "tm timed out" not in out
    assert main([*files, "--trunk", "carrier=busy", "phone:carol", "0301234567"]) == 2
    assert main([*files, "--trunk", "nosuch=200", "phone:carol", "0301234567"]) == 2
    assert "no trunk named 'nosuch' in gateway.ini [trunks] (its trunks: backup, carrier)" in capsys.readouterr().err


def test_an_ad_hoc_call_carries_the_headers_given_and_says_what_the_rules_decided(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--header puts a header in the caller's INVITE, for rules that read one ([policy] headers); the trace
    says what the rules answered, or that they were not asked, and a refusal's reason phrase."""
    settings = tmp_path / "gateway.ini"
    settings.write_text(
        "[gateway]\ndomains = 127.0.0.1\n[trunks]\nacme = sip:198.51.100.50:5060\n"
        "[blocked]\nprefixes = 0900\n[policy]\nheaders = X-Tenant\n"
    )
    policy = tmp_path / "tenants.py"
    policy.write_text(
        "from gateway.policy import to_trunk\n\n"
        "def route(request, default):\n"
        "    return to_trunk('acme') if request.header('X-Tenant') == 'acme' else default\n"
    )
    files = ["--settings", str(settings), "--policy", str(policy)]
    assert main([*files, "call", "--header", "X-Tenant: acme", "phone:carol", "0301234567"]) == 0
    out = capsys.readouterr().out
    assert "  the rules decided: to trunk acme\n  the INVITE went to udp:198.51.100.50:5060" in out
    assert main([*files, "call", "phone:carol", "phone:bob"]) == 0
    out = capsys.readouterr().out
    assert "the rules decided: to the registered contacts (default: the gateway's, unchanged)" in out
    assert main([*files, "call", "--header", "X-Tenant: acme", "phone:carol", "0900123"]) == 0
    out = capsys.readouterr().out
    assert "the rules were not asked" in out and "the caller got 403 Forbidden - Blocked Number" in out
    assert main([*files, "call", "--header", "no colon", "phone:carol", "0900123"]) == 2
    # a refused answer: the rule's line that returned it (through the tracer's own wrapper), said once
    policy.write_text(policy.read_text().replace("to_trunk('acme')", "to_trunk('acne')"))
    assert main([*files, "call", "--header", "X-Tenant: acme", "phone:carol", "0301234567"]) == 1
    out = capsys.readouterr().out
    assert f"no trunk named 'acne' in gateway.ini [trunks] (its trunks: acme) (returned at {policy}:4 in route)" in out
    assert out.count("the rules decided: to trunk acne") == 1, out


def test_an_ad_hoc_call_registers_more_parties_and_the_first_that_rings_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--also: a user's second device, a forwarding target.  A branch the rules' callee() dropped is said
    plainly, not as a fault."""
    policy = tmp_path / "frank.py"
    policy.write_text(
        "from gateway.policy import Kind, to_user\n\n"
        "def route(request, default):\n"
        "    return to_user('heidi') if request.ruri_user == 'grace' else default\n\n"
        "def callee(request, callee, decision):\n"
        "    return decision.drop() if callee.kind is Kind.BROWSER and request.ruri_user == 'frank' else decision\n"
    )
    assert main(["--policy", str(policy), "call", "--also", "phone:frank", "phone:carol", "browser:frank"]) == 0
    out = capsys.readouterr().out
    assert "      branch 0 dropped by the branch route: tm sends it nothing\n" in out
    assert "  the rules decided: for browser contacts behind NAT, callee(): no branch (drop)\n" in out
    assert "the INVITE went to frank(phone)" in out and "the INVITE went to frank(browser)" not in out
    assert "frank(phone) -> gateway: SIP/2.0 200 OK" in out and "dialogs left: 0" in out
    assert main(["--policy", str(policy), "call", "--also", "browser:heidi", "phone:carol", "grace"]) == 0
    out = capsys.readouterr().out
    assert "the rules decided: to the registered contacts of heidi\n  the INVITE went to heidi(browser)" in out
    assert main(["--policy", str(policy), "call", "--also", "heidi", "phone:carol", "grace"]) == 2


def test_a_loads_warning_is_shown_and_is_no_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rules that fail on some sample calls load with a warning: the trace shows it first and still exits 0."""
    policy = tmp_path / "policy.py"
    policy.write_text(
        "from gateway.policy import to_trunk\n\n\ndef route(request, default):\n"
        "    return to_trunk('bakup') if request.ruri_user == '112' else default\n"
    )
    assert main(["--policy", str(policy), "call", "phone:carol", "phone:bob"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("      gateway: warning: the rules from ")
    assert "calls to 112 (from a browser and a SIP phone): Refused:" in out and "\n  ! " not in out


def test_a_trunk_that_challenges_is_answered_and_one_without_an_account_reaches_the_caller(
    capsys: pytest.CaptureFixture[str],
) -> None:
    recipe = Path(__file__).resolve().parent.parent / "docs" / "recipes" / "trunk-auth"
    files = ["--settings", str(recipe / "gateway.ini"), "--policy", str(recipe / "policy.py"), "call"]
    assert main([*files, "--trunk", "carrier=407", "phone:carol", "0301234567"]) == 0
    out = capsys.readouterr().out
    assert "carrier(trunk) -> gateway: SIP/2.0 407 Proxy Authentication Required" in out
    assert "(branch 1: request URI sip:0301234567@carrier.example, destination URI sip:198.51.100.10:5060), " \
           "answering its challenge as acme-gw (realm carrier.example)" in out  # fmt: skip
    assert "s3cret" not in out and "the caller got" not in out and "dialogs left: 0" in out
    # the PBX has no account: its challenge goes to the caller, and the summary says whose it is
    assert main([*files, "--trunk", "carrier=503", "--trunk", "pbx=407", "phone:carol", "+4930123"]) == 0
    out = capsys.readouterr().out
    assert "the caller got 407 Proxy Authentication Required, a trunk's challenge (realm 198.51.100.30)" in out
    assert "answering its challenge" not in out


def test_a_trunk_given_several_codes_refuses_the_answer_and_a_trunk_named_twice_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    recipe = Path(__file__).resolve().parent.parent / "docs" / "recipes" / "trunk-auth"
    files = ["--settings", str(recipe / "gateway.ini"), "--policy", str(recipe / "policy.py"), "call"]
    assert main([*files, "--trunk", "carrier=407,407", "--trunk", "backup=200", "phone:carol", "0301234567"]) == 0
    out = capsys.readouterr().out
    assert out.count("the INVITE went to carrier(trunk)") == 2 and "the INVITE went to backup(trunk)" in out
    assert "logged: gateway: trunk carrier challenged" in out and "check its auth_user= and auth_password=" in out
    assert "backup(trunk) -> gateway: SIP/2.0 200 OK" in out
    assert main([*files, "--trunk", "carrier=407", "--trunk", "carrier=200", "phone:carol", "0301234567"]) == 2
    assert main([*files, "--trunk", "carrier=407,99", "phone:carol", "0301234567"]) == 2


def test_a_registration_the_rules_refused_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    recipe = Path(__file__).resolve().parent.parent / "docs" / "recipes" / "registrations"
    files = ["--settings", str(recipe / "gateway.ini"), "--policy", str(recipe / "policy.py"), "call"]
    assert main([*files, "phone:alice", "phone:kiosk1"]) == 0
    out = capsys.readouterr().out
    assert "kiosk1's REGISTER got 403 Forbidden - Browsers Only: not registered" in out
    assert "the caller got 404 Not Found" in out and "alice's REGISTER" not in out
    assert main([*files, "phone:alice", "browser:kiosk1"]) == 0
    assert "REGISTER got" not in capsys.readouterr().out
