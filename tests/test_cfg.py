"""opensips.cfg and the Python side agree: flags, return codes, routes, and how host functions are called."""

from __future__ import annotations

import ast
import pathlib
import re
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from fakes import cfgscript, runtime
from fakes.signatures import SIGNATURES, STATEMENTS, Kind
from gateway import core, host, sdp

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
    return names | {core.IPV6_BFLAG}


def test_every_flag_the_python_side_uses_is_named_in_the_cfg() -> None:
    assert python_flag_names() <= runtime.declared_flags(runtime.load_script())


def test_message_and_branch_flags_are_named_as_such() -> None:
    message = set(re.findall(r'\b(?:set|reset|is)flag\("(\w+)"', CFG))
    branch = set(re.findall(r'\b(?:set|reset|is)bflag\("(\w+)"', CFG))
    assert {f for fl in core.SOURCE_FLAGS.values() for f in fl} | {core.NAT_FLAG} <= message
    assert {f for fl in core.REGISTRATION_BFLAGS.values() for f in fl} | {core.IPV6_BFLAG} <= branch


SCRIPT = cfgscript.parse(CFG)


def cases(route: str) -> Set[str]:
    """The actions a route of the cfg does: the cases of its switch over its list."""
    return {
        str(case.label)
        for n in walk(SCRIPT.route("route", route).body)
        if isinstance(n, cfgscript.Switch)
        for case in n.cases
        if not case.default
    }


@pytest.mark.parametrize(
    ("route", "actions"),
    [
        ("request_actions", host.REQUEST_ACTIONS),
        ("branch_actions", host.BRANCH_ACTIONS),
        ("reply_actions", host.REPLY_ACTIONS),
        ("failure_actions", host.FAILURE_ACTIONS),
    ],
)
def test_each_kind_of_route_does_every_action_the_router_may_answer_there_and_no_other(
    route: str, actions: Set[str]
) -> None:
    """The instruction set: gateway.host.Act on one side, a line of the cfg for each action in the route of its
    kind on the other ("none", nothing to do, has no line)."""
    assert cases(route) == set(actions) - {host.Act.NONE}


def test_every_action_is_done_somewhere() -> None:
    assert host.REQUEST_ACTIONS | host.BRANCH_ACTIONS | host.REPLY_ACTIONS | host.FAILURE_ACTIONS == host.ACTIONS


def walk(node: object) -> Iterator[object]:
    """Every node of a parsed route, statements and expressions."""
    yield node
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from walk(item)
    elif hasattr(node, "__dataclass_fields__"):
        for name in node.__dataclass_fields__:
            yield from walk(getattr(node, name))


def test_the_cfg_has_no_bit_tests() -> None:
    """What the router asks for is named: no numeric masks anywhere in the routes."""
    for route in SCRIPT.routes.values():
        ops = {n.op for n in walk(route.body) if isinstance(n, cfgscript.Binary)}
        assert not ops & {"&", "|"}, route.name


def test_every_function_the_cfg_calls_is_one_the_fake_knows() -> None:
    called = {n.name for route in SCRIPT.routes.values() for n in walk(route.body) if isinstance(n, cfgscript.Call)}
    known = set(SIGNATURES) | set(STATEMENTS)
    assert {"python_exec", "t_relay", "lookup", "rtpengine_offer"} <= called
    assert called - known == set()


def test_the_cfg_counts_what_the_router_names() -> None:
    assert set(core.STATISTICS) <= declared_statistics()
    assert {f"count_{name.split('_', 1)[1]}" for name in core.STATISTICS if name.startswith("calls_")} <= host.ACTIONS


def test_the_cfg_passes_the_facts_each_route_reads() -> None:
    assert exec_arguments() == {
        "on_request": host.REQUEST_FACTS,
        "on_in_dialog": host.IN_DIALOG_FACTS,
        "on_lookup_failure": host.LOOKUP_FAILURE_FACTS,
        "on_reply": host.REPLY_FACTS,
        "on_failure": host.FAILURE_FACTS,
        "is_trusted": host.TRUSTED_FACTS,
        "on_register": host.REGISTER_FACTS,
        "on_register_rule": host.REGISTER_RULE_FACTS,  # a new request's and more: register() sees a Request
    }
    assert 'python_exec("on_authorized")' in CFG  # the request's facts are the router's from on_request


