"""The benchmark's native reference takes the decisions the Python router takes (what can be checked offline),
and the files the benchmark writes beside each cfg are what the cfgs need."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import re
import shutil
from typing import Any, Dict, List, Optional, Tuple

import pytest

from bench.mix import ADDRESSES, CALLEE_HOST, Mix
from bench.procs import Cpu
from bench.run import SippStats, report
from bench.run import Step as BenchStep
from bench.site import SETTINGS, Listen, native_settings, settings_for, site_files, with_mpath
from gateway import core, sdp
from gateway.host import BRANCH_VARS, FAILED, Router, branch_plan
from gateway.model import Branch, CallRecord, Leg, Media, Party, Registration, Step
from gateway.policy import MediaProxy
from gateway.profiles import DEFAULT_PROFILES, UNTRUSTED_SIP_SOURCE, Profiles
from gateway.settings import Settings
from gateway.settings import parse as parse_settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
NATIVE = (ROOT / "bench" / "native.cfg").read_text()
PYTHON = (ROOT / "opensips" / "opensips.cfg").read_text()
# The router decides; the cfg also answers a few requests itself (an in-dialog request of none of our dialogs).
ROUTER = "".join((ROOT / "pyscripts" / "gateway" / name).read_text() for name in ("core.py", "host.py")) + PYTHON
STEP_CODES = {"o": Step.OFFER, "a": Step.ANSWER, "r": Step.REOFFER}
DEFAULT = Profiles()


def native_profiles() -> Dict[Tuple[Leg, Leg, Step], str]:
    """route[profile] of native.cfg as a table: case labels collect until the flags they share."""
    body = re.search(r"route\[profile\] \{(.*?)\n\}", NATIVE, re.S)
    assert body is not None
    table: Dict[Tuple[Leg, Leg, Step], str] = {}
    pending: List[str] = []
    for line in body.group(1).splitlines():
        line = line.strip()
        case = re.fullmatch(r'case "(\w\w\w)":', line)
        flags = re.fullmatch(r'\$var\(flags\) = "([^"]+)";', line)
        if case:
            pending.append(case.group(1))
        elif line == "default:":
            pending.append("default")
        elif flags:
            for key in pending:
                if key == "default":
                    for k in DEFAULT_PROFILES:
                        if k[2] is not Step.DELETE:
                            table.setdefault(k, flags.group(1))
                else:
                    table[(Leg.from_code(key[0]), Leg.from_code(key[1]), STEP_CODES[key[2]])] = flags.group(1)
            pending = []
    return table


def test_native_has_the_flag_table_of_the_router_row_by_row() -> None:
    expected = {k: v for k, v in DEFAULT_PROFILES.items() if k[2] is not Step.DELETE}
    assert native_profiles() == expected
    assert all(not v for k, v in DEFAULT_PROFILES.items() if k[2] is Step.DELETE)  # native deletes without flags


def test_native_adds_what_the_router_adds_to_the_profile() -> None:
    assert f'" {UNTRUSTED_SIP_SOURCE}"' in NATIVE
    assert '" via-branch-param=br" + $T_branch_idx' in NATIVE
    assert '" via-branch-param=br" + $var(idx)' in NATIVE
    assert f'" {core.ADDRESS_FAMILY_IP6}"' in NATIVE  # toward a contact that registered over IPv6
    # No per-branch delete (core.plan_initial_reply): rtpengine would delete the whole call.
    assert "rtpengine_delete(" in NATIVE and 'rtpengine_delete("' not in NATIVE


def test_native_runs_the_same_nat_test_and_flags() -> None:
    assert f'nat_uac_test("{core.NAT_TESTS}")' in NATIVE
    for flags in core.SOURCE_FLAGS.values():
        for flag in flags:
            assert f'setflag("{flag}")' in NATIVE
    for bflags in core.REGISTRATION_BFLAGS.values():
        for flag in bflags:
            assert f'setbflag("{flag}")' in NATIVE
    assert f'setbflag("{core.IPV6_BFLAG}")' in NATIVE


def test_native_counts_the_statistics_of_the_router() -> None:
    assert set(re.findall(r'update_stat\("(\w+)", 1\)', NATIVE)) == set(core.STATISTICS)


def test_native_replies_as_the_router_does() -> None:
    """Every reply native.cfg sends itself is one the router sends, reason phrase and all."""
    replies = set(re.findall(r'sl_send_reply\((\d+), "([^"]+)"\)', NATIVE))
    assert ("404", "Not Here") in replies  # a forged in-dialog request
    for code, reason in replies:
        assert re.search(rf"{code}[^\n]*\"{re.escape(reason)}\"", ROUTER), (code, reason)


def test_native_drops_the_same_scanners_and_exempts_pike_the_same_way() -> None:
    def scanners(text: str) -> List[str]:
        return re.findall(r'if \(\$ua =~ "([^"]+)"\)\n\t\tdrop;', text)

    assert scanners(NATIVE) == scanners(PYTHON) != []
    assert 'modparam("pike", "check_route", "pike_exempt")' in NATIVE
    exempt = re.search(r"route\[pike_exempt\] \{(.*?)\n\}", NATIVE, re.S)
    assert exempt is not None and "route(is_trusted)" in exempt.group(1) and "drop;" in exempt.group(1)


def test_native_lays_out_private_memory_as_opensips_cfg_does() -> None:
    """route[gw_heap] is the same in both, runs first in the request route until it has run once, and
    leaves its holes only while each string it keeps is longer than the one before."""

    def heap(text: str) -> str:
        body = re.search(r"\nroute\[gw_heap\] \{\n(.*?)\n\}\n", text, re.S)
        assert body is not None
        assert re.search(r"\nroute \{\n\tif \(\$var\(gw_heap\) != 1\)\n\t\troute\(gw_heap\);\n", text)
        return body.group(1)

    body = heap(PYTHON)
    assert heap(NATIVE) == body
    lengths = [int(n) for n in re.findall(r"\{s\.fill\.left,x,(\d+)\}", body)]
    assert len(lengths) > 8 and lengths == sorted(set(lengths))
    assert body.rstrip().endswith("$var(gw_heap) = 1;")


def route_body(text: str, head: str) -> str:
    """The body of the route that starts with ``head`` (e.g. "onreply_route[gw_reply_quiet]")."""
    found = re.search(r"\n" + re.escape(head) + r" \{\n(.*?)\n\}\n", text, re.S)
    assert found is not None, head
    return found.group(1)


def test_native_runs_the_reply_routes_only_for_the_replies_opensips_cfg_does() -> None:
    """on_reply_quiet: a branch to a callee not behind NAT brings only its 2xx and replies with a body to
    its reply route; no reply route takes a 100 without a body."""
    quiet = "if (($rs >= 200 && $rs < 300) || $cl > 0)"
    assert quiet in route_body(PYTHON, "onreply_route[gw_reply_quiet]")
    assert quiet in route_body(NATIVE, "onreply_route[gw_reply_quiet]")
    skip = "if ($rs == 100 && !($cl > 0))\n\t\treturn;"
    assert skip in route_body(PYTHON, "onreply_route[gw_reply]") and skip in route_body(
        NATIVE, "onreply_route[gw_reply]"
    )
    branch = route_body(NATIVE, "branch_route[gw_branch]")
    assert 'if ($var(callee) == "S0")\n\t\tt_on_reply("gw_reply_quiet");\n\telse\n\t\tt_on_reply("gw_reply");' in branch
    # The router's rule: every branch through the media proxy to a callee not behind NAT ("S0"), and no other.
    for registration in Registration:
        callee = core.party_registered(registration)
        for caller in (Party(Leg.SIP, False), Party(Leg.SIP, True), Party(Leg.WEB, True, "wss:203.0.113.5:443")):
            for early in (True, False):
                plan = core.plan_branch(CallRecord(caller, early, False), 0, registration, DEFAULT)
                planned = plan.record.branch(0)
                if planned is None or not planned.media_proxy:
                    continue
                rules = Router.fixed(bench_settings(), print).rules
                actions = branch_plan(CallRecord(caller, early, False), registration, MediaProxy.AUTO, rules)
                assert ("on_reply_quiet" in actions.split("|")[0]) == (callee.code == "S0"), (registration, caller)


def test_native_decides_a_dialogs_acks_and_byes_at_its_answer_as_the_router_does() -> None:
    """quiet_ack / quiet_bye: the first 2xx leaves $dlg_val(gw_quiet) "ack" when neither party is a
    browser, "bye" when rtpengine also holds the answered branch's media; the in-dialog route then relays
    an ACK without SDP as it is, and answers a SIP peer's BYE with rtpengine_delete()."""
    for cfg in (PYTHON, NATIVE):
        assert set(re.findall(r'\$dlg_val\(gw_quiet\) = "(\w+)"', cfg)) == {"ack", "bye"}
    answered = route_body(NATIVE, "route[answered]")
    assert 'if ($var(first) == 1 && $(var(caller){s.substr,0,1}) != "W" && $(var(callee){s.substr,0,1}) != "W")' in (
        answered
    )
    assert (
        'if ($var(media) == "m")\n\t\t\t$dlg_val(gw_quiet) = "bye";\n\t\telse\n\t\t\t$dlg_val(gw_quiet) = "ack";'
        in (answered)
    )
    # native.cfg's rule, for every answered branch the router can record, is the router's.
    profiles = DEFAULT
    callers = (Party(Leg.SIP, False), Party(Leg.SIP, True), Party(Leg.WEB, True, "wss:203.0.113.5:443"))
    callees = (Party(Leg.SIP, False), Party(Leg.SIP, True), Party(Leg.WEB, True, "ws:203.0.113.6:80"))
    for caller in callers:
        for callee in callees:
            for media in (Media.OPEN, Media.PENDING):
                record = CallRecord(caller, True, False).with_branch(0, Branch(callee, media)).with_answer(0)
                no_browser = Leg.WEB not in (caller.leg, callee.leg)
                assert core.acks_are_quiet(record) == no_browser
                assert core.byes_are_quiet(record, profiles) == (no_browser and media is Media.OPEN)
    sequential = route_body(NATIVE, "route[sequential]")
    ack = 'if (is_method("ACK") && !($cl > 0 && has_body("application/sdp"))) {'
    ack += "\n\t\tif ($dlg_val(gw_track) == NULL || $dlg_val(gw_quiet) != NULL)\n\t\t\troute(relay);"
    bye = 'if (is_method("BYE") && $dlg_val(gw_quiet) == "bye" && !isflagset("SRC_WS")) {'
    bye += "\n\t\trtpengine_delete();\n\t\troute(relay);"
    assert ack in sequential and bye in sequential
    # core.ack_is_quiet: such an ACK gets no flags and no NAT fix (they come after it); a BYE's flags come first.
    assert sequential.index(ack) < sequential.index("route(sender);") < sequential.index(bye)


