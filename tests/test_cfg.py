"""opensips.cfg and the Python side agree: flags, return codes, routes, and how host functions are called."""

from __future__ import annotations

import ast
import pathlib
import re
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from fakes import runtime
from fakes.signatures import SIGNATURES, Kind
from gateway import core, host, sdp
from gateway.model import Do, Step, Verdict

ROOT = pathlib.Path(__file__).resolve().parent.parent
CFG = (ROOT / "opensips" / "opensips.cfg").read_text()
PYSCRIPTS = sorted((ROOT / "pyscripts").rglob("*.py"))

# call_function calls whose name is not a literal: every value the name can take.
DYNAMIC_NAMES: Dict[str, Set[str]] = {}


def exec_arguments() -> Dict[str, str]:
    """The argument each python_exec of the cfg passes, by method, its escapes read as OpenSIPS reads them."""
    found = re.findall(r'python_exec\("(\w+)", "([^"]*)"\)', CFG)
    return {name: text.replace("\\n", "\n").replace("\\t", "\t") for name, text in found}


def declared_statistics() -> Set[str]:
    return {str(v) for v in runtime.load_script().modparam("statistics", "variable")}


def python_flag_names() -> Set[str]:
    names = {core.NAT_FLAG}
    names |= {flag for flags in core.SOURCE_FLAGS.values() for flag in flags}
    names |= {flag for flags in core.REGISTRATION_BFLAGS.values() for flag in flags}
    return names


def test_every_flag_the_python_side_uses_is_named_in_the_cfg() -> None:
    assert python_flag_names() <= runtime.declared_flags(runtime.load_script())


def test_message_and_branch_flags_are_named_as_such() -> None:
    message = set(re.findall(r'\b(?:set|reset|is)flag\("(\w+)"', CFG))
    branch = set(re.findall(r'\b(?:set|reset|is)bflag\("(\w+)"', CFG))
    assert {f for fl in core.SOURCE_FLAGS.values() for f in fl} | {core.NAT_FLAG} <= message
    assert {f for fl in core.REGISTRATION_BFLAGS.values() for f in fl} <= branch


def test_the_cfg_acts_on_every_verdict() -> None:
    handled = {int(n) for n in re.findall(r"\$var\(gw_verdict\) == (\d+)", CFG)}
    assert handled == {int(v) for v in Verdict if v > 0}
    assert "if ($var(gw_do) < 0 || $var(gw_verdict) == 4)\n\t\tdrop;" in CFG
    assert int(Verdict.DROP) == int(Verdict.REPLY) == 4  # one in the branch route, the other in the request route
    assert all(v != 0 for v in Verdict)
    assert max(Verdict) <= Do.VERDICT_MASK


#: What the cfg does for each bit of gateway.model.Do (the line after its test).
ACTIONS = {
    "SRC_WS": 'setflag("SRC_WS");',
    "SRC_NAT": 'setflag("SRC_NAT");',
    "FORCE_RPORT": "force_rport();",
    "FIX_CONTACT": "fix_nated_contact();",
    "FIX_REGISTER": "fix_nated_register();",
    "BFLAG_WEBRTC": 'setbflag("WEBRTC");',
    "BFLAG_NATED": 'setbflag("NATED");',
    "SAVE": 'save("location");',
    "LOOKUP": 'lookup("location");',
    "CREATE_DIALOG": "create_dialog();",
    "RECORD_ROUTE": "record_route();",
    "TOPOLOGY_HIDING": "topology_hiding();",
    "STORE_RECORD": f"$dlg_val(gw) = {host.RECORD_VAR};",
    "PLAIN_CONTACT": 'if (!isbflagset("WEBRTC") && !isbflagset("NATED")) {',
    "RTP_OFFER": f'if (!rtpengine_offer("{host.MEDIA_FLAGS_VARS[Step.OFFER]}"))',
    "RTP_ANSWER": f'if (!rtpengine_answer("{host.MEDIA_FLAGS_VARS[Step.ANSWER]}"))',
    "RTP_DELETE": f'if (!rtpengine_delete("{host.MEDIA_FLAGS_VARS[Step.DELETE]}"))',
    "ARM_REPLY": f"if ([$var(gw_do) & {Do.QUIET_REPLIES}])",  # t_on_reply("gw_reply_quiet"), else "gw_reply"
    "QUIET_REPLIES": 't_on_reply("gw_reply_quiet");',
    "TRACK_DIALOG": "$dlg_val(gw_track) = 1;",
    "AUTH_WWW": f'if (!www_authorize("{host.REALM_VAR}", "{core.SUBSCRIBERS}")) {{',
    "AUTH_PROXY": f'if (!proxy_authorize("{host.REALM_VAR}", "{core.SUBSCRIBERS}")) {{',
    "STAT_WEB_TO_WEB": 'update_stat("calls_web_to_web", 1);',
    "STAT_WEB_TO_SIP": 'update_stat("calls_web_to_sip", 1);',
    "STAT_SIP_TO_WEB": 'update_stat("calls_sip_to_web", 1);',
    "STAT_SIP_TO_SIP": 'update_stat("calls_sip_to_sip", 1);',
    "STAT_MEDIA_PROXY": 'update_stat("media_proxy_calls", 1);',
    "QUIET_ACK": f"if ([$var(gw_do) & {Do.QUIET_BYE}])",  # $dlg_val(gw_quiet) = "bye", else "ack"
    "QUIET_BYE": '$dlg_val(gw_quiet) = "bye";',
}
#: Bits read by one route only, shared with a bit another route reads (every bit is taken).
SHARED = {"QUIET_BYE": ("QUIET_REPLIES", "route[gw_python_reply]", "branch_route[gw_branch]")}