def test_the_cfg_keeps_and_compares_a_registers_facts_each_as_the_router_reads_it() -> None:
    """route[gw_register] takes a kept answer again only when every fact of REGISTER_FACTS is the kept one:
    it compares each (REGISTER_KEYS: the domains unencoded) and keeps each beside the answer."""
    keys = host.REGISTER_KEYS
    encoded = [re.sub(r"^\$(rd|fd|td)$", r"$(\1{s.encode.hexa})", fact) for fact, _var in keys]
    assert encoded == host.REGISTER_FACTS.split(host.SEP)
    condition = re.search(r"route\[gw_register\] \{\n\tif \((.*)\) \{\n", CFG)
    assert condition is not None
    assert set(condition.group(1).split(" || ")) == {
        '$var(gw_register_kept) != "1"',
        "$Ts != $var(gw_register_second)",
        *(f"{f} != {v}" for f, v in keys),
    }
    keep = re.search(r"route\[gw_register_keep\] \{\n(.*?)\n\}", CFG, re.S)
    assert keep is not None
    assert keep.group(1).split("\n") == [f"\t{v} = {f};" for f, v in keys]
    assert len({v for _f, v in keys}) == len(keys)


def test_the_cfg_keeps_and_compares_a_replys_facts_each_as_the_router_reads_it() -> None:
    """route[gw_python_reply] takes a kept answer again only when every fact the router's reply decision reads
    is the kept one (REPLY_KEYS: REPLY_FACTS but the source and the exchange, which must be NULL; the
    Content-Type unencoded), and keeps each beside the answer."""
    keys = host.REPLY_KEYS
    facts = host.REPLY_FACTS.split(host.SEP)
    encoded = [re.sub(r"^\$hdr\(Content-Type\)$", host.CONTENT_TYPE, fact) for fact, _var in keys]
    assert encoded == [f for f in facts if f not in ("$si", "$sp", host.EXCHANGE_AVP)]
    condition = re.search(r"route\[gw_python_reply\] \{\n(?:.*\n)*?\tif \((.*)\) \{\n\t\tif \(!python_exec", CFG)
    assert condition is not None
    assert set(condition.group(1).split(" || ")) == {
        '$var(gw_reply_kept) != "1"',
        "$Ts != $var(gw_reply_second)",
        f"{host.EXCHANGE_AVP} != NULL",
        *(f"{f} != {v}" for f, v in keys),
    }
    keep = re.search(r"route\[gw_reply_keep\] \{\n(.*?)\n\}", CFG, re.S)
    assert keep is not None
    assert keep.group(1).split("\n") == [f"\t{v} = {f};" for f, v in keys]
    assert len({v for _f, v in keys} | {v for _f, v in host.REGISTER_KEYS}) == len(keys) + len(host.REGISTER_KEYS)


#: Variables whose printed value a sender cannot fill with other bytes than UTF-8: numbers, names
#: the parser checked as tokens, values the gateway wrote itself.
SAFE_FACTS = {
    "$rm", "$si", "$socket_in(proto)", host.NAT_VAR, host.PRIVATE_VAR, "$cl", "$hdrcnt(Contact)", "$sp", "$rs",
    "$T_branch_idx", "$DLG_dir", host.DIALOG_RECORD, host.EXCHANGE_AVP, "$rc", "$socket_in(af)", host.PIKE_DROP_VAR,
    host.BODY_VAR, "$T_reply_code", host.SILENT_VAR, host.FAILOVER_AVP, host.TRUNK_AVP,
}  # fmt: skip


def test_no_fact_carries_the_senders_bytes_as_they_are() -> None:
    # PyUnicode_FromString(arg) fails on bytes that are not UTF-8 and leaves the error pending in
    # the worker (python_exec.c): what a sender wrote goes in hex-encoded.
    for facts in [*exec_arguments().values(), host.REGISTER_FACTS]:
        for fact in re.split(f"[{host.SEP}{host.HEAD_END}]", facts):
            assert fact in SAFE_FACTS or fact.endswith("{s.encode.hexa})"), fact


def test_the_cfg_tests_the_sdp_with_the_routers_expression() -> None:
    # The request route's own test of the body (the router reads its result, $var(gw_private)).
    test = runtime.private_sdp_test()
    assert test is not None and test.pattern == sdp.PRIVATE_SDP
    assert CFG.count("$rb =~") == 1


def test_every_python_exec_names_a_router_method() -> None:
    methods = set(re.findall(r'python_exec\("(\w+)"', CFG))
    assert methods == set(exec_arguments()) | {"on_authorized"}
    assert all(callable(getattr(host.Router, m)) for m in methods)


def test_the_routes_the_cfg_arms_exist() -> None:
    for kind, name in re.findall(r't_on_(branch|reply|failure)\("(\w+)"\)', CFG):
        prefix = {"branch": "branch_route", "reply": "onreply_route", "failure": "failure_route"}[kind]
        assert (prefix, name) in SCRIPT.routes


def test_the_branch_route_picks_a_plan_for_every_kind_of_contact() -> None:
    branch = SCRIPT.route("branch_route", "gw_branch")
    text = CFG[CFG.index("branch_route[gw_branch]") :]
    text = text[: text.index("\n}")]
    assert all(var in text for var in host.BRANCH_VARS.values()) and branch.body


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
    """docs/host-facts.md: such a call segfaults the worker; every one must pass None explicitly."""
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