def test_native_tests_only_what_it_needs_where_it_needs_it() -> None:
    """No body test on every message: the request route reads no body and runs no NAT test before the
    in-dialog branch; has_body() only with the SDP's type, where the type decides; the NAT test once."""
    main = route_body(NATIVE, "route")
    assert "has_body" not in main and "$rb" not in main and "nat_uac_test" not in main
    assert main.index("if (has_totag())") < main.index("route(sender);")
    code = re.sub(r"(?m)^\s*#.*\n|;\s+#.*$", ";", NATIVE)  # comments out
    tests = re.findall(r"has_body\(([^)]*)\)", code)
    assert tests and set(tests) == {'"application/sdp"'}
    assert code.count("nat_uac_test(") == 1 and "nat_uac_test(" in route_body(NATIVE, "route[sender]")
    assert "$rb =~" in route_body(NATIVE, "route[new_call]")


def test_native_loads_the_same_modules_minus_python() -> None:
    modules = re.findall(r'^loadmodule "(\w+)\.so"', PYTHON, re.M)
    assert re.findall(r'^loadmodule "(\w+)\.so"', NATIVE, re.M) == [m for m in modules if m != "python"]


def test_native_sets_the_same_module_parameters_minus_python() -> None:
    def params(text: str) -> set[str]:
        return {line for line in re.findall(r"^modparam\(.*\)$", text, re.M) if '"python"' not in line}

    assert params(NATIVE) == params(PYTHON)


def test_native_reads_the_site_files_where_opensips_cfg_does() -> None:
    def before_modules(text: str, name: str) -> bool:
        include = re.search(rf'^include_file "{re.escape(name)}"', text, re.M)
        module = re.search(r"^loadmodule ", text, re.M)
        assert include is not None and module is not None
        return include.start() < module.start()

    for name in ("site.cfg", "site-params.cfg"):
        assert before_modules(NATIVE, name) == before_modules(PYTHON, name)
    assert 'include_file "native-settings.cfg"' in NATIVE


# -- native-settings.cfg: gateway.ini as routes ------------------------------------------------


def bench_settings() -> Settings:
    return parse_settings(SETTINGS.read_text(), str(SETTINGS))


def test_the_benchmark_trusts_sipp_and_keeps_auth_on() -> None:
    settings = bench_settings()
    assert settings.trusted_sources == set(ADDRESSES)  # the callers' -i
    assert settings.auth_realm is not None and not settings.topology_hiding
    assert core.challenge_for("INVITE", "127.0.0.1", True, settings) is None
    assert core.challenge_for("INVITE", "127.0.0.1", "127.0.0.5" in settings.trusted_sources, settings) is (
        core.Challenge.PROXY
    )


def test_native_settings_say_what_gateway_ini_says() -> None:
    settings = bench_settings()
    text = native_settings(settings)
    local = re.search(r"route\[is_local\] \{(.*?)\n\}", text, re.S)
    trusted = re.search(r"route\[is_trusted\] \{(.*?)\n\}", text, re.S)
    assert local is not None and trusted is not None
    assert set(re.findall(r'\$var\(domain\) == "([^"]+)"', local.group(1))) == settings.domains
    assert set(re.findall(r'\$si == "([^"]+)"', trusted.group(1))) == settings.trusted_sources
    assert f'www_authorize("{settings.auth_realm}", "{core.SUBSCRIBERS}")' in text
    assert f'proxy_challenge("{settings.auth_realm}", "auth")' in text
    assert "$au != $tU" in text and "$au != $fU" in text  # core.Challenge.address_user
    assert 'sl_send_reply(404, "No Route To Destination")' in text  # no sip_destination


def test_native_settings_without_auth_trust_or_destination() -> None:
    settings = dataclasses.replace(
        bench_settings(), auth_realm=None, trusted_sources=frozenset(), sip_destination="sip:pbx.example.org"
    )
    text = native_settings(settings)
    assert "authorize" not in text and "$si ==" not in text
    assert '$du = "sip:pbx.example.org";' in text


def test_native_settings_give_a_trunks_domain_to_the_request_uri() -> None:
    """[trunks] domain=: Settings.trunk_domain's host and port (none: the caller's goes) after the trunk's $du."""
    text = native_settings(parse_settings(
        "[trunks]\nc = sip:192.0.2.1 domain=carrier.example\nd = sip:192.0.2.2 domain=[2001:db8::2]:5070\n"
        "t = sip:192.0.2.3\n"))  # fmt: skip
    assert 'case "c":\n\t\t$du = "sip:192.0.2.1";\n\t\t$rd = "carrier.example";\n\t\t$rp = "";\n' in text
    assert '$du = "sip:192.0.2.2";\n\t\t$rd = "[2001:db8::2]";\n\t\t$rp = "5070";\n' in text
    assert 'case "t":\n\t\t$du = "sip:192.0.2.3";\n\t\tbreak;' in text
    text = native_settings(
        parse_settings("[gateway]\nsip_destination = c\n[trunks]\nc = sip:192.0.2.1 domain=c.example\n")
    )
    assert 'route[to_destination] {\n\t$du = "sip:192.0.2.1";\n\t$rd = "c.example";\n\t$rp = "";\n}' in text


def test_native_settings_refuse_what_native_cfg_does_not_do() -> None:
    with pytest.raises(ValueError, match="no trunk failover: sip_destination"):
        native_settings(
            parse_settings("[gateway]\nsip_destination = a b\n[trunks]\na = sip:192.0.2.1\nb = sip:192.0.2.2\n")
        )
    with pytest.raises(ValueError, match="topology_hiding"):
        native_settings(dataclasses.replace(bench_settings(), topology_hiding=True))
    overridden = parse_settings("[profiles]\nweb->sip offer = RTP/AVP ICE=remove DTLS=off rtcp-mux-demux\n")
    with pytest.raises(ValueError, match="flag table"):
        native_settings(overridden)


# -- site.cfg and site-params.cfg -----------------------------------------------------------------

LISTEN = Listen(sip=5070, tls=5071, ws=8090, wss=8453, http=8899, rtpengine_ng=2299)


def test_site_files_for_opensips_cfg(tmp_path: pathlib.Path) -> None:
    entry = ROOT / "pyscripts" / "opensips_entry.py"
    files = site_files(PYTHON, tmp_path / "python", "/opt/x/modules/", LISTEN, entry, tmp_path / "db.sqlite")
    assert set(files) == {"site.cfg", "site-params.cfg"}
    assert 'mpath = "/opt/x/modules/"' in files["site.cfg"] and "socket = udp:127.0.0.1:5070" in files["site.cfg"]
    assert "modparam" not in files["site.cfg"]
    params = files["site-params.cfg"]
    assert f'modparam("python", "script_name", "{entry}")' in params
    assert f'modparam("auth_db", "db_url", "sqlite://{tmp_path}/db.sqlite")' in params
    assert 'modparam("httpd", "ip", "127.0.0.1")' in params and '"udp:127.0.0.1:2299"' in params


def test_site_files_for_native_cfg_name_no_python(tmp_path: pathlib.Path) -> None:
    files = site_files(NATIVE, tmp_path / "native", "/opt/x/modules/", LISTEN, None, tmp_path / "db.sqlite")
    assert '"python"' not in files["site-params.cfg"] and '"auth_db"' in files["site-params.cfg"]


