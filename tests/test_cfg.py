"""opensips.cfg and the Python side agree: flags, return codes, routes, and how host functions are called."""

from __future__ import annotations

import ast
import pathlib
import re
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from fakes import runtime
from fakes.signatures import SIGNATURES, Kind
from gateway import core, host
from gateway.model import Verdict

ROOT = pathlib.Path(__file__).resolve().parent.parent
CFG = (ROOT / "opensips" / "opensips.cfg").read_text()
PYSCRIPTS = sorted((ROOT / "pyscripts").rglob("*.py"))

# call_function calls whose name is not a literal: every value the name can take.
DYNAMIC_NAMES: Dict[str, Set[str]] = {
    "fix": {"fix_nated_register", "fix_nated_contact"},
    "action.function": {"rtpengine_offer", "rtpengine_answer"},
    "challenge.authorize": {"www_authorize", "proxy_authorize"},
    "challenge.challenge": {"www_challenge", "proxy_challenge"},
}


def python_flag_names() -> Set[str]:
    names = {core.NAT_FLAG}
    names |= {flag for flags in core.SOURCE_FLAGS.values() for flag in flags}
    names |= {flag for flags in core.REGISTRATION_BFLAGS.values() for flag in flags}
    return names


def test_every_flag_the_python_side_uses_is_named_in_the_cfg() -> None:
    assert python_flag_names() <= runtime.declared_flags()


def test_message_and_branch_flags_are_named_as_such() -> None:
    message = set(re.findall(r'\b(?:set|reset|is)flag\("(\w+)"', CFG))
    branch = set(re.findall(r'\b(?:set|reset|is)bflag\("(\w+)"', CFG))
    assert {f for fl in core.SOURCE_FLAGS.values() for f in fl} | {core.NAT_FLAG} <= message
    assert {f for fl in core.REGISTRATION_BFLAGS.values() for f in fl} <= branch


def test_the_cfg_acts_on_every_return_code() -> None:
    handled = {int(n) for n in re.findall(r"\$var\(verdict\) == (\d+)", CFG)}
    assert handled == {Verdict.RELAY, Verdict.HANDLED, Verdict.RELAY_INITIAL, Verdict.RELAY_TRACKED}
    assert f"if ($rc == {int(Verdict.DROP)})\n\t\tdrop;" in CFG
    assert (runtime.RELAY, runtime.HANDLED, runtime.RELAY_INITIAL, runtime.DROP, runtime.RELAY_TRACKED) == (
        Verdict.RELAY,
        Verdict.HANDLED,
        Verdict.RELAY_INITIAL,
        Verdict.DROP,
        Verdict.RELAY_TRACKED,
    )
    assert all(v != 0 for v in Verdict)


def test_every_python_exec_names_a_router_method() -> None:
    methods = set(re.findall(r'python_exec\("(\w+)"\)', CFG))
    assert methods == {"on_request", "on_branch", "on_reply", "on_failure", "is_trusted"}
    assert all(callable(getattr(host.Router, m)) for m in methods)


def test_the_routes_the_cfg_arms_exist() -> None:
    for kind, name in re.findall(r't_on_(branch|reply|failure)\("(\w+)"\)', CFG):
        prefix = {"branch": "branch_route", "reply": "onreply_route", "failure": "failure_route"}[kind]
        assert f"{prefix}[{name}]" in CFG


def test_the_fail_safe_knows_when_python_already_loose_routed() -> None:
    assert host.ROUTED_VAR in CFG


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
    assert seen > 10
    assert problems == []


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
    assert set(core.STATISTICS) <= runtime.declared_statistics()
    assert "python_failures" in runtime.declared_statistics()


def test_the_site_files_are_included_around_the_modules() -> None:
    site, params = CFG.index('include_file "site.cfg"'), CFG.index('include_file "site-params.cfg"')
    first_module = CFG.index("\nloadmodule")
    assert site < first_module < params
    site_text = (ROOT / "opensips" / "site.cfg").read_text()
    assert "mpath" in site_text and "socket" in site_text and "modparam" not in site_text