def bits_of_do() -> Dict[str, int]:
    return {k: v for k, v in vars(Do).items() if k.isupper() and k != "VERDICT_MASK"}


def test_every_bit_the_router_returns_is_acted_on_by_the_cfg() -> None:
    bits = bits_of_do()
    assert set(bits) == set(ACTIONS)
    own = {name: value for name, value in bits.items() if name not in SHARED}
    assert len(set(own.values())) == len(own) and all(v > Do.VERDICT_MASK for v in bits.values())
    assert all(bits[name] == bits[other] for name, (other, _, _) in SHARED.items())
    assert sum(own.values()) + Do.VERDICT_MASK < 2**31  # python_exec returns a C int; negative means failed
    # $var(gw_call): the initial INVITE's code, kept for its branch routes
    tests = re.findall(r"if \(\[\$var\(gw_(?:do|call)\) & (\d+)\]\)(?: \{)?(?=\n\s*(.+))", CFG)
    acted: Dict[int, Set[str]] = {}
    for value, line in tests:
        acted.setdefault(int(value), set()).add(line.split("  #")[0].strip())
    for name, value in bits.items():
        assert ACTIONS[name] in acted.get(value, set()), f"Do.{name} ({value}): the cfg does {acted.get(value)}"


def cfg_blocks() -> Dict[str, str]:
    """Each route of the cfg by its head (``route[gw_act]``, ``branch_route[gw_branch]``; ``route`` the main one)."""
    heads = list(re.finditer(r"^(\w*route(?:\[\w+\])?) \{$", CFG, re.M))
    ends = [h.start() for h in heads[1:]] + [len(CFG)]
    return {h.group(1): CFG[h.end() : end] for h, end in zip(heads, ends)}


def test_a_shared_bit_is_read_where_each_of_its_meanings_applies_only() -> None:
    blocks = cfg_blocks()
    for name, (other, route, other_route) in SHARED.items():
        test = f"[$var(gw_do) & {getattr(Do, name)}]"
        assert {head for head, text in blocks.items() if test in text} == {route, other_route}, name
        assert ACTIONS[name] in blocks[route] and ACTIONS[other] in blocks[other_route]


def test_the_cfgs_group_tests_cover_their_bits() -> None:
    bits = bits_of_do()
    groups = {
        248: ("SRC_WS", "SRC_NAT", "FORCE_RPORT", "FIX_CONTACT", "FIX_REGISTER"),
        3840: ("BFLAG_WEBRTC", "BFLAG_NATED", "SAVE", "LOOKUP"),
        61440: ("CREATE_DIALOG", "RECORD_ROUTE", "TOPOLOGY_HIDING", "STORE_RECORD"),
        917504: ("RTP_OFFER", "RTP_ANSWER", "RTP_DELETE"),
        25165824: ("AUTH_WWW", "AUTH_PROXY"),
        1040187392: ("STAT_WEB_TO_WEB", "STAT_WEB_TO_SIP", "STAT_SIP_TO_WEB", "STAT_SIP_TO_SIP", "STAT_MEDIA_PROXY"),
    }
    for mask, names in groups.items():
        assert f"[$var(gw_do) & {mask}]" in CFG
        assert mask == sum(bits[n] for n in names)