def test_site_files_for_an_older_layout(tmp_path: pathlib.Path) -> None:
    """site.cfg after the modules, no site-params.cfg: parameters go in site.cfg, mpath on the cfg's first line;
    no parameter for a module the cfg does not load."""
    old = '#\nloadmodule "tm.so"\nloadmodule "httpd.so"\ninclude_file "site.cfg"\n'
    files = site_files(old, tmp_path, "/opt/x/modules/", LISTEN, None, tmp_path / "db.sqlite")
    assert files["cfg"].splitlines()[0] == 'mpath = "/opt/x/modules/" #'
    assert 'modparam("httpd", "port", 8899)' in files["site.cfg"]
    assert "auth_db" not in files["site.cfg"] and "mpath" not in files["site.cfg"]
    with pytest.raises(ValueError, match="site-params"):
        site_files('include_file "site.cfg"\nloadmodule "tm.so"\n', tmp_path, "/x/", LISTEN, None, tmp_path / "d")


def test_mpath_goes_on_the_first_line() -> None:
    text = with_mpath("#\n# cfg\nlog_level = 3\n", "/opt/x/modules/")
    assert text.splitlines()[0] == 'mpath = "/opt/x/modules/" #'
    assert len(text.splitlines()) == 3


def test_an_older_router_gets_only_the_settings_it_knows() -> None:
    template = "[gateway]\ndomains = a\nsip_destination =\n"
    text = settings_for(template, SETTINGS.read_text())
    assert parse_settings(text).trusted_sources == frozenset()
    assert "auth_realm" not in text and "domains = 127.0.0.1 localhost gateway.local" in text
    assert settings_for(None, "x") == "x"


def test_the_run_skips_without_its_programs(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.run import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no sipp, rtpengine, openssl
    monkeypatch.setenv("OPENSIPS_BIN", "/bin/true")
    assert main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SKIPPED: missing sipp") and out.count("\n") == 1
    monkeypatch.setenv("OPENSIPS_BIN", str(tmp_path / "nothing"))
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("SKIPPED: no OpenSIPS")


def test_the_cpu_target_compares_the_rates_both_held(capsys: pytest.CaptureFixture[str]) -> None:
    """An overloaded step (failed calls) is printed but left out of the verdict; a held one counts."""

    def step(cfg: str, rate: int, us: float, failed: int) -> BenchStep:
        calls = rate * 2
        done = BenchStep("calls", True, rate, cfg, calls, stats=SippStats(calls, calls - failed, failed, 0, 0.0))
        done.took, done.cpu = done.ideal, Cpu(0, int(us * 1000 * calls))
        return done

    steps = [step("python", 500, 1040.0, 0), step("native", 500, 1000.0, 0)]
    steps += [step("python", 1500, 700.0, 500), step("native", 1500, 600.0, 4000)]
    report(steps, argparse.Namespace())
    out = capsys.readouterr().out
    assert "1.167" in out  # the overloaded step, printed
    assert "with rtpengine: worst rate held by both 1.040, met (1500/s left out: not held)" in out
    report([step("python", 500, 1100.0, 0), step("native", 500, 1000.0, 0)], argparse.Namespace())
    assert "with rtpengine: worst rate held by both 1.100, NOT met\n" in capsys.readouterr().out


# -- the source/contact mix ------------------------------------------------------------------------


def sequential_calls(mix: Mix, total: int) -> List[Tuple[str, str, str]]:
    """(source address, caller, callee) of every call of a step, as the SIPp callers take their lines."""
    calls = []
    for k, share in enumerate(mix.shares(total)):
        lines = mix.caller_lines(k)
        calls += [(mix.addresses[k], *lines[i % len(lines)]) for i in range(share)]
    return calls


@pytest.mark.parametrize("total", [3000, 1501, 7, 0])
def test_the_mix_spreads_the_calls_over_sources_callers_and_callee_phones(total: int) -> None:
    mix = Mix()
    calls = sequential_calls(mix, total)
    assert len(calls) == total and sum(mix.shares(total)) == total
    assert max(mix.shares(total)) - min(mix.shares(total)) <= 1
    phone_of = dict(mix.callee_users())
    load = [0] * mix.callee_phones
    for _source, _caller, callee in calls:
        load[phone_of[callee]] += 1
    assert mix.callee_load(total) == load  # each callee phone's SIPp ends after exactly its calls
    if total >= 1000:
        assert {source for source, _c, _e in calls} == set(ADDRESSES)
        assert len({caller for _s, caller, _e in calls}) == mix.caller_users
        assert len({callee for _s, _c, callee in calls}) == mix.callee_phones * mix.users_per_phone
        assert min(load) > 0.2 * total / mix.callee_phones
    sources_of: Dict[str, set[str]] = {}
    for source, caller, _callee in calls:
        sources_of.setdefault(caller, set()).add(source)
    assert all(len(sources) == 1 for sources in sources_of.values())  # a phone keeps its address


def test_the_mix_registers_each_user_from_one_address_with_its_own_contact() -> None:
    mix = Mix()
    lines = [line for k in range(len(mix.addresses)) for line in mix.register_lines(k)]
    assert len(lines) == len({user for user, _h, _p in lines}) == mix.register_users
    assert len({(host, port) for _u, host, port in lines}) == mix.register_users
    assert {host for _u, host, _p in lines} == {CALLEE_HOST}  # a name: not NATed by private-contact


def test_the_mix_says_what_it_is() -> None:
    assert "-t un" in Mix().describe() and "4 source addresses (127.0.0.1..127.0.0.4)" in Mix().describe()
    flattering = Mix(ADDRESSES[:1], socket_per_call=False, callee_phones=1)
    assert flattering.transport == "u1" and "-t u1" in flattering.describe()
    assert flattering.callee_load(10) == [10]


def test_the_run_builds_the_mix_from_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import run

    seen: List[argparse.Namespace] = []
    monkeypatch.setattr(run, "find_tools", lambda: (None, "stop here"))
    real = argparse.ArgumentParser.parse_args

    def parse(self: argparse.ArgumentParser, *a: Any, **k: Any) -> Any:
        args = real(self, *a, **k)
        seen.append(args)
        return args

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse)
    assert run.main(["--quick"]) == 0
    assert seen[-1].mix == Mix() and seen[-1].rates == [500]
    assert run.main(["--sources", "1", "--callees", "2", "--one-socket"]) == 0
    assert seen[-1].mix == Mix(("127.0.0.1",), socket_per_call=False, callee_phones=2)
    assert seen[-1].rates == [500, 1000, 1500] and seen[-1].register_rate == 1000
    assert seen[-1].rules == "both"  # the default rules and the recipes, a sweep each
    assert run.main(["--quick", "--rules", "recipes"]) == 0 and seen[-1].rules == "recipes"


# -- CPU windows -----------------------------------------------------------------------------------


def test_every_step_is_charged_the_same_window_less_the_idle_rate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    """A step's CPU: from just before its load to the settle time after it, whatever ran before; less each
    process's idle CPU per second times that window."""
    from bench import procs, run

    tools = run.Tools("/bin/true", "3.6.8", "/x/", "sipp", "rtpengine")
    args = argparse.Namespace(settle=0.05, perf=False, max_load=99.0, max_wait=0.0)
    bench = run.Bench(tools, args)
    try:
        inst = run.Instance("python", tmp_path, LISTEN, uas=[1], uac=[2], pids=[11, 12], kinds={11: "main", 12: "udp"})
        clock = {11: Cpu(100, 1_000_000_000, 7), 12: Cpu(50, 500_000_000, 40)}
        monkeypatch.setattr(procs, "cpu_by_pid", lambda pids: {pid: clock[pid] for pid in pids})
        monkeypatch.setattr(procs, "machine_busy_ticks", lambda: (0, 0))
        monkeypatch.setattr(bench, "ours", lambda: 0)
        bench.idle_rate["python"] = {11: (0.0, 1e6), 12: (0.0, 0.0)}  # 1 ms of CPU per second, idle

        def load() -> None:  # the load costs process 12 one second, 10 ticks and 25 page faults
            clock[12] = Cpu(60, 1_500_000_000, 65)

        step = run.Step("calls", False, 500, "python", 1000)
        bench.measured(inst, step, tmp_path / "s", False, 0.05, load)
        assert step.settle == 0.05 and step.window >= 0.05
        assert step.cpu is not None and step.cpu.ticks == 10
        assert step.cpu.ns == 1_000_000_000 - round(1e6 * step.window)
        assert step.ns_by_kind == {"main": -round(1e6 * step.window), "udp": 1_000_000_000}
        assert step.faults == 25 and "faults 0.0/call" in run.describe(step)  # 25 of 1,000 calls
        assert bench.steps == [step]
        step2 = run.Step("calls", False, 500, "python", 1000)
        bench.measured(inst, step2, tmp_path / "s2", False, 0.05, lambda: None)  # nothing more: idle only
        assert step2.cpu == Cpu(0, 0) and step2.faults == 0
    finally:
        bench.close()
        shutil.rmtree(bench.folder, ignore_errors=True)


