"""The router's rules as they are on disk now: gateway.ini and the operator's pyscripts/policy.py.

Restarting OpenSIPS drops every browser's WebSocket, so the files are read again while it runs:
each worker (each has its own interpreter after fork) looks at both files' modification times at
most once a second, on the first message after the second is up, and loads them again when either
changed.  A file that fails to read, import or check is refused: the reason is logged once (per
change of the file), and the rules loaded before keep routing.  Nothing is cached across a load:
a rule is called afresh for every request.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import time
import traceback
import types
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from . import core
from .policy import BLOCKED, CALLEES, Callee, Decision, Kind, Request, to_user
from .settings import Settings, load, settings_path

POLICY_ENV = "GATEWAY_POLICY"
CHECK_EVERY = 1.0  # seconds

RouteRule = Callable[[Request, Decision], Decision]
CalleeRule = Callable[[Request, Callee, Decision], Decision]
RegisterRule = Callable[[Request, Decision], Decision]


def default_policy_path() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, os.pardir, "policy.py"))


def policy_path(path: Optional[str] = None) -> str:
    return path or os.environ.get(POLICY_ENV) or default_policy_path()


class Rules(NamedTuple):
    settings: Settings
    route: RouteRule
    callee: Optional[CalleeRule]
    origin: str
    """Where the rules came from, for logs."""
    register: Optional[RegisterRule] = None
    """The operator's register(request, default), asked for each REGISTER after its digest check."""


def keep_default(request: Request, default: Decision) -> Decision:
    return default


def fixed_rules(settings: Settings, route: RouteRule = keep_default, callee: Optional[CalleeRule] = None,
                register: Optional[RegisterRule] = None) -> Rules:  # fmt: skip
    """Rules given as values (tests, tools): checked as loaded ones are; a Watcher of them reads no file."""
    rules = Rules(settings, route, callee, "<given rules>", register)
    check(rules)
    return rules


_loads = 0


#: This package's folder: a failure's place is named outside it when it has one (the operator's rules).
_OURS = os.path.dirname(os.path.abspath(__file__)) + os.sep


def where(exc: BaseException) -> str:
    """The line that raised ``exc``, as " (at FILE:LINE in FUNCTION)": the innermost one outside this package
    when there is one (the operator's policy file, a module it imports), else the innermost; none for an answer
    of the rules the gateway refused (core.Refused: its message names the answer).  No file is read."""
    frames = [(f.f_code.co_filename, line, f.f_code.co_name) for f, line in traceback.walk_tb(exc.__traceback__)]
    if not frames or isinstance(exc, core.Refused):  # the rules' answer, refused after their route() returned
        return ""
    theirs = [f for f in frames if not os.path.abspath(f[0]).startswith(_OURS)]
    filename, line, name = (theirs or frames)[-1]
    return f" (at {filename}:{line} in {name})"