def test_the_cfg_counts_what_the_router_names() -> None:
    assert set(host.STAT_BITS) == set(core.STATISTICS) <= declared_statistics()


def test_the_cfg_passes_the_facts_each_route_reads() -> None:
    passed = exec_arguments()
    assert passed == {
        "on_request": host.REQUEST_FACTS,
        "on_in_dialog": host.IN_DIALOG_FACTS,
        "on_lookup_failure": host.LOOKUP_FAILURE_FACTS,
        "on_branch": host.BRANCH_FACTS,
        "on_reply": host.REPLY_FACTS,
        "on_failure": host.FAILURE_FACTS,
        "is_trusted": host.TRUSTED_FACTS,
    }


#: Variables whose printed value a sender cannot fill with other bytes than UTF-8: numbers, names
#: the parser checked as tokens, values the gateway wrote itself.
SAFE_FACTS = {
    "$rm", "$si", "$socket_in(proto)", host.NAT_VAR, host.PRIVATE_VAR, host.BODY_VAR, "$hdrcnt(Contact)", "$sp", "$rs",
    "$T_branch_idx",
    "$bf", "$DLG_dir", host.DIALOG_RECORD, host.EXCHANGE_AVP, "$var(gw_found)",
}  # fmt: skip


def test_no_fact_carries_the_senders_bytes_as_they_are() -> None:
    # PyUnicode_FromString(arg) fails on bytes that are not UTF-8 and leaves the error pending in
    # the worker (python_exec.c): what a sender wrote goes in as a length or hex-encoded.
    for facts in exec_arguments().values():
        for fact in facts.split(host.SEP):
            assert fact in SAFE_FACTS or fact.endswith(("{s.len})", "{s.encode.hexa})")), fact


def test_the_cfg_runs_the_routers_nat_tests() -> None:
    assert f'if (nat_uac_test("{core.NAT_TESTS}"))\n\t\t{host.NAT_VAR} = 1;' in CFG


def test_the_cfg_tests_the_sdp_with_the_routers_expression() -> None:
    # The request route's own test of the body (the router reads its result, $var(gw_private)).
    test = runtime.private_sdp_test()
    assert test is not None and test.pattern == sdp.PRIVATE_SDP
    assert CFG.count("$rb =~") == 1
    assert f"\t\t{host.PRIVATE_VAR} = 1;" in CFG
    assert f"\t\t{host.BODY_VAR} = 1;" in CFG and CFG.count("if ($cl > 0)") == 2  # request and reply routes


def test_every_python_exec_names_a_router_method() -> None:
    methods = set(re.findall(r'python_exec\("(\w+)"', CFG))
    assert methods == set(exec_arguments())
    assert all(callable(getattr(host.Router, m)) for m in methods)


def test_the_routes_the_cfg_arms_exist() -> None:
    for kind, name in re.findall(r't_on_(branch|reply|failure)\("(\w+)"\)', CFG):
        prefix = {"branch": "branch_route", "reply": "onreply_route", "failure": "failure_route"}[kind]
        assert f"{prefix}[{name}]" in CFG


def test_the_fail_safe_knows_when_the_cfg_already_loose_routed() -> None:
    assert "$var(gw_lr) = 1;" in CFG and "$var(gw_lr) == 1 ||" in CFG


def call_function_calls(path: pathlib.Path, text: str) -> Iterator[Tuple[str, int, ast.Call]]:
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "call_function":
            yield str(path), node.lineno, node


def candidate_names(node: ast.expr) -> Set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return candidate_names(node.body) | candidate_names(node.orelse)
    key = ast.unparse(node)
    if key not in DYNAMIC_NAMES:
        raise AssertionError(f"cannot tell which function {key!r} names: add it to DYNAMIC_NAMES")
    return DYNAMIC_NAMES[key]