def test_the_warm_up_reaches_the_highest_rate_of_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each instance and traffic gets a step's worth of calls at the run's highest rate before any figure: a
    step at a concurrency its instance had not reached pays the first touch of that memory."""
    from bench import run

    tools = run.Tools("/bin/true", "3.6.8", "/x/", "sipp", "rtpengine")
    args = argparse.Namespace(settle=0.0, perf=False, rates=[500, 1500, 1000], seconds=6.0)
    bench = run.Bench(tools, args)
    try:
        for name in ("python", "native"):
            bench.instances[name] = run.Instance(name, bench.folder, LISTEN, uas=[1], uac=[2], pids=[], kinds={})
        asked = []

        def calls(inst: Any, media: bool, rate: int, count: int, sample: bool = True, settle: Any = None) -> Any:
            asked.append((inst.name, media, rate, count, sample))
            step = run.Step("calls", media, rate, inst.name, count)
            bench.steps.append(step)
            return step

        monkeypatch.setattr(bench, "calls", calls)
        monkeypatch.setattr(run.Instance, "drain", lambda self, limit=12.0: (0.0, 0))  # no MI here
        bench.warm_up()
        assert sorted(asked) == sorted(
            (name, media, 1500, 9000, False) for name in ("python", "native") for media in (False, True)
        )
        assert bench.steps == []  # none of it is a figure
    finally:
        bench.close()
        shutil.rmtree(bench.folder, ignore_errors=True)


def test_sipp_statistics_are_read_from_the_last_line(tmp_path: pathlib.Path) -> None:
    stat = tmp_path / "s.csv"
    stat.write_text(
        "TotalCallCreated;SuccessfulCall(C);FailedCall(C);Retransmissions(C);CallRate(C);\n"
        "5;4;1;0;2.5;\n"
        "10;9;1;3;5.0;\n"
    )
    assert SippStats.read(stat) == SippStats(10, 9, 1, 3, 5.0)
    assert SippStats.read(tmp_path / "missing.csv") == SippStats(0, 0, 0, 0, 0.0)
    both = SippStats.combined([SippStats(10, 9, 1, 3, 5.0), SippStats(5, 5, 0, 1, 2.5)])
    assert both == SippStats(15, 14, 1, 4, 7.5)


# -- the router's records and flags through the fake are those native.cfg writes -------------------


def rtpengine_calls_of_a_call(nat_caller: bool) -> List[Tuple[str, Tuple[object, ...]]]:
    """The rtpengine functions the router calls in one INVITE/180/200/ACK/BYE call from a trusted source."""
    from fakes.runtime import Gateway
    from fakes.ua import Network

    settings = dataclasses.replace(bench_settings(), trusted_sources=frozenset({"198.51.100.10"}))
    gateway = Gateway(settings)
    net = Network(gateway)
    caller = net.phone("carol", nat=nat_caller, host="198.51.100.10")
    callee = net.phone("erin", host="198.51.100.10")
    net.registered(caller, callee)
    start = len(gateway.events)
    call = net.invite(caller, "erin")
    net.reply(call, callee, 180)
    net.reply(call, callee, 200)
    net.bye(call, "caller")
    assert gateway.sessions() == [] and gateway.dialogs == {}
    calls = [event.data for event in gateway.events[start:] if event.kind == "call"]
    return [(name, args) for name, args, _result in calls if name.startswith("rtpengine_")]


def test_native_tests_the_sdp_with_the_routers_expression() -> None:
    from fakes.runtime import private_sdp_test

    test = private_sdp_test(str(ROOT / "bench" / "native.cfg"))
    assert test is not None and test.pattern == sdp.PRIVATE_SDP


def test_the_router_keeps_the_record_native_cfg_keeps() -> None:
    from fakes.runtime import Gateway
    from fakes.ua import Network

    settings = dataclasses.replace(bench_settings(), trusted_sources=frozenset({"198.51.100.10"}))
    for nat, expected in (
        # A plain contact of a plain caller goes to no Python (Act.ON_ANSWER: the cfg counts its
        # answer): the record keeps no branch for it.
        (False, ["c=S0;o=e;p=0"]),
        # A NATed phone's SDP is not read (core.sdp_privacy_matters): p=0, in native.cfg too.  The
        # branch to the plain contact is the cfg's (planned with the request, Act.ON_ANSWER).
        (True, ["c=S1;o=e;p=0", "c=S1;o=e;p=0;b0=mS0", "c=S1;o=e;p=0;b0=mS0;a=0"]),
    ):
        gateway = Gateway(settings)
        net = Network(gateway)
        caller = net.phone("carol", nat=nat, host="198.51.100.10")
        callee = net.phone("erin", host="198.51.100.10")
        net.registered(caller, callee)
        seen: List[str] = []
        dialogs: List[Any] = []
        original = gateway.python_exec

        def watch(
            method: str,
            ctx: Any,
            arg: Optional[str] = None,
            original: Any = original,
            seen: List[str] = seen,
            gateway: Gateway = gateway,
            dialogs: List[Any] = dialogs,
        ) -> int:
            dialog = getattr(ctx, "dialog", None)
            if dialog is not None:
                dialogs[:] = [dialog]
            before = None if dialog is None else dialog.vals.get("gw")  # what the cfg did since
            result: int = original(method, ctx, arg)
            value = None if dialog is None else dialog.vals.get("gw")
            if method == "on_request" and value is None and not seen:
                value = gateway.script_vars.get("gw_record")  # the cfg stores it after create_dialog
            for known in (before, value):
                if known is not None and (not seen or seen[-1] != known):
                    seen.append(known)
            return result

        gateway.python_exec = watch  # type: ignore[method-assign]
        call = net.invite(caller, "erin")
        net.reply(call, callee, 180)
        net.reply(call, callee, 200)
        final = dialogs[0].vals.get("gw") if dialogs else None  # a reply's record is the cfg's act (new_record)
        if final is not None and seen[-1] != final:
            seen.append(final)
        assert seen == expected, nat
        net.bye(call, "caller")


def test_the_router_sends_rtpengine_the_flags_native_cfg_composes() -> None:
    """Offer: the caller's row + SIP-source-address (NATed SIP caller) + via-branch-param=br0; answer: the
    callee's row + via-branch-param=br0 (a plain callee); BYE: a delete without flags."""
    media = rtpengine_calls_of_a_call(nat_caller=True)
    offer = DEFAULT_PROFILES[(Leg.SIP, Leg.SIP, Step.OFFER)] + f" {UNTRUSTED_SIP_SOURCE} via-branch-param=br0"
    answer = DEFAULT_PROFILES[(Leg.SIP, Leg.SIP, Step.ANSWER)] + " via-branch-param=br0"
    # The cfg passes $var(gw_rtp) to every rtpengine call; a delete's is empty: no flags, as native's.
    assert [(name, args[0] or None) for name, args in media] == [
        ("rtpengine_offer", offer),
        ("rtpengine_answer", answer),
        ("rtpengine_delete", None),
    ]


def test_a_plain_call_takes_no_media_proxy() -> None:
    assert rtpengine_calls_of_a_call(nat_caller=False) == []


@pytest.mark.parametrize("rules", ["default", "recipes"])
def test_micro_records_every_entry_point_and_replays_each_tape(rules: str) -> None:
    """bench.micro drives the router through the fake host: every tape replays with the same host calls, in any
    order (on_authorized gets the request its on_request left), none raised, none failed."""
    from bench.micro import (
        KINDS,
        entry_points,
        initial_invite_core,
        initial_invite_tapes,
        record_calls,
        replays_faithfully,
        unique,
    )

    router, tapes = record_calls(rules)
    kinds = unique(tapes)
    assert {t.route for t in kinds} == set(entry_points(router))
    assert [(t.label, t.raised, t.result == FAILED) for t in kinds] == [(t.label, False, False) for t in kinds]
    for tape in [*kinds[::-1], *kinds]:
        assert replays_faithfully(router, tape) is None, tape.label
    for tag in KINDS[rules]:
        chain = [t.route for t in initial_invite_tapes(tapes, tag)]
        assert chain == (["on_request", "on_authorized"] if "digest" in tag else ["on_request"]), tag
        assert initial_invite_core(tapes, tag), tag


def test_micro_times_the_decision_core_with_the_policy_and_every_branch_plan() -> None:
    """The afresh figure replays what the router asks of the core and of the rules: Tables.apply, the
    operator's route, and the plan of each of the six kinds of branch (three kinds of contact, over IPv4 and
    IPv6; none kept)."""
    from bench.micro import initial_invite_core, record_calls

    _router, tapes = record_calls("recipes")
    for tag in (", plain SIP", ", dial plan", ", digest auth"):
        names = [call.name for call in initial_invite_core(tapes, tag)]
        assert {"Tables.apply", "policy.py route", "core.check_decision"} <= set(names), tag
        assert names.count("core.plan_branch") == len(BRANCH_VARS) == 6, tag
    blocked = [call.name for call in initial_invite_core(tapes, ", blocked")]
    assert blocked == ["Tables.apply"]  # a 403 before any rule: no rule asked, no branch