def returned_at(rule: Callable[..., Any], *args: Any) -> str:
    """Where ``rule`` returns its answer to ``args``, as " (returned at FILE:LINE in NAME)", for a refused answer:
    found by asking the rule again with a profile hook that sees its own frame return (a rule is a function of
    its arguments).  A wrapper (``functools.wraps``: a decorator's, the tracer's) is looked through, and only
    the function it wraps is asked.  "" when that cannot tell (the rule raised this time, or is no Python
    function)."""
    rule = inspect.unwrap(rule)
    code = getattr(rule, "__code__", None)
    if code is None:
        return ""
    lines: List[int] = []

    def hook(frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "return" and frame.f_code is code:
            lines.append(frame.f_lineno)  # the outermost call's return comes last

    previous = sys.getprofile()
    sys.setprofile(hook)
    try:
        rule(*args)
    except Exception:  # noqa: BLE001 - then it cannot tell
        return ""
    finally:
        sys.setprofile(previous)
    return f" (returned at {code.co_filename}:{lines[-1]} in {code.co_name})" if lines else ""


def check_answer(decision: Any, settings: Settings, rule: Callable[..., Any], *args: Any,
                 callee: Optional[Callee] = None, explain: bool = True) -> None:  # fmt: skip
    """``core.check_decision`` of what ``rule(*args)`` answered; with ``explain``, its Refused also says where the
    rule returned it (``returned_at`` asks the rule again: a rule that keeps state sees one call more)."""
    try:
        core.check_decision(decision, settings, callee)
    except core.Refused as exc:
        if not explain:
            raise
        raise core.Refused(f"{exc}{returned_at(rule, *args)}") from None


class Functions(NamedTuple):
    """The operator's functions of a policy file."""

    route: RouteRule
    callee: Optional[CalleeRule] = None
    register: Optional[RegisterRule] = None


def import_policy(path: str) -> Functions:
    """The operator's functions from ``path``, compiled from the file's bytes as they are now, into a new
    module each time.  Not through importlib's loader: it takes __pycache__'s bytecode when the source's
    whole-second modification time and size match it, so a policy saved twice within a second (at the
    same length) would run the first save's code (seen on 3.6.8 and 4.0.1, tests/e2e/test_reload.py)."""
    global _loads
    _loads += 1
    module = types.ModuleType(f"gateway_policy_{_loads}")
    module.__file__ = path
    try:
        with open(path, "rb") as handle:
            code = compile(handle.read(), path, "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except Exception as exc:  # noqa: BLE001 - a file that does not import is refused with its reason
        raise ValueError(f"{path} does not import: {type(exc).__name__}: {exc}") from None
    route = getattr(module, "route", None)
    callee = getattr(module, "callee", None)
    register = getattr(module, "register", None)
    if not callable(route) or len(inspect.signature(route).parameters) != 2:
        raise ValueError(f"{path}: needs a function route(request, default)")
    if callee is not None and (not callable(callee) or len(inspect.signature(callee).parameters) != 3):
        raise ValueError(f"{path}: callee must be a function callee(request, callee, decision)")
    if register is not None and (not callable(register) or len(inspect.signature(register).parameters) != 2):
        raise ValueError(f"{path}: register must be a function register(request, default)")
    return Functions(route, callee, register)


def sample_request(settings: Settings) -> Request:
    """A browser user's call to another user of ours: what a policy is tried on before it is taken."""
    domain = sorted(settings.domains)[0]
    return Request("INVITE", "bob", domain, "alice", domain, "bob", domain, "127.0.0.1", 5060, "wss",
                   Kind.BROWSER, True, True, tuple((h, None) for h in settings.tables.headers))  # fmt: skip


#: The user of the REGISTERs a load tries register() on, from TEST-NET-1 (RFC 5737): a rule that keeps state
#: (counts REGISTERs per user) sees them, and may leave this user alone.
SAMPLE_REGISTRANT, SAMPLE_SOURCE = "load-check", "192.0.2.10"


def sample_registers(settings: Settings) -> Iterator[Request]:
    """A browser's REGISTER and a SIP phone's, as register() sees them (the user in To and From, no R-URI user):
    of SAMPLE_REGISTRANT from SAMPLE_SOURCE."""
    browser = sample_request(settings)._replace(
        method="REGISTER", ruri_user="", from_user=SAMPLE_REGISTRANT, to_user=SAMPLE_REGISTRANT,
        source_ip=SAMPLE_SOURCE, has_sdp=False,
    )  # fmt: skip
    yield browser
    yield browser._replace(transport="udp", caller=Kind.SIP, caller_behind_nat=False)


def check_register_answer(decision: Any, rule: RegisterRule, request: Request, explain: bool = True) -> None:
    """core.Refused unless register()'s ``decision`` for ``request`` is ``REGISTERED`` or a reply; with
    ``explain``, its message says where the rule returned it (as ``check_answer``'s)."""
    try:
        core.check_register_decision(decision, REGISTERED)
    except core.Refused as exc:
        if not explain:
            raise
        raise core.Refused(f"{exc}{returned_at(rule, request, REGISTERED)}") from None


#: What the gateway does with a REGISTER when register() keeps it: the registration is saved.
REGISTERED = to_user()


def check(rules: Rules) -> None:
    """Try the rules on a sample call (and register() on a sample REGISTER); ValueError when they raise or answer
    something the gateway cannot do."""
    request = sample_request(rules.settings)
    try:
        decision = rules.route(request, to_user())
        check_answer(decision, rules.settings, rules.route, request, to_user())
        if rules.callee is not None:
            for callee in CALLEES:
                chosen = rules.callee(request, callee, decision)
                check_answer(chosen, rules.settings, rules.callee, request, callee, decision, callee=callee)
        if rules.register is not None:
            sample = next(sample_registers(rules.settings))
            check_register_answer(rules.register(sample, REGISTERED), rules.register, sample)
    except Exception as exc:  # noqa: BLE001 - any failure refuses the file, with its reason
        raise ValueError(
            f"{rules.origin}: rules fail on a sample call: {type(exc).__name__}: {exc}{where(exc)}"
        ) from None


#: Numbers callers dial every day, tried (``doubts``) besides one per dial-plan prefix and the always-proxied users.
SAMPLE_NUMBERS = ("112", "911", "110", "0301234567", "+4930123456", "0044201234567", "0800123456", "0900123456")


#: A rule slower than this on a sample call is named in the load's warning (seconds): a worker waits for its rules.
SLOW_RULE = 0.1
SLOW = "route() took "

#: Another domain's user, for the sample call to sip_destination.
ELSEWHERE = ("bob", "elsewhere.example")


def sample_calls(settings: Settings) -> Iterator[Tuple[str, str, Request]]:
    """Calls from a browser user and from a SIP phone to another user, to the numbers of SAMPLE_NUMBERS, to a
    number of each [dialplan] prefix, to each always_proxy user and, with a sip_destination, to another domain's
    user: (the caller's kind, the called, the request)."""
    first = sample_request(settings)
    phone = first._replace(from_user="carol", source_ip="198.51.100.7", transport="udp", caller=Kind.SIP,
                           caller_behind_nat=False)  # fmt: skip
    prefixes = [p.text + "123456789" for p, _ in settings.tables.dialplan if p.regex is None]
    for caller, kind in ((first, "a browser"), (phone, "a SIP phone")):
        for user in dict.fromkeys(("bob", *SAMPLE_NUMBERS, *prefixes, *sorted(settings.tables.always_proxy))):
            yield kind, user, caller._replace(ruri_user=user, to_user=user)
        if settings.sip_destination is not None:
            user, domain = ELSEWHERE
            yield kind, f"{user}@{domain}", caller._replace(ruri_user=user, ruri_domain=domain, to_user=user,
                                                            to_domain=domain)  # fmt: skip


def doubts(rules: Rules) -> List[str]:
    """Where the rules fail on sample calls (``sample_calls``; check() refuses rules that fail on the first of
    them): each reason, with the calls that met it; their like would get 500.  A warning, not a refusal: such
    calls may never come, and a rule that reads what a sample lacks (a header) may fail there rightly."""
    found: Dict[str, Tuple[Dict[str, None], Dict[str, None]]] = {}
    slowest = (0.0, "", "")
    for kind, user, request in sample_calls(rules.settings):
        local = rules.settings.is_local(request.ruri_domain)
        default = rules.settings.tables.apply(request, to_user() if local else rules.settings.destination, True)
        if default is BLOCKED:
            continue  # answered before any rule
        try:
            started = time.perf_counter()
            decision = rules.route(request, default)
            took = time.perf_counter() - started
            if took > slowest[0]:
                slowest = (took, user, kind)
            check_answer(decision, rules.settings, rules.route, request, default)
            if rules.callee is not None and decision.target == "user":
                for callee in CALLEES:
                    chosen = rules.callee(request, callee, decision)
                    check_answer(chosen, rules.settings, rules.callee, request, callee, decision, callee=callee)
        except Exception as exc:  # noqa: BLE001 - said, not raised
            users, kinds = found.setdefault(f"{type(exc).__name__}: {exc}{where(exc)}", ({}, {}))
            users[user] = kinds[kind] = None
    said = [f"calls to {', '.join(users)} (from {' and '.join(kinds)}): {reason}"
            for reason, (users, kinds) in found.items()]  # fmt: skip
    took, user, kind = slowest
    if took > SLOW_RULE:
        said.append(f"{SLOW}{took * 1000:.0f} ms on a call to {user} (from {kind}): the OpenSIPS worker that "
                    "took the request waits for it, and for the sample calls of each load (keep rules quick: no "
                    "network, no sleep)")  # fmt: skip
    if rules.register is not None:
        for request in sample_registers(rules.settings):
            try:
                check_register_answer(rules.register(request, REGISTERED), rules.register, request)
            except Exception as exc:  # noqa: BLE001 - said, not raised
                said.append(f"a REGISTER from {request.caller.value} {request.to_user}: {type(exc).__name__}: "
                            f"{exc}{where(exc)}")  # fmt: skip
    return said


#: How the line of ``warn_doubts`` begins (the python module logs at error level only: the words say it is less).
WARNING = "gateway: warning: "


def warn_doubts(rules: Rules, log: Callable[[str], Any]) -> None:
    """Log ``doubts(rules)``, if any: the failures in one line, a slow rule in another."""
    found = doubts(rules)
    slow = [doubt for doubt in found if doubt.startswith(SLOW)]
    failed = [doubt for doubt in found if not doubt.startswith(SLOW)]
    if failed:
        log(f"{WARNING}the rules from {rules.origin} fail on sample calls, whose like would get 500: "
            + "; ".join(failed) + "\n")  # fmt: skip
    for doubt in slow:
        log(f"{WARNING}the rules from {rules.origin} are slow: {doubt}\n")


def load_rules(settings_file: Optional[str] = None, policy_file: Optional[str] = None) -> Rules:
    """gateway.ini and policy.py, checked; ValueError (with the file and the reason) when they cannot route."""
    settings = load(settings_file)
    path = policy_path(policy_file)
    if os.path.exists(path):
        functions = import_policy(path)
    elif policy_file or os.environ.get(POLICY_ENV):
        raise ValueError(f"{path} does not exist")
    else:
        functions = Functions(keep_default)
    rules = Rules(settings, functions.route, functions.callee, f"{path} with {settings_path(settings_file)}",
                  functions.register)  # fmt: skip
    check(rules)
    return rules


def _stamp(path: str) -> Tuple[float, int]:
    try:
        found = os.stat(path)
    except OSError:
        return (0.0, -1)
    return (found.st_mtime, found.st_size)


class Watcher:
    """The current rules of this worker, loaded again when a file changes (checked at most once a second)."""

    def __init__(
        self,
        rules: Rules,
        log: Callable[[str], Any],
        settings_file: Optional[str] = None,
        policy_file: Optional[str] = None,
        clock: Callable[[], float] = time.monotonic,
        watch: bool = True,
    ) -> None:
        self.rules = rules
        self.watch = watch
        self.log = log
        self.clock = clock
        self.settings_file = settings_path(settings_file)
        self.policy_file = policy_path(policy_file)
        self._stamps = self._both()
        self.next_check = clock() + CHECK_EVERY if watch else math.inf
        """When the files are looked at next (``clock()``); until then ``rules`` holds."""
        self._refused: Optional[Tuple[Tuple[float, int], ...]] = None
        self.generation = 0
        """Counts the loads taken: what the router wrote into $vars for older rules is written again."""

    def _both(self) -> Tuple[Tuple[float, int], ...]:
        return (_stamp(self.settings_file), _stamp(self.policy_file))

    def current(self) -> Rules:
        now = self.clock()
        if now < self.next_check or not self.watch:
            return self.rules
        self.next_check = now + CHECK_EVERY
        stamps = self._both()
        if stamps == self._stamps or stamps == self._refused:
            return self.rules
        try:
            rules = load_rules(self.settings_file, self.policy_file)
        except Exception as exc:  # noqa: BLE001 - a bad file must never stop the routing
            self._refused = stamps
            self.log(f"gateway: new rules refused, the previous ones keep routing: {type(exc).__name__}: {exc}\n")
            return self.rules
        self._stamps, self._refused = stamps, None
        self.rules = rules
        self.generation += 1
        self.log(f"gateway: rules loaded again from {rules.origin}\n")
        warn_doubts(rules, self.log)
        return rules