def call_problems(path: pathlib.Path, text: str) -> Tuple[int, List[str]]:
    """(calls checked, problems) for every call_function in a source text."""
    problems: List[str] = []
    seen = 0
    for where, line, call in call_function_calls(path, text):
        if call.keywords or any(isinstance(a, ast.Starred) for a in call.args):
            problems.append(f"{where}:{line}: arguments the check cannot count")
            continue
        given = len(call.args) - 1
        for name in candidate_names(call.args[0]):
            seen += 1
            params = SIGNATURES.get(name)
            if params is None:
                problems.append(f"{where}:{line}: {name} is not a function the hosts export")
                continue
            mandatory = max((i + 1 for i, p in enumerate(params) if not p.optional), default=0)
            if not mandatory <= given <= len(params):
                problems.append(f"{where}:{line}: {name} takes {mandatory}..{len(params)} arguments, gets {given}")
            left_out = [i + 1 for i in range(given, len(params)) if params[i].kind in (Kind.INT, Kind.VAR)]
            if left_out:
                problems.append(f"{where}:{line}: {name} leaves out int/var parameter(s) {left_out}")
            for arg in call.args[1:]:
                if isinstance(arg, ast.Constant) and not (arg.value is None or isinstance(arg.value, str)):
                    problems.append(f"{where}:{line}: {name} gets {arg.value!r}: only str or None")
    return seen, problems


def test_no_code_path_leaves_out_an_optional_int_or_var_parameter() -> None:
    """FACTS.md: such a call segfaults the worker; every one must pass None explicitly."""
    seen, problems = 0, list[str]()
    for path in PYSCRIPTS:
        count, found = call_problems(path.relative_to(ROOT), path.read_text())
        seen, problems = seen + count, problems + found
    # The router itself makes none (the cfg makes every host function call): this keeps an operator's own.
    assert problems == [], f"{seen} call_function calls checked"


@pytest.mark.parametrize(
    ("snippet", "complaint"),
    [
        ('msg.call_function("setbflag", "WEBRTC")', "leaves out int/var parameter(s) [2]"),
        ('msg.call_function("rtpengine_offer", flags)', "leaves out int/var parameter(s) [2, 3]"),
        ('msg.call_function("sl_send_reply", 404, "Not Found")', "only str or None"),
        ('msg.call_function("xlog", "x")', "not a function the hosts export"),
        ('msg.call_function(name, "x")', "cannot tell which function"),
    ],
)
def test_the_check_catches_bad_calls(snippet: str, complaint: str) -> None:
    try:
        _, problems = call_problems(pathlib.Path("snippet.py"), snippet)
    except AssertionError as exc:
        problems = [str(exc)]
    assert any(complaint in p for p in problems), problems


CFG_ONLY = {
    "pike_check_req",
    "force_tcp_alias",
    "add_rcv_param",
    "is_registered",
    "match_dialog",
    "set_dlg_flag",
    "is_dlg_flag_set",
    "is_direction",
    "t_newtran",
    "t_reply",
    "t_on_branch",
    "t_on_reply",
    "t_on_failure",
    "t_relay",
    "sl_reply_error",
    "rtpengine_manage",
}


@pytest.mark.parametrize("name", sorted(set(SIGNATURES) - CFG_ONLY))
def test_the_fake_implements_every_function_python_may_call(name: str) -> None:
    """The rest are declared so the signature checks know them; only the cfg calls them."""
    assert callable(getattr(runtime.Gateway, "fn_" + name))


def test_runtime_code_uses_the_standard_library_only() -> None:
    import sys

    allowed = set(sys.stdlib_module_names) | {"gateway", "OpenSIPS", "__future__"}
    for path in PYSCRIPTS:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path}: imports {roots - allowed}"


def test_every_statistic_the_python_side_bumps_is_declared() -> None:
    assert set(core.STATISTICS) <= declared_statistics()
    assert "python_failures" in declared_statistics()


def test_the_site_files_are_included_around_the_modules() -> None:
    site, params = CFG.index('include_file "site.cfg"'), CFG.index('include_file "site-params.cfg"')
    first_module = CFG.index("\nloadmodule")
    assert site < first_module < params
    site_text = (ROOT / "opensips" / "site.cfg").read_text()
    assert "mpath" in site_text and "socket" in site_text and "modparam" not in site_text