def test_micro_times_a_cold_call_after_evicting_every_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cold figure writes EVICT_BYTES before each call (outside the timing) and runs the route with each
    varied facts string in turn, answering as the recorded call did."""
    import ctypes

    from bench import micro

    router, tapes = micro.record_calls("default")
    tape = next(t for t in micro.unique(tapes) if t.label == "INVITE, plain SIP")
    facts = micro.varied_facts(tape, 3, frozenset(micro.TRUSTED))
    written, run = [], []
    memset = ctypes.memset
    monkeypatch.setattr(ctypes, "memset", lambda cells, value, size: written.append(size) or memset(cells, value, size))
    handler = getattr(router, tape.route)
    monkeypatch.setattr(router, tape.route, lambda msg, text: run.append((text, handler(msg, text))) or run[-1][1])
    us = micro.time_cold(router, micro.stub_class(tapes), tape, facts, samples=5)
    assert written == [micro.EVICT_BYTES] * 5 and micro.EVICT_BYTES >= 32 << 20
    assert run == [(facts[i % 3], tape.result) for i in range(5)]
    assert 0 < us < 1e6


def test_micro_names_a_reason_for_every_host_call_of_an_initial_invite() -> None:
    from bench.micro import KINDS, initial_invite_tapes, reason_of, record_calls

    for rules in ("default", "recipes"):
        _router, tapes = record_calls(rules)
        for tag in KINDS[rules]:
            for tape in initial_invite_tapes(tapes, tag):
                for name, is_method, args, _answer in tape.host_calls:
                    assert not reason_of(name, is_method, args).startswith("(no note"), (tag, name, args)


def test_micro_varies_the_facts_as_calls_from_many_phones_bring_them() -> None:
    """Each varied facts string comes from another source address (as trusted as the recorded one) and port,
    a request to a user for one of several users, nothing else changed; the router answers each as it
    answered the recorded facts, with the same host calls."""
    from bench.micro import CALLED_USER, TRUSTED, UNTRUSTED, record_calls, unique, varied_facts, varies_faithfully
    from fakes.runtime import exec_arguments
    from gateway.host import HEAD_END, SEP

    def split(text: str) -> List[str]:
        return re.split(f"[{SEP}{HEAD_END}]", text)

    router, tapes = record_calls("recipes")
    formats = exec_arguments()
    varied = set()
    for tape in unique(tapes):
        facts = varied_facts(tape, 200, frozenset(TRUSTED))
        names = split(formats.get(tape.route, ""))
        if "$sp" not in names or tape.raised or not tape.args:  # no args: an entry point called once (on_register_rule)
            assert facts == [] or tape.raised
            continue
        varied.add(tape.route)
        at = {name: i for i, name in enumerate(names)}
        original = split(tape.args[0])
        rows = [split(text) for text in facts]
        assert all(len(row) == len(names) for row in [original, *rows])
        # laid out as the cfg's: the same separators in the same places
        assert {re.sub(f"[^{SEP}{HEAD_END}]", "", text) for text in facts} == {
            re.sub(f"[^{SEP}{HEAD_END}]", "", tape.args[0])
        }
        assert len({(row[at["$si"]], row[at["$sp"]]) for row in rows}) == 200  # a new source every call
        pool = TRUSTED if original[at["$si"]] in TRUSTED else UNTRUSTED
        assert {row[at["$si"]] for row in rows} == set(pool)
        kept = [i for name, i in at.items() if name not in ("$si", "$sp", "$cl", CALLED_USER)]
        if "$cl" in at:  # a request's (a reply's facts say only whether it has a body)
            if original[at["$cl"]] not in ("0", "<null>"):
                assert len({row[at["$cl"]] for row in rows}) > 1  # bodies of several lengths
            assert all((row[at["$cl"]] == "0") == (original[at["$cl"]] == "0") for row in rows)
        assert all([row[i] for i in kept] == [original[i] for i in kept] for row in rows)
        if CALLED_USER in at and original[at[CALLED_USER]] not in ("0", "", "<null>"):
            assert len({row[at[CALLED_USER]] for row in rows}) > 1
        assert varies_faithfully(router, tape, facts) is None, tape.label
    assert varied == {"on_request", "on_reply"}


def test_micro_prices_host_calls_at_what_bench_probe_measured() -> None:
    from bench.micro import PROBE_US, read_probe

    saved = """  best per REGISTER (CPU, private memory growth), and one operation: (variant - its base) / times
  native (no python)                                          101.2 us  RssAnon    +0.0 B
  python_exec, empty method                                   139.3 us  one:   +3.81 us    +0.0 B  (base: native)
  python_exec with an argument (13 variables)                 138.2 us  one:   +3.70 us    +0.0 B  (base: native)
  the router's on_request for the REGISTER (the cfg saves on Do.SAVE)  122.2 us  one:  +21.00 us  +0.0 B  (base: x)
  attribute read (msg.Method)                                 110.4 us  one:   +0.92 us    +0.0 B  (base: y)
  get_pseudoVar (13 variables)                                230.0 us  one:  +12.10 us    +0.0 B  (base: y)
  call_function (setflag)                                     175.0 us  one:   +6.50 us    +0.0 B  (base: y)
"""
    found = read_probe(saved)
    assert found == {
        "python_exec": 3.81,
        "python_exec_arg": 3.7,
        "attribute": 0.92,
        "get_pseudoVar": 12.1,
        "call_function": 6.5,
    }
    assert set(found) <= set(PROBE_US)
    assert PROBE_US["python_exec"] >= 3.0  # what the probe measured in a worker, not an in-process figure


def test_perf_samples_are_read_by_shared_object_and_the_python_side_is_told_apart() -> None:
    from bench import perf

    report = """# Samples: 6K of event 'cpu-clock'
#
# Overhead       Samples  Shared Object
# ........  ............  ....................
#
    52.96%          3646  opensips
    19.92%          1371  [kernel.kallsyms]
     9.21%           634  libpython3.11.so.1.0
     0.20%            14  python.so
     0.03%             2  libpython3.9.so
     0.02%             1  pythonista.so
"""
    samples = perf.parse_report(report)
    assert samples == {
        "opensips": 3646,
        "[kernel.kallsyms]": 1371,
        "libpython3.11.so.1.0": 634,
        "python.so": 14,
        "libpython3.9.so": 2,
        "pythonista.so": 1,
    }
    assert perf.python_share(samples) == (634 + 14 + 2, 3646 + 1371 + 634 + 14 + 2 + 1)
    assert perf.parse_report("") == {} and perf.python_share({}) == (0, 0)


def test_perf_samples_by_symbol_name_the_allocator() -> None:
    from bench import perf

    report = """# Overhead       Samples  Symbol
    36.08%          3646  [.] fm_malloc
     3.75%           379  [k] finish_task_switch.isra.0
     2.04%           206  [.] fm_free
     0.10%            10  [.] fm_malloc_dbg
"""
    samples = perf.parse_report(report)
    assert sum(n for sym, n in samples.items() if sym.split()[-1] in perf.ALLOCATOR) == 3646 + 206
    # Kept beside the shared objects, the allocator's samples are not counted twice in the total.
    assert perf.python_share({"opensips": 900, "libpython3.11.so.1.0": 100, perf.ALLOCATOR_KEY: 400}) == (100, 1000)


def test_perf_tells_by_function_where_an_instance_spends_more_than_native() -> None:
    from bench import perf

    report = """# Overhead       Samples  Shared Object         Symbol
     1.44%           120  libpython3.11.so.1.0  [.] _PyEval_EvalFrameDefault
     1.00%            40  opensips              [.] fm_malloc
     0.50%            20  [kernel.kallsyms]     [k] finish_task_switch.isra.0
"""
    ours = perf.parse_report(report)
    assert ours["libpython3.11.so.1.0 [.] _PyEval_EvalFrameDefault"] == 120
    # perf pads the columns to each report's longest name: the same function is one key in every report
    native = perf.parse_report("""    3.00%  30  opensips           [.] fm_malloc
     2.00%  20  opensips           [.] parse_via
""")
    assert native == {"opensips [.] fm_malloc": 30, "opensips [.] parse_via": 20}
    # two steps of 1,000 calls each on our side, one of 500 on native's; one sample is PERIOD_NS of CPU
    us = perf.PERIOD_NS / 1e3
    extra = perf.extra([(ours, 1000), (ours, 1000)], [(native, 500)])
    assert extra["libpython3.11.so.1.0 [.] _PyEval_EvalFrameDefault"] == pytest.approx(240 * us / 2000)
    assert extra["opensips [.] fm_malloc"] == pytest.approx(80 * us / 2000 - 30 * us / 500)
    assert extra["opensips [.] parse_via"] == pytest.approx(-20 * us / 500)
    objects = perf.by_object(extra)
    assert [obj for obj, _us, _funcs in objects] == ["libpython3.11.so.1.0", "[kernel.kallsyms]", "opensips"]
    kernel = objects[1]
    assert [symbol for symbol, _us in kernel[2]] == ["finish_task_switch.isra.0"]
    assert kernel[1] == pytest.approx(40 * us / 2000)
    opensips = objects[2]
    assert opensips[1] == pytest.approx((80 * us / 2000 - 30 * us / 500) - 20 * us / 500)
    assert [symbol for symbol, _us in opensips[2]] == ["parse_via", "fm_malloc"]  # the largest either way first


def test_callgrind_files_are_read_as_self_cost_by_object_and_function(tmp_path: pathlib.Path) -> None:
    """bench.instructions: compressed names, and a call's inclusive cost not counted twice."""
    from bench.instructions import read_callgrind, read_folder

    text = """# callgrind format
version: 1
events: Ir
ob=(1) /opt/opensips/sbin/opensips
fl=(1) ???
fn=(1) receive_msg
10 100
cob=(2) /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0
cfn=(2) PyObject_Call
calls=2 0
* 500
+2 7
fn=(3) fm_malloc
0 40
fn=(1)
cfn=(3)
calls=3 0
* 120
ob=(2)
fn=(2)
0 450
cob=(1)
cfn=(3)
calls=1 0
0 40
summary: 637
totals: 637
"""
    (tmp_path / "callgrind.out.1").write_text(text)
    costs = read_callgrind(tmp_path / "callgrind.out.1")
    assert costs.by_object == {
        "/opt/opensips/sbin/opensips": 147,
        "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0": 450,
    }
    assert costs.by_function == {"receive_msg": 107, "fm_malloc": 40, "PyObject_Call": 450}
    assert (costs.mallocs, costs.python, costs.allocator, costs.total) == (4, 450, 40, 597)
    (tmp_path / "callgrind.out.2").write_text(text)
    assert read_folder(tmp_path).total == 2 * 597


def test_hp_mallocs_calls_and_costs_are_the_allocators(tmp_path: pathlib.Path) -> None:
    """Under HP_MALLOC (--allocator) the allocator is hp_pkg_malloc, hp_shm_malloc and their kin."""
    from bench.instructions import read_callgrind

    text = """# callgrind format
events: Ir
ob=(1) /opt/opensips/sbin/opensips
fn=(1) receive_msg
10 100
cfn=(2) hp_shm_malloc
calls=2 0
* 70
cfn=(3) hp_pkg_malloc
calls=5 0
* 50
fn=(2)
0 70
fn=(3)
0 50
fn=(4) hp_pkg_free
0 9
"""
    (tmp_path / "callgrind.out.1").write_text(text)
    costs = read_callgrind(tmp_path / "callgrind.out.1")
    assert (costs.mallocs, costs.allocator, costs.total) == (7, 129, 229)


def test_the_instruction_benchmark_skips_with_its_reason_without_valgrind(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import instructions, run

    tools = run.Tools(
        "/opt/opensips/sbin/opensips", "3.6.8", "/opt/opensips/lib64/opensips/modules/", "sipp", "rtpengine"
    )
    monkeypatch.setattr(run, "find_tools", lambda: (tools, ""))
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "valgrind" else real_which(name))
    assert instructions.main([]) == 0
    assert capsys.readouterr().out == "SKIPPED: no valgrind (Debian package valgrind)\n"


# -- the recipes (bench.run --rules recipes): the gateway's files and native.cfg's take the same decisions --

RECIPES = ROOT / "bench" / "recipes"
DOCS = ROOT / "docs" / "recipes"


def recipes_settings() -> Settings:
    return parse_settings((RECIPES / "gateway.ini").read_text(), "bench/recipes/gateway.ini")


def recipes_route() -> Any:
    from gateway.loader import import_policy

    route, callee, register = import_policy(str(RECIPES / "policy.py"))
    assert callee is None and register is None
    return route


def test_the_recipes_are_the_readmes() -> None:
    """The dial plan and the blocked ranges as docs/recipes has them; bench/gateway.ini's [gateway]; the
    always-proxied users are the mix's; every trunk is one of the mix's (a SIPp callee each)."""
    from bench.mix import ALWAYS_PROXY, TRUNKS

    ours = recipes_settings()
    plan = parse_settings((DOCS / "dial-plan" / "gateway.ini").read_text()).tables
    blocked = parse_settings((DOCS / "blocking" / "gateway.ini").read_text()).tables
    assert [(p.text, t) for p, t in ours.tables.dialplan] == [(p.text, t) for p, t in plan.dialplan]
    assert [p.text for p in ours.tables.blocked] == [p.text for p in blocked.blocked]
    assert set(ours.tables.trunks) == set(plan.trunks) == set(TRUNKS)
    assert ours.tables.always_proxy == frozenset(ALWAYS_PROXY)
    base = bench_settings()
    assert (ours.domains, ours.trusted_sources) == (base.domains, base.trusted_sources)
    assert ours.auth_realm == base.auth_realm == "gateway.local"
    assert dict(ours.profiles) == dict(base.profiles) and not ours.topology_hiding


def request(caller: str = "caller5", number: str = "callee1", kind: Any = None, nat: bool = False) -> Any:
    from gateway.policy import Kind, Request

    kind = kind or Kind.SIP
    return Request("INVITE", number, "127.0.0.1", caller, "127.0.0.1", number, "127.0.0.1", "127.0.0.1", 5060,
                   "udp", kind, nat, True)  # fmt: skip


def native_tables_model(text: str) -> Any:
    """route[tables] and route[trunk] of native-settings.cfg read back: (blocked expressions, the dial plan's
    (expression, trunk) in order, always-proxied users per pseudo-variable, trunk -> $du)."""
    from fakes.cfgscript import unescape

    body = re.search(r"\nroute\[tables\] \{\n(.*?)\n\}\n", text, re.S)
    trunk = re.search(r"\nroute\[trunk\] \{\n(.*?)\n\}\n", text, re.S)
    assert body is not None and trunk is not None
    tables = body.group(1)

    def regexes(line: str) -> List[re.Pattern[str]]:  # =~ is case-insensitive, as the fake compiles it
        return [re.compile(unescape(r), re.I | re.ASCII) for r in re.findall(r'\$rU =~ "((?:[^"\\]|\\.)*)"', line)]

    blocked_line = next((line for line in tables.splitlines() if "Blocked Number" in line), None)
    lines = tables.splitlines()
    blocked = regexes(lines[lines.index(blocked_line) - 1]) if blocked_line else []
    plan = [(regexes(m.group(1))[0], m.group(2)) for m in re.finditer(
        r'if \((\$rU =~ "(?:[^"\\]|\\.)*")\) \{\n\t+\$var\(gw_trunk\) = "(\w+)";', tables)]  # fmt: skip
    proxied = {pv: set(re.findall(r'case "([^"]+)":', block)) for pv, block in re.findall(
        r"switch \((\$[fr]U)\) \{\n(.*?)\n\t\}", tables, re.S)}  # fmt: skip
    uris = dict(re.findall(r'case "(\w+)":\n\t+\$du = "([^"]+)";', trunk.group(1)))
    return blocked, plan, proxied, uris


def native_decision(model: Any, caller: str, number: str, may_relay: bool = True) -> Tuple[Any, ...]:
    blocked, plan, proxied, uris = model
    if any(r.search(number) for r in blocked):
        return ("reply", 403)
    trunk = next((t for r, t in plan if r.search(number)), None) if may_relay else None
    always = caller in proxied.get("$fU", set()) or number in proxied.get("$rU", set())
    return ("trunk", uris[trunk]) if trunk else ("user",), always


def test_native_tables_decide_what_tables_apply_decides() -> None:
    """Every number and user of the recipes' traffic, and the recipes' own examples: 403, the trunk (its URI),
    the media proxy always, as policy.Tables.apply and Settings.trunk_uri decide them."""
    from gateway.policy import MediaProxy, to_user

    settings = recipes_settings()
    model = native_tables_model(native_settings(settings))
    mix = Mix(rules=True)
    lines = {line for k in range(len(mix.addresses)) for line in mix.caller_lines(k)}
    numbers = {number for _caller, number in lines} | {"0044201234", "+4930123", "030123456", "0900123456",
               "0137777", "+19005551234", "19765550000", "030123", "1234", "0", "callee3"}  # fmt: skip
    callers = {caller for caller, _number in lines}
    seen = set()
    for caller in [*sorted(callers)[:40], "caller0", "caller83", "caller163"]:
        for number in sorted(numbers):
            for may_relay in (True, False):
                decided = settings.tables.apply(request(caller, number), to_user(), may_relay)
                if decided.target == "reply":
                    expected: Tuple[Any, ...] = ("reply", decided.code)
                else:
                    trunk = decided.trunk or ""
                    where = ("trunk", settings.trunk_uri(trunk)) if decided.target == "trunk" else ("user",)
                    expected = (where, decided.media is MediaProxy.ALWAYS)
                assert native_decision(model, caller, number, may_relay) == expected, (caller, number, may_relay)
                seen.add(str(expected))
    assert len(seen) >= 6  # 403, both trunks, our users; with and without the media proxy


def test_native_tables_of_the_default_settings_decide_nothing() -> None:
    text = native_settings(bench_settings())
    assert native_tables_model(text) == ([], [], {}, {})
    assert "route[trunk] {\n\treturn;\n}" in text  # OpenSIPS refuses a switch without a case


def test_native_tables_refuse_what_posix_or_a_cfg_string_cannot_say() -> None:
    for pattern in (r"/^\d+$/", '/^"x/'):
        settings = parse_settings(f"[trunks]\nt = sip:192.0.2.1\n[dialplan]\n{pattern} = t\n")
        with pytest.raises(ValueError, match="POSIX"):
            native_settings(settings)
    text = native_settings(parse_settings("[trunks]\nt = sip:192.0.2.1\n[dialplan]\n+1.5 = t\n"))
    assert '$rU =~ "^\\+1\\.5"' in text  # a prefix: its special characters escaped


def test_native_policy_does_what_the_recipes_policy_py_does() -> None:
    """Headers removed and added by the caller's kind, and the rtpengine flags for offers toward SIP on the
    international trunk's calls, as route[policy] (bench/recipes/native-policy.cfg) has them."""
    from gateway.policy import Kind, to_trunk, to_user

    native = (RECIPES / "native-policy.cfg").read_text()
    route = recipes_route()
    removed = set(re.findall(r'remove_hf\("([^"]+)"\)', native))
    ws_header = re.search(r'isflagset\("SRC_WS"\)\)\n\t\tappend_hf\("([^"\\]+)\\r\\n"\);', native)
    sip_header = re.search(r'else\n\t\tappend_hf\("([^"\\]+)\\r\\n"\);', native)
    assert ws_header is not None and sip_header is not None
    flagged = re.findall(r'if \(\$var\(gw_trunk\) == "(\w+)"\)\n\t\t\$var\(gw_xs\) = "([^"]+)";', native)
    for default in (to_user(), to_trunk("international"), to_trunk("national")):
        for kind, header in ((Kind.SIP, sip_header.group(1)), (Kind.BROWSER, ws_header.group(1))):
            decision = route(request(kind=kind), default)
            assert {h.lower() for h in decision.remove_headers} == {h.lower() for h in removed}
            assert [f"{n}: {v}" for n, v in decision.add_headers] == [header]
            flags = [f for t, f in flagged if default.target == "trunk" and default.trunk == t]
            assert decision.extra_flags(Kind.SIP) == " ".join(flags)
            assert decision.extra_flags(Kind.BROWSER) == ""  # native.cfg adds flags toward SIP only
            assert " " not in decision.extra_flags(Kind.SIP)  # the record's ";xs=" (native writes no "+")


def test_native_cfg_applies_the_tables_and_the_rules_where_the_router_does() -> None:
    """After the digest check and before lookup(); a trunk instead of lookup(); the record's ";xs="; the
    media proxy when always_proxy says so; the rules' flags before via-branch-param."""
    initial = route_body(NATIVE, "route[initial]")
    trunk = 'if ($var(gw_trunk) != "") {\n\t\troute(trunk);'
    order = ["route(authenticate);", "route(tables);", "route(policy);", trunk, 'lookup("location");']
    order.append("route(new_call);")
    assert [initial.index(part) for part in order] == sorted(initial.index(part) for part in order)
    assert 'include_file "native-policy.cfg"' in NATIVE and 'include_file "native-settings.cfg"' in NATIVE
    new_call = route_body(NATIVE, "route[new_call]")
    assert 'if ($var(gw_xs) != "")\n\t\t$var(rec) = $var(rec) + ";xs=" + $var(gw_xs);' in new_call
    branch = route_body(NATIVE, "branch_route[gw_branch]")
    assert '$var(private) == 0 && $var(gw_media) != 1) {\n\t\tt_on_reply("gw_answered_sip_to_sip");' in branch
    steps = ['" SIP-source-address";', '$var(flags) = $var(flags) + " " + $var(gw_xs);', '" via-branch-param=br"']
    assert [branch.index(s) for s in steps] == sorted(branch.index(s) for s in steps)
    # The default rules natively: route[policy] changes nothing.
    assert route_body((ROOT / "bench" / "native-policy.cfg").read_text(), "route[policy]").strip() == "return;"


def recipes_call(caller: str, number: str, nat: bool) -> Dict[str, Any]:
    """One call of the recipes' traffic through the fake host with bench/recipes' files (trunks on the fake
    network): where the INVITE went, its headers, the record, the rtpengine offers, the caller's finals."""
    from bench.micro import TRUSTED, bench_settings, trunk
    from fakes.runtime import Gateway
    from fakes.ua import Network

    settings = dataclasses.replace(bench_settings("recipes"), trusted_sources=frozenset({TRUSTED[0]}))
    gateway = Gateway(settings, rules=(recipes_route(), None))
    net = Network(gateway)
    trunks = {name: trunk(net, name) for name in ("national", "international")}
    phone = net.phone(caller, nat=nat, host=TRUSTED[0])
    callee = net.phone("callee1", host=TRUSTED[0])
    net.registered(phone, callee)
    start = len(gateway.events)
    call = net.invite(phone, number, extra_headers=[("P-Preferred-Identity", f"<sip:{caller}@127.0.0.1>")])
    sent = [e.data for e in gateway.events[start:] if e.kind == "send" and e.data[1].is_request
            and e.data[1].method == "INVITE"]  # fmt: skip
    found: Dict[str, Any] = {}
    if sent:
        endpoint, invite = sent[-1]
        found["to"] = f"sip:{endpoint.host}:{endpoint.port}"
        found["headers"] = [
            (n.lower(), v) for n, v in invite.headers if n.lower() in ("x-caller-kind", "p-preferred-identity")
        ]
        answerer = next(ua for ua in [*trunks.values(), callee] if ua.endpoint == endpoint)
        net.reply(call, answerer, 200)
        found["record"] = next((d.vals.get("gw") for d in gateway.dialogs.values()), None)  # the call's only
        net.bye(call, "caller")
    found["finals"] = [m.status for m in phone.inbox if not m.is_request and m.call_id == call.call_id
                       and m.cseq_method == "INVITE" and m.status >= 200]  # fmt: skip
    found["offer_flags"] = [args[0] for name, args, _r in (e.data for e in gateway.events[start:] if e.kind == "call")
                            if name == "rtpengine_offer"]  # fmt: skip
    return found


@pytest.mark.parametrize("nat", [False, True], ids=["no media", "with rtpengine"])
def test_the_router_takes_the_decisions_native_cfg_takes_for_the_recipes_traffic(nat: bool) -> None:
    """Each kind of line of Mix(rules=True), from a plain and from a NATed caller, through the real cfg and the
    recipes' files on the fake host: where it goes, the headers, the record and the offer's flags as
    native.cfg composes them (route[tables], route[policy], route[new_call], branch_route[gw_branch])."""
    from bench.micro import TRUNK_HOSTS
    from bench.mix import ALWAYS_PROXY

    offer_row = DEFAULT_PROFILES[(Leg.SIP, Leg.SIP, Step.OFFER)]
    caller_code = "S1" if nat else "S0"
    for caller, number, where, xs in (
        ("caller5", "callee1", None, ""),
        ("caller5", "0049301234005", "international", "loop-protect"),
        ("caller5", "0301234005", "national", ""),
        (ALWAYS_PROXY[0], "callee1", None, ""),
        ("caller5", "0900123005", "blocked", ""),
    ):
        found = recipes_call(caller, number, nat)
        if where == "blocked":
            assert found["finals"] == [403] and "to" not in found and found["offer_flags"] == []
            continue
        assert found["finals"] == [200], (caller, number)
        if where is not None:
            assert found["to"] == f"sip:{TRUNK_HOSTS[where]}:5060"
        assert found["headers"] == [("x-caller-kind", "sip")]  # added; P-Preferred-Identity removed
        media = nat or caller in ALWAYS_PROXY
        record = f"c={caller_code};o=e;p=0" + (f";xs={xs}" if xs else "")
        if media:
            assert found["record"] == f"{record};b0=mS0;a=0", (caller, number)
            flags = offer_row + (" SIP-source-address" if nat else "") + (f" {xs}" if xs else "")
            flags += " via-branch-param=br0"
            assert found["offer_flags"] == [flags], (caller, number)
        else:  # off the record: the cfg counts the answer of a plain branch itself
            assert found["record"] == record and found["offer_flags"] == [], (caller, number)


@pytest.mark.parametrize("total", [3000, 1501, 7])
def test_the_recipes_traffic_takes_every_rule_and_each_callee_sipp_gets_its_calls(total: int) -> None:
    """Mix(rules=True): each line's kind is what bench/recipes/gateway.ini decides for it; the phones and the
    trunks answer exactly the calls that reach them (their -m); blocked calls reach nobody."""
    from bench.mix import ALWAYS_PROXY, BLOCKED, TRUNKS, USER
    from gateway.policy import MediaProxy, to_user

    mix = Mix(rules=True)
    settings = recipes_settings()
    load = mix.callee_load(total)
    kinds = mix.calls_by_kind(total)
    assert len(load) == mix.callee_phones + len(TRUNKS) == len(mix.trunks) + mix.callee_phones
    assert sum(load) == total - kinds.get(BLOCKED, 0)
    assert [load[mix.callee_phones + k] for k in range(len(TRUNKS))] == [kinds.get(t, 0) for t in TRUNKS]
    for k in range(len(mix.addresses)):
        for i, (caller, number) in enumerate(mix.caller_lines(k)):
            decided = settings.tables.apply(request(caller, number), to_user(), True)
            kind = mix.line_kind(i)
            assert decided.target == {USER: "user", BLOCKED: "reply"}.get(kind, "trunk"), (caller, number)
            if decided.target == "trunk":
                assert decided.trunk == kind
            if decided.target != "reply":
                assert (decided.media is MediaProxy.ALWAYS) == (caller in ALWAYS_PROXY)
    if total >= 1000:
        assert all(kinds.get(kind, 0) > 0.015 * total for kind in (*TRUNKS, BLOCKED, "always_proxy"))
        assert kinds.get(USER, 0) > 0.7 * total
    assert Mix().trunks == () and Mix().callee_load(total) == Mix(rules=False).callee_load(total)
    assert "blocked number" in mix.describe() and "blocked" not in Mix().describe()


def test_the_recipes_scenarios_check_and_count_what_the_rules_do() -> None:
    """uac-rules.xml sends what the rules remove and takes a 403 as the call's end, ACKed on the INVITE's
    branch; uas-rules.xml checks the header the rules add and the one they remove, and logs rtpengine's mark;
    bench.run counts the same log lines."""
    import xml.etree.ElementTree as ET

    from gateway.policy import to_user

    decision = recipes_route()(request(), to_user())
    (added, value), removed = decision.add_headers[0], decision.remove_headers[0]
    uac = ET.parse(ROOT / "bench" / "sipp" / "uac-rules.xml").getroot()
    messages = [e for e in uac if e.tag in ("send", "recv", "pause", "nop")]
    invite = (messages[0].text or "").strip()
    assert invite.startswith("INVITE") and f"{removed}: <sip:" in invite
    refused = next(e for e in uac if e.tag == "recv" and e.get("response") == "403")
    assert refused.get("optional") == "true" and refused.get("next") == "refused"
    labels = [e.get("id") for e in uac if e.tag == "label"]
    assert labels == ["acked", "refused", "done"]
    ack = messages[-1]
    back = re.search(r"branch=\[branch-(\d+)\]", ack.text or "")
    assert back is not None and messages[len(messages) - 1 - int(back.group(1))] is messages[0]
    assert [a.get("message") for a in ack.iter("log")] == ["blocked"]
    uas = ET.parse(ROOT / "bench" / "sipp" / "uas-rules.xml").getroot()
    checks = {e.get("header"): e for e in uas.iter("ereg") if e.get("search_in") == "hdr"}
    assert checks[f"{added}:"].get("check_it") == "true" and checks[f"{added}:"].get("regexp") == value == "sip"
    assert checks[f"{removed}:"].get("check_it_inverse") == "true"
    mark = next(e for e in uas.iter("ereg") if e.get("search_in") == "body")
    assert mark.get("regexp") == "a=rtpengine:"  # the attribute rtpengine's loop-protect adds
    assert [a.get("message") for a in uas.iter("log")] == ["loop-protect"]
    run_text = (ROOT / "bench" / "run.py").read_text()
    assert '"blocked")' in run_text and '"loop-protect")' in run_text


def test_the_benchmark_points_each_trunk_at_a_sipp_of_its_own(tmp_path: pathlib.Path) -> None:
    from bench.site import with_trunks

    text = with_trunks((RECIPES / "gateway.ini").read_text(), {"national": "sip:127.0.0.1:22001"})
    settings = parse_settings(text)
    assert settings.tables.trunks["national"] == "sip:127.0.0.1:22001"
    assert settings.tables.trunks["international"] == recipes_settings().tables.trunks["international"]
    assert settings.tables.dialplan == recipes_settings().tables.dialplan


def test_the_run_measures_both_rules_by_default_and_sums_up_the_targets(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.run import CPU_TARGET, REGISTER_BEFORE, modes_of, rules_taken

    assert modes_of(argparse.Namespace(rules="both")) == ["default", "recipes"]
    assert modes_of(argparse.Namespace(rules="recipes")) == ["recipes"]

    def step(kind: str, cfg: str, us: float, mode: str = "recipes") -> BenchStep:
        done = BenchStep(kind, False, 500, cfg, 1000, stats=SippStats(1000, 1000, 0, 0, 0.0), mode=mode)
        done.took, done.cpu = done.ideal, Cpu(0, int(us * 1000 * 1000))
        return done

    verdicts = report([step("calls", "python", 1040.0), step("calls", "native", 1000.0)], argparse.Namespace(),
                      mode="recipes")  # fmt: skip
    out = capsys.readouterr().out
    assert "the README's recipes active" in out
    assert verdicts == [(f"CPU per call python/native <= {CPU_TARGET:.2f}, no media [recipes rules]: 1.040", True)]
    steps = [step("register", "python", 108.0, "default"), step("register", "native", 100.0, "default")]
    ((text, met),) = report(steps, argparse.Namespace())
    assert met and f"<= {REGISTER_BEFORE:.2f}, REGISTER" in text  # 1.08: no regression
    steps[0] = step("register", "python", 120.0, "default")
    ((text, met),) = report(steps, argparse.Namespace())
    assert not met and text.endswith(": 1.200")
    steps += [step("register", "before", 130.0, "default")]  # --compare: the revision's ratio, shown, not the bar
    ((text, met),) = report(steps, argparse.Namespace())
    assert not met and "before/native in this run 1.300" in text
    capsys.readouterr()
    counted = step("calls", "python", 1000.0)
    counted.expected = {"national": 100, "international": 100, "blocked": 20, "always_proxy": 60}
    counted.counted = {"national": 100, "international": 99, "blocked": 20, "media_proxy_calls": 60, "checked": 980}
    rules_taken([counted])
    out = capsys.readouterr().out
    assert "national 100/100  international 99/100  blocked 20/20  media_proxy_calls 60/60" in out
    assert "headers checked 980/980" in out


def test_the_instruction_runs_take_the_rules_and_the_revision_they_are_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    """Recipes: no REGISTER run (no rule sees one) and no "before"; the default rules: the revision beside."""
    from bench import instructions, run

    runs: List[Tuple[Optional[str], str, Optional[pathlib.Path], int]] = []
    reports: List[List[str]] = []

    def one_run(
        tools: Any, args: Any, valgrind: str, drive: Optional[str], folder: Any, mode: str, before: Any, times: int
    ) -> Any:
        runs.append((drive, mode, before, times))
        return instructions.Run({}, {})

    monkeypatch.setattr(instructions, "one_run", one_run)
    monkeypatch.setattr(instructions, "report", lambda pairs, heading: reports.append(list(pairs)))
    monkeypatch.setattr(run, "export_revision", lambda rev, folder: tmp_path / rev)
    tools = run.Tools("/x/opensips", "3.6.8", "/x/", "sipp", "rtpengine")
    args = argparse.Namespace(vg_rate=10, vg_seconds=1.0, vg_span=2.0, compare="526af31", steady=False)
    instructions.measure(tools, args, "valgrind", tmp_path / "recipes", "recipes")
    assert runs == [(None, "recipes", None, 1), ("calls", "recipes", None, 1), ("media", "recipes", None, 1)]
    assert reports == [["no media", "with rtpengine"]]
    runs.clear()
    reports.clear()
    instructions.measure(tools, args, "valgrind", tmp_path / "default", "default")
    assert [(d, b) for d, _m, b, _t in runs] == [(d, tmp_path / "526af31") for _l, d in instructions.TRAFFIC]
    # the steady state: each traffic twice in a row too, and a second table from those runs
    runs.clear()
    reports.clear()
    args.steady = True
    instructions.measure(tools, args, "valgrind", tmp_path / "steady", "recipes")
    assert [(d, t) for d, _m, _b, t in runs] == [(None, 1), ("calls", 1), ("calls", 2), ("media", 1), ("media", 2)]
    assert reports == [["no media", "with rtpengine"]] * 2


def test_the_benchmarks_media_ports_are_nobody_elses() -> None:
    """rtpengine's media range in bench.run: below the ephemeral range SIPp's per-call sockets take ports from
    (its ports ran out there at 1,500 calls/s), and never a port free_port hands to a listener."""
    from bench.run import MEDIA_PORTS
    from rig import ports

    media = range(MEDIA_PORTS[0], MEDIA_PORTS[1] + 1)
    assert media == ports.BENCH_MEDIA and len(media) >= 10000
    assert media.stop <= 32768  # Linux's default ephemeral range starts there
    assert all(p in ports.RESERVED for p in (media.start, media.stop - 1))
    assert not set(media) & set(ports.POOL)
    taken = {ports.free_port() for _ in range(50)}
    assert not taken & set(media)
