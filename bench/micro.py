"""In-process micro-benchmark of the router: the decision core plus policy, each entry point, its host calls.

    python3 -m bench.micro                   # the default rules and the README's recipes (bench/recipes)
    python3 -m bench.micro --rules recipes

Calls run through the fake OpenSIPS (``fakes.runtime.Gateway``, ``fakes.ua.Network``)
with the router wrapped: every route method the fake host's runtime calls
(``python_exec``) is recorded on a tape, with each host call the router makes
(attribute reads, getHeader, get/set_pseudoVar, set_dst_uri, ...) and its
answer, and each call the router makes into the decision core and the policy
(the public functions of ``gateway.core``, ``gateway.sdp`` and
``gateway.policy``, the methods of policy's ``Decision`` and ``Tables``,
``parse``/``str`` of the model's records, and the operator's ``route`` and
``callee``) with its arguments.  Nothing here names a route or a host call in
advance: whatever entry points the router has and whatever it asks of the host
is what gets measured.  Router methods the runtime does not call (pike's
``is_trusted`` check) are called once over the context of an initial INVITE.

1. Per initial INVITE, as the router runs it: ``on_request``, and
   ``on_authorized`` after the cfg's digest check (the caller authenticates),
   which decide where the call goes, its headers and media, the call record and
   the plan of every kind of branch (the cfg's branch route runs the plans: no
   Python there).  The operator's rules run for every request; the router keeps
   answers of its own pure decisions by their complete inputs (a request's
   outcome by gateway.host.Outcome, which holds no source port; a reply's by
   its facts as its decision reads them, gateway.host.reply_key).  Three figures
   (target: under 10 us): the entry points with the same facts each time, and
   with facts that vary from call to call as bench.run's mix sends them
   (another source address and port each call, several called users or
   numbers: only what the outcome reads is kept, so both should be close); and the
   recorded core and policy calls replayed with their arguments, every decision
   taken afresh (the branch plans of all kinds made each time too).
2. Each entry point per message kind: the tape replayed through a stub ``msg``
   that hands back the recorded answers (checked once against the tape first),
   with the same facts and with varying facts (checked too: the same answer and
   host calls); the stub's own cost per host call is measured and subtracted,
   what is left is the router's Python.
3. The host calls per message kind, with what each costs inside OpenSIPS as
   ``bench.probe`` measured it (``--probe FILE``: a saved bench.probe output),
   and why each host call of an initial INVITE is there.

Two sets of rules (``--rules``): the default (bench/gateway.ini, pyscripts/policy.py as shipped)
and the README's recipes at once (bench/recipes: a dial plan, blocked numbers, headers,
always_proxy, rtpengine flags; calls to the dial plan's trunk, to a blocked number and from an
always-proxied caller besides).  Each with calls from a trusted source (as in ``bench.run``,
whose SIPp is a trusted source) and from our own users at untrusted addresses (digest auth:
challenged, then with credentials, then ``on_authorized``).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import enum
import inspect
import itertools
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from fakes.msgobj import FakeMsg
from fakes.runtime import Context, Endpoint, Gateway, exec_arguments
from fakes.ua import UA, Network, SyntheticPhone
from gateway import core, host, model, policy, sdp
from gateway.loader import import_policy
from gateway.settings import Settings
from gateway.settings import parse as parse_settings

from .mix import ALWAYS_PROXY
from .site import RULES

REPO = Path(__file__).resolve().parent.parent

#: What one python_exec and each host call add inside a real OpenSIPS 3.6.8, microseconds of CPU:
#: ``bench.probe``'s figures, the latest the repository holds (bench/README.md, "after: the router
#: decides": one operation per REGISTER, all processes, best of 2, on a quiet 2-vCPU machine).  Not
#: in-process figures: a worker finds the interpreter cold, and the python module finds the method
#: by name and parses each variable's name on every call.  ``--probe FILE`` reads a newer run's.
PROBE_US = {
    "python_exec": 3.8,  # of an empty method, without an argument
    "python_exec_arg": 3.7,  # the whole python_exec with the 12 facts of REQUEST_FACTS as its argument
    "call_function": 6.5,  # call_function("setflag", ...)
    "get_pseudoVar": 12.1,  # of the 12 facts at once
    "set_pseudoVar": 2.1,
    "getHeader": 1.7,
    "attribute": 0.9,  # msg.Method
}
#: bench.probe's variant names (the start of each) -> PROBE_US's keys.
PROBE_VARIANTS = {
    "python_exec, empty method": "python_exec",
    "python_exec with an argument": "python_exec_arg",
    "attribute read": "attribute",
    "getHeader": "getHeader",
    "set_pseudoVar": "set_pseudoVar",
    "get_pseudoVar": "get_pseudoVar",
    "call_function": "call_function",
}
COLUMNS = ("call_function", "get_pseudoVar", "set_pseudoVar", "getHeader", "attribute")
#: The addresses the trusted phones send from (TEST-NET-2: with the fake's in-memory rtpengine, a
#: phone there is not behind NAT); the first is where the recorded calls come from.
TRUSTED = ("198.51.100.10", "198.51.100.11", "198.51.100.12", "198.51.100.13")
TRUNK = TRUSTED[0]
#: Where untrusted senders' varied facts come from (TEST-NET-3: trusted nowhere).
UNTRUSTED = ("203.0.113.7", "203.0.113.8", "203.0.113.9", "203.0.113.10")
#: The facts that differ from one call to the next on a real gateway (bench.run's mix sends them so):
#: the source address and port (each phone its own, each call from a new socket), the called user.
SOURCE_ADDRESS, SOURCE_PORT, CALLED_USER, LENGTH = "$si", "$sp", "$(rU{s.encode.hexa})", "$cl"
#: Between the facts of python_exec's argument (host.SEP, host.HEAD_END): a split by it keeps them.
FACT_SEPARATORS = re.compile(f"([{host.SEP}{host.HEAD_END}])")
CALLED_USERS = ("erin", "frank", "gina", "henry")
#: How many distinct facts strings a varying-facts timing cycles through (more than the router keeps of
#: any: a memo that keeps whole requests or replies shows as a gap between same and varying).
VARYING = 20000
#: Where the recipes' trunks are on the fake network (TEST-NET-2, a SIP peer not behind NAT).
TRUNK_HOSTS = {"national": "198.51.100.40", "international": "198.51.100.41"}


def read_probe(text: str) -> Dict[str, float]:
    """The per-operation figures of a saved ``bench.probe`` output ("one: +3.80 us" of each variant)."""
    found: Dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"\s+(.+?)\s+[\d.]+ us\s+one:\s+([+-]?[\d.]+) us", line)
        if match is None:
            continue
        for prefix, key in PROBE_VARIANTS.items():
            if match.group(1).startswith(prefix):
                found[key] = float(match.group(2))
    return found


#: The decision core's totals: the best of this many rounds, one every SPREAD_S seconds.  This
#: machine runs the same loop at half speed for seconds at a time (a shared host's cores): rounds
#: taken back to back all fall in one such stretch, rounds spread over seconds find its full speed.
ROUNDS, SPREAD_S = 20, 0.25


def best_of(fn: Callable[[], object], repeat: int, rounds: int = 5) -> float:
    """Microseconds per call of ``fn``: the best of ``rounds`` timings of ``repeat`` calls."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best * 1e6


def spread_best_of(fns: Sequence[Callable[[], object]], repeat: int) -> List[float]:
    """best_of for each of ``fns``, their rounds taken in turn, ROUNDS of them SPREAD_S s apart."""
    best = [float("inf")] * len(fns)
    for _ in range(ROUNDS):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], best_of(fn, repeat, rounds=1))
        time.sleep(SPREAD_S)
    return best


# -- recording --------------------------------------------------------------------------------


@dataclass
class CoreCall:
    name: str
    fn: Callable[..., Any]
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]


@dataclass
class Tape:
    """One route method run over one message: its host calls with their answers, its core calls."""

    label: str
    route: str
    args: Tuple[Any, ...]
    """What python_exec passed besides msg (nothing, or the cfg's argument)."""
    host_calls: List[Tuple[str, bool, Tuple[Any, ...], Any]] = field(default_factory=list)
    """(name, is a method, arguments, answer) in order."""
    core_calls: List[CoreCall] = field(default_factory=list)
    result: Any = None
    raised: bool = False
    """A host call raised: the stub cannot replay that, the tape is not timed."""
    ctx: Optional[Context] = None
    router: Any = None
    """The router that made the tape (calls run on two fake hosts with different settings)."""
    pending: Any = None
    """For on_authorized: the request on_request left the router (``Router._pending``) before the digest
    check; each replay hands it over again."""

    def counts(self) -> Counter[str]:
        counted: Counter[str] = Counter()
        for name, is_method, _args, _answer in self.host_calls:
            counted[name if is_method else "attribute"] += 1
        return counted

    def host_cost_us(self, costs: Mapping[str, float] = PROBE_US) -> float:
        """python_exec and the host calls at ``costs`` (bench.probe's); a host call the probe does not
        measure (set_dst_uri) at set_pseudoVar's cost, a write into the message too."""
        cost = costs["python_exec_arg"] if self.args else costs["python_exec"]
        return cost + sum(costs.get(k, costs["set_pseudoVar"]) * n for k, n in self.counts().items())


class CoreRecorder:
    """While ``on``, records each call the router makes into the decision core (not the core's own inner calls)."""

    def __init__(self) -> None:
        self.tape: Optional[Tape] = None
        self.depth = 0
        self.undo: List[Tuple[Any, str, Any]] = []
        self.originals: Dict[Any, Any] = {}
        """The operator's functions by their recording wrappers (``wrap``)."""

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            tape = self.tape
            if tape is not None and self.depth == 0:
                tape.core_calls.append(CoreCall(name, fn, args, kwargs))
            self.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1

        return recorded

    def _patch(self, owner: Any, attribute: str, wrapper: Any) -> None:
        self.undo.append((owner, attribute, owner.__dict__[attribute]))
        setattr(owner, attribute, wrapper)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` recorded under ``name`` when the router calls it (the operator's rules)."""
        wrapper = self._wrap(name, fn)
        self.originals[wrapper] = fn
        return wrapper

    def unwrap_rules(self, router: Any) -> None:
        """The router's operator rules back as they are, without their recording wrappers (``wrap``): what is
        timed after the recording is the rules, not the recorder's call around them."""
        rules = router.watcher.rules
        originals = self.originals
        router.watcher.rules = rules._replace(
            route=originals.get(rules.route, rules.route), callee=originals.get(rules.callee, rules.callee)
        )

    def install(self, modules: Sequence[ModuleType], users: Sequence[ModuleType]) -> None:
        """Wrap the public functions of ``modules`` (also where ``users`` imported them by name), the public
        methods of gateway.policy's values (Decision, Tables, ...), and the records' ``parse``/``__str__``."""
        for cls in vars(policy).values():
            if not inspect.isclass(cls) or cls.__module__ != policy.__name__ or issubclass(cls, enum.Enum):
                continue
            for name, fn in list(vars(cls).items()):
                if not name.startswith("_") and inspect.isfunction(fn):
                    self._patch(cls, name, self._wrap(f"{cls.__name__}.{name}", fn))
        for module in modules:
            for name, fn in list(vars(module).items()):
                if name.startswith("_") or not inspect.isfunction(fn) or fn.__module__ != module.__name__:
                    continue
                wrapper = self._wrap(f"{module.__name__.rsplit('.', 1)[-1]}.{name}", fn)
                for owner in (module, *users):
                    if vars(owner).get(name) is fn:
                        self._patch(owner, name, wrapper)
        for cls in vars(model).values():
            if not inspect.isclass(cls) or cls.__module__ != model.__name__ or not dataclasses.is_dataclass(cls):
                continue
            if "__str__" in vars(cls):
                self._patch(cls, "__str__", self._wrap(f"str({cls.__name__})", vars(cls)["__str__"]))
            if isinstance(vars(cls).get("parse"), classmethod):
                parse = vars(cls)["parse"].__get__(None, cls)  # the classmethod, bound to its class
                self._patch(cls, "parse", staticmethod(self._wrap(f"{cls.__name__}.parse", parse)))

    def uninstall(self) -> None:
        while self.undo:
            owner, attribute, original = self.undo.pop()
            setattr(owner, attribute, original)


class Recorder:
    """Wraps the fake host's msg: passes every access through and writes it on the tape."""

    def __init__(self, msg: Any, tape: Tape) -> None:
        self._msg = msg
        self._tape = tape

    def __getattr__(self, name: str) -> Any:
        tape = self._tape
        try:
            value = getattr(self._msg, name)
        except Exception:
            tape.raised = True
            raise
        if not callable(value):
            tape.host_calls.append((name, False, (), value))
            return value

        def call(*args: Any) -> Any:
            try:
                answer = value(*args)
            except Exception:
                tape.raised = True
                raise
            tape.host_calls.append((name, True, args, answer))
            return answer

        return call


def label_of(route: str, msg: FakeMsg) -> str:
    ctx = msg._ctx
    assert ctx is not None
    sip = ctx.msg
    if not sip.is_request:
        return f"reply {sip.status} to {sip.cseq_method}"
    credentials = sip.header("authorization") is not None or sip.header("proxy-authorization") is not None
    kind = sip.method + (" (in dialog)" if sip.to_tag else "") + (" with credentials" if credentials else "")
    if sip.method == "INVITE" and sip.to_tag:
        kind = "re-INVITE"
    if sip.method == "ACK" and sip.to_tag and sip.header("route") is None:
        kind = "ACK of a negative reply"  # hop by hop: no Route
    if route == "on_request":
        return kind
    if route == "on_failure":
        return f"failure of {sip.method}"
    return f"{kind}, {route}"


class TapingRouter:
    """Stands in for the router the fake host loaded: each method called with a msg is run on a tape."""

    def __init__(self, router: Any, tapes: List[Tape], recorder: CoreRecorder) -> None:
        self.router = router
        self.tapes = tapes
        self.recorder = recorder
        self.tag = ""
        self.called: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.router, name)
        if not callable(value):
            return value

        def run(*args: Any) -> Any:
            if not args or not isinstance(args[0], FakeMsg):
                return value(*args)
            self.called.add(name)
            return self.run_on_tape(name, args[0], args[1:])

        return run

    def run_on_tape(self, name: str, msg: FakeMsg, rest: Tuple[Any, ...], label: Optional[str] = None) -> Any:
        tape = Tape((label or label_of(name, msg)) + self.tag, name, rest, ctx=msg._ctx, router=self.router)
        tape.pending = getattr(self.router, "_pending", None) if name == "on_authorized" else None
        self.recorder.tape = tape
        self.router.forget_writes()  # each tape a worker's first message of its kind: every $var written
        try:
            tape.result = getattr(self.router, name)(Recorder(msg, tape), *rest)
        finally:
            self.recorder.tape = None
        self.tapes.append(tape)
        return tape.result


def entry_points(router: Any) -> List[str]:
    """The router's public methods that take a msg (what a cfg can python_exec), child_init aside."""
    found = []
    for name in dir(router):
        if name.startswith("_") or name == "child_init":
            continue
        method = getattr(router, name)
        if callable(method) and list(inspect.signature(method).parameters)[:1] == ["msg"]:
            found.append(name)
    return found


def bench_settings(rules: str = "default") -> Settings:
    """The benchmark's gateway.ini of ``rules`` (site.RULES), its trunks where record_calls puts them."""
    text = RULES[rules].settings.read_text()
    settings = parse_settings(text, str(RULES[rules].settings))
    trunks = {name: f"sip:{TRUNK_HOSTS[name]}:5060" for name in settings.tables.trunks if name in TRUNK_HOSTS}
    tables = dataclasses.replace(settings.tables, trunks={**settings.tables.trunks, **trunks})
    return dataclasses.replace(settings, tables=tables)


def operator_rules(rules: str, recorder: CoreRecorder) -> Tuple[Any, Any]:
    """The operator's route and callee of ``rules`` (their policy.py, as loader imports it), recorded."""
    route, callee, _register = import_policy(str(RULES[rules].policy))  # no REGISTER in these timings
    wrapped = None if callee is None else recorder.wrap("policy.py callee", callee)
    return recorder.wrap("policy.py route", route), wrapped


def trunk(net: Network, name: str) -> UA:
    """A SIP peer at the trunk's address of bench_settings (not behind NAT), answering as a phone does."""
    host_ = TRUNK_HOSTS[name]
    ua = UA(name, "sip", Endpoint("udp", host_, 5060), f"{host_}:5060", media=SyntheticPhone(host_, 20000, ("PCMU",)))
    net.uas[ua.endpoint] = ua
    return ua


#: The facts of the entry points no recorded call reaches: lookup("location") found nobody (-1).
UNCALLED_FACTS = {"on_lookup_failure": ("-1",)}
#: The kinds of initial INVITE timed per rules (record_calls' tags), and what each is.
KINDS = {
    "default": {
        ", plain SIP": "trusted SIP phone -> plain SIP phone, no media proxy",
        ", rtpengine": "trusted SIP phone behind NAT -> plain SIP phone, through rtpengine",
        ", digest auth": "our user, digest auth -> our user (on_request + on_authorized)",
    },
    "recipes": {
        ", plain SIP": "trusted SIP phone -> plain SIP phone: headers",
        ", rtpengine": "trusted SIP phone behind NAT -> plain SIP phone: headers, rtpengine",
        ", dial plan": "behind NAT -> the dial plan's international trunk: headers, rtpengine + the rules' flag",
        ", always_proxy": "an always_proxy caller -> plain SIP phone: headers, rtpengine",
        ", blocked": "-> a blocked number: 403",
        ", digest auth": "our user, digest auth -> our user: headers (on_request + on_authorized)",
    },
}


def record_calls(rules: str = "default") -> Tuple[Any, List[Tape]]:
    """Calls through the fake OpenSIPS with ``rules``' files, trusted and with digest auth; the (trusted)
    router and the tapes."""
    tapes: List[Tape] = []
    recorder = CoreRecorder()
    recorder.install([core, sdp, model, policy], [host, core])
    recipes = rules == "recipes"
    routers: List[Any] = []  # the routers made: their rules unwrapped after the recording
    try:
        settings = bench_settings(rules)
        trusted = dataclasses.replace(settings, trusted_sources=frozenset(TRUSTED))
        gateway = Gateway(trusted, rules=operator_rules(rules, recorder))
        router = gateway.router
        routers.append(router)
        taping = TapingRouter(router, tapes, recorder)
        gateway.router = taping
        net = Network(gateway)
        carol, erin = net.phone("carol", host=TRUNK), net.phone("erin", host=TRUNK)
        dave = net.phone("dave", nat=True, host=TRUNK)
        net.registered(carol, erin, dave)
        taping.tag = ", plain SIP"
        call = net.invite(carol, "erin")
        net.reply(call, erin, 180)
        net.reply(call, erin, 200)
        net.bye(call, "caller")
        taping.tag = ", rtpengine"
        call = net.invite(dave, "erin")
        net.reply(call, erin, 180)
        net.reply(call, erin, 200)
        net.reinvite(call, "caller")
        net.bye(call, "caller")
        call = net.invite(dave, "erin")
        net.reply(call, erin, 486)
        if recipes:
            international = trunk(net, "international")
            taping.tag = ", dial plan"
            call = net.invite(dave, "0049301234001")
            net.reply(call, international, 200)
            net.bye(call, "caller")
            taping.tag = ""
            proxied = net.phone(ALWAYS_PROXY[0], host=TRUNK)
            net.registered(proxied)
            taping.tag = ", always_proxy"
            call = net.invite(proxied, "erin")
            net.reply(call, erin, 200)
            net.bye(call, "caller")
            taping.tag = ", blocked"
            net.invite(carol, "0900123001")
        # Methods the runtime does not call (pike's check route), over an initial INVITE's context;
        # on_authorized only follows on_request's digest challenge (the digest calls below).
        invite = next(t for t in tapes if t.label == "INVITE, plain SIP" and t.ctx is not None)
        assert invite.ctx is not None
        taping.tag = ""
        for name in entry_points(router):
            if name not in taping.called and name != "on_authorized":
                taping.run_on_tape(name, FakeMsg(invite.ctx), UNCALLED_FACTS.get(name, ()), f"INVITE, {name}")
        # Our own users from untrusted addresses: digest auth.
        gateway = Gateway(settings, rules=operator_rules(rules, recorder))
        routers.append(gateway.router)
        taping = TapingRouter(gateway.router, tapes, recorder)
        gateway.router = taping
        net = Network(gateway)
        alice, bob = net.phone("alice"), net.phone("bob")
        taping.tag = ", digest auth"
        net.registered(alice, bob)
        call = net.invite(alice, "bob")
        net.reply(call, bob, 200)
        net.bye(call, "caller")
    finally:
        recorder.uninstall()
        for made in routers:
            recorder.unwrap_rules(made)
    return router, tapes


def unique(tapes: Sequence[Tape]) -> List[Tape]:
    """One tape per label, the first seen (three phones' REGISTERs are one kind)."""
    seen: Dict[str, Tape] = {}
    for tape in tapes:
        seen.setdefault(tape.label, tape)
    return list(seen.values())


# -- replaying ----------------------------------------------------------------------------------


def stub_class(tapes: Sequence[Tape]) -> type:
    """A msg whose every attribute and method the tapes saw hands back the next recorded answer."""
    namespace: Dict[str, Any] = {"__slots__": ("_next",)}

    def init(self: Any, answers: Iterator[Any]) -> None:
        self._next = answers.__next__

    namespace["__init__"] = init
    for tape in tapes:
        for name, is_method, _args, _answer in tape.host_calls:
            if is_method:
                namespace[name] = lambda self, *args: self._next()
            else:
                namespace[name] = property(lambda self: self._next())
    return type("TapeMsg", (), namespace)


class CheckingMsg:
    """Replays a tape and notes where the router asks something else than it asked when recorded."""

    def __init__(self, tape: Tape) -> None:
        self._calls = iter(tape.host_calls)
        self._methods = {name for name, is_method, _args, _answer in tape.host_calls if is_method}
        self.mismatch: Optional[str] = None

    def _take(self, name: str, is_method: bool, args: Tuple[Any, ...]) -> Any:
        expected = next(self._calls, None)
        if expected is None:
            self.mismatch = self.mismatch or f"{name}{args} beyond the tape"
            raise LookupError(self.mismatch)
        if expected[:3] != (name, is_method, args) and self.mismatch is None:
            self.mismatch = f"{name}{args} where the tape has {expected[0]}{expected[2]}"
        return expected[3]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._methods:
            return lambda *args: self._take(name, True, args)
        return self._take(name, False, ())


def handler_of(router: Any, tape: Tape) -> Callable[..., Any]:
    """The tape's route of the router that made it, as a worker calls it: on_authorized gets the request
    on_request left before the digest check (Tape.pending) each time."""
    router = tape.router or router
    handler: Callable[..., Any] = getattr(router, tape.route)
    pending = tape.pending
    if pending is None:
        return handler

    def authorized(msg: Any, *args: Any) -> Any:
        router._pending = pending
        return handler(msg, *args)

    return authorized


def replays_faithfully(router: Any, tape: Tape) -> Optional[str]:
    """None when the router, fed the tape's answers, asks the same host calls and returns the same; else why not."""
    msg = CheckingMsg(tape)
    handler = handler_of(router, tape)
    router = tape.router or router
    router.forget_writes()  # the tape's $var writes were a worker's first
    try:
        result = handler(msg, *tape.args)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return msg.mismatch or f"raised {type(exc).__name__}: {exc}"
    if msg.mismatch:
        return msg.mismatch
    if next(msg._calls, None) is not None:
        return "the router made fewer host calls than on the tape"
    if result != tape.result:
        return f"returned {result!r}, the tape {tape.result!r}"
    return None


def _accessor(code: str) -> Callable[[Any], Any]:
    accessor: Callable[[Any], Any] = eval(f"lambda msg: {code}")  # a name taken from the stub class
    return accessor


def stub_cost_us(stub: type, repeat: int) -> Tuple[float, float]:
    """(method call, attribute read) cost of the stub msg, microseconds: what the replay adds per host call."""
    names = vars(stub)
    method_name = next((n for n, v in names.items() if inspect.isfunction(v) and n != "__init__"), None)
    attr_name = next((n for n, v in names.items() if isinstance(v, property)), None)
    values = [0] * (repeat * 12)
    base = _accessor("None")
    msg = stub(iter(values))
    empty = best_of(lambda: base(msg), repeat, rounds=3)
    method = prop = 0.0
    if method_name is not None:
        call = _accessor(f"msg.{method_name}('x')")
        method = best_of(lambda: call(msg), repeat, rounds=3) - empty
    if attr_name is not None:
        read = _accessor(f"msg.{attr_name}")
        prop = best_of(lambda: read(msg), repeat, rounds=3) - empty
    return max(method, 0.0), max(prop, 0.0)


def timed(once: Callable[[], object], construct: Callable[[], object], repeat: int, spread: bool) -> float:
    """Microseconds of ``once`` less ``construct`` (what the timing itself builds each run); ``spread``: the
    rounds spread over seconds (spread_best_of), as the decision core's are."""
    if spread:
        run, built = spread_best_of((once, construct), max(repeat // 10, 1))
        return max(run - built, 0.0)
    return max(best_of(once, repeat) - best_of(construct, repeat), 0.0)


def time_tape(router: Any, stub: type, tape: Tape, repeat: int, spread: bool = False) -> float:
    """Microseconds of one run of the tape's route over the stub (the stub's construction subtracted)."""
    answers = [answer for _name, _is_method, _args, answer in tape.host_calls]
    handler = handler_of(router, tape)
    args = tape.args
    forget = (tape.router or router).forget_writes  # each run makes the tape's host calls, each $var write

    def once() -> object:
        forget()
        return handler(stub(iter(answers)), *args)

    def construct() -> object:
        forget()
        return stub(iter(answers))

    return timed(once, construct, repeat, spread)


def varied_facts(tape: Tape, count: int, trusted: frozenset[str]) -> List[str]:
    """``count`` facts strings for the tape's route, as calls from many phones bring them: each from
    another source address (as trusted as the tape's: ``trusted`` are the recording's trusted sources)
    and port, a body of another length (an SDP's o= line and ports differ from phone to phone), and a
    request to a user for one of several users; [] when the route's facts name no
    source (in-dialog requests, branches, failures: the same from any phone).  The cfg's format of
    each route's facts (opensips.cfg, its python_exec calls) says where each fact is."""
    formats = exec_arguments()
    names = FACT_SEPARATORS.split(formats.get(tape.route, ""))  # each fact, and after it its separator
    if not tape.args or not isinstance(tape.args[0], str) or SOURCE_PORT not in names:
        return []
    parts = FACT_SEPARATORS.split(tape.args[0])
    if len(parts) != len(names) or parts[1::2] != names[1::2]:
        raise ValueError(f"the tape's facts are not laid out as the cfg's: {tape.args[0]!r}")
    at = {name: i for i, name in enumerate(names) if i % 2 == 0}
    pool = TRUSTED if SOURCE_ADDRESS in at and parts[at[SOURCE_ADDRESS]] in trusted else UNTRUSTED
    has_user = CALLED_USER in at and parts[at[CALLED_USER]] not in ("0", "", host.NULL)
    users = called_like(host.unhex(parts[at[CALLED_USER]])) if has_user else []
    found = []
    for i in range(count):
        fields = list(parts)
        fields[at[SOURCE_PORT]] = str(10000 + i % 50000)
        if SOURCE_ADDRESS in at:
            fields[at[SOURCE_ADDRESS]] = pool[i % len(pool)]
        if LENGTH in at and host.as_int(parts[at[LENGTH]]) > 0:
            fields[at[LENGTH]] = str(host.as_int(parts[at[LENGTH]]) + i % 9)
        if has_user:
            fields[at[CALLED_USER]] = users[i % len(users)].encode().hex()
        found.append("".join(fields))
    return found


def called_like(user: str) -> List[str]:
    """Called users the rules treat as ``user``: numbers of its range (its last three digits varied: the
    same dial-plan trunk, the same blocked range), or several users of ours (CALLED_USERS)."""
    if len(user) > 3 and user[-3:].isdigit():
        return [f"{user[:-3]}{k:03d}" for k in range(1000)]
    return list(CALLED_USERS)


class NamingMsg:
    """Hands back a tape's answers in order (the same as the stub) and notes which host calls were made."""

    def __init__(self, tape: Tape) -> None:
        self._answers = iter([answer for _name, _is_method, _args, answer in tape.host_calls])
        self._methods = {name for name, is_method, _args, _answer in tape.host_calls if is_method}
        self.names: List[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._methods:

            def call(*args: Any) -> Any:
                self.names.append(name)
                return next(self._answers, None)

            return call
        self.names.append(name)
        return next(self._answers, None)


def varies_faithfully(router: Any, tape: Tape, facts: Sequence[str]) -> Optional[str]:
    """None when the router answers each of ``facts`` (the first few) as it answered the tape's, with host
    calls of the same names (their values may differ: a browser's flow); else why not."""
    expected = [name for name, _is_method, _args, _answer in tape.host_calls]
    handler = handler_of(router, tape)
    router = tape.router or router
    for text in facts[:8]:
        msg = NamingMsg(tape)
        router.forget_writes()
        result = handler(msg, text)
        if result != tape.result:
            return f"returned {result!r} for varied facts, the tape {tape.result!r}"
        if msg.names != expected:
            return f"host calls {msg.names} for varied facts, the tape's {expected}"
    return None


def time_tape_varying(
    router: Any, stub: type, tape: Tape, facts: Sequence[str], repeat: int, spread: bool = False
) -> float:
    """time_tape with each run's facts the next of ``facts`` (cycled): the router meets them as new."""
    answers = [answer for _name, _is_method, _args, answer in tape.host_calls]
    handler = handler_of(router, tape)
    forget = (tape.router or router).forget_writes
    texts = itertools.cycle(facts)

    def once() -> object:
        forget()
        return handler(stub(iter(answers)), next(texts))

    def construct() -> object:
        forget()
        return (stub(iter(answers)), next(texts))

    return timed(once, construct, repeat, spread)


def time_core(calls: Sequence[CoreCall], repeat: int, spread: bool = False) -> float:
    """Microseconds for the recorded core calls, replayed with their arguments (loop cost subtracted);
    ``spread``: the rounds spread over seconds (spread_best_of)."""
    bound = [(c.fn, c.args, c.kwargs) for c in calls]

    def replay() -> None:
        for fn, args, kwargs in bound:
            fn(*args, **kwargs)

    def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    empty = [(nothing, c.args, c.kwargs) for c in calls]

    def loop() -> None:
        for fn, args, kwargs in empty:
            fn(*args, **kwargs)

    if spread:
        replayed, looped = spread_best_of((replay, loop), max(repeat // 10, 1))
        return max(replayed - looped, 0.0)
    return max(best_of(replay, repeat) - best_of(loop, repeat), 0.0)


def initial_invite_tapes(tapes: Sequence[Tape], tag: str) -> List[Tape]:
    """The router's tapes of the first initial INVITE with ``tag`` that got through, as a worker runs them:
    on_request, and after the digest check on_authorized (the caller's INVITE with credentials)."""
    found = []
    for label in (f"INVITE{tag}", f"INVITE with credentials{tag}", f"INVITE, on_authorized{tag}"):
        tape = next((t for t in tapes if t.label == label), None)
        if tape is not None:
            found.append(tape)
    if len(found) == 3:  # the challenged INVITE, then the one with credentials: the latter is the decision
        found = found[1:]
    return found


def initial_invite_core(tapes: Sequence[Tape], tag: str) -> List[CoreCall]:
    """The core and policy calls of the first initial INVITE with ``tag`` (initial_invite_tapes)."""
    return [call for tape in initial_invite_tapes(tapes, tag) for call in tape.core_calls]


AFRESH, SAME, VARYING_FACTS, COLD = "every decision afresh", "same facts", "varying facts", "cold caches"
#: Bytes written before each call of the cold figure: more than every cache of this machine holds.
EVICT_BYTES = 64 << 20
COLD_SAMPLES = 200


def time_cold(router: Any, stub: type, tape: Tape, facts: Sequence[str], samples: int = COLD_SAMPLES) -> float:
    """Microseconds of one run of the tape's route right after EVICT_BYTES were written (the median of
    ``samples``): as a worker of a loaded OpenSIPS meets it, its caches full of other processes' memory
    and of the C that ran since its last python_exec.  The facts vary as in time_tape_varying (the tape's own
    when ``facts`` is empty); the $vars a worker holds stay held, as in its steady state."""
    answers = [answer for _name, _is_method, _args, answer in tape.host_calls]
    handler = handler_of(router, tape)
    buffer = bytearray(EVICT_BYTES)
    cells = (ctypes.c_char * EVICT_BYTES).from_buffer(buffer)
    taken = []
    for i in range(samples):
        args = (facts[i % len(facts)],) if facts else tape.args
        msg = stub(iter(answers))
        ctypes.memset(cells, i & 0xFF, EVICT_BYTES)
        start = time.perf_counter()
        handler(msg, *args)
        taken.append(time.perf_counter() - start)
    del cells  # the buffer's export, before the buffer goes
    return sorted(taken)[len(taken) // 2] * 1e6


def initial_invite_figures(router: Any, tapes: Sequence[Tape], tag: str, repeat: int) -> Dict[str, Optional[float]]:
    """Microseconds of one initial INVITE with ``tag`` (initial_invite_tapes): the router's entry points with
    the same facts each time, and with facts varying from call to call; the decision core and policy with
    every decision taken afresh (its recorded calls replayed).  None: a tape that cannot be replayed."""
    figures: Dict[str, Optional[float]] = {SAME: None, VARYING_FACTS: None}
    chosen = initial_invite_tapes(tapes, tag)
    stub = stub_class(tapes)
    trusted = frozenset(TRUSTED)
    same = varying = cold = 0.0
    replayable = bool(chosen)
    for tape in chosen:
        if tape.raised or replays_faithfully(router, tape) is not None:
            replayable = False
            break
        facts = varied_facts(tape, VARYING, trusted)
        one = time_tape(router, stub, tape, repeat, spread=True)
        same += one
        if not facts:
            varying += one  # its facts name no source: the same from any phone (on_authorized has none)
        elif varies_faithfully(router, tape, facts) is None:
            varying += time_tape_varying(router, stub, tape, facts, repeat, spread=True)
        else:
            figures[SAME] = same
            replayable = False
            break
        cold += time_cold(router, stub, tape, facts, min(COLD_SAMPLES, repeat))
    if replayable:
        figures[SAME], figures[VARYING_FACTS], figures[COLD] = same, varying, cold
    figures[AFRESH] = time_core(initial_invite_core(tapes, tag), repeat, spread=True)
    return figures


def core_per_initial_invite(repeat: int = 20000, rules: str = "default") -> Dict[str, Dict[str, Optional[float]]]:
    """Microseconds of one initial INVITE by kind of call (KINDS) with ``rules``: the router's entry points
    with the same and with varying facts, and the decision core and policy afresh (initial_invite_figures)."""
    router, tapes = record_calls(rules)
    return {tag.lstrip(", "): initial_invite_figures(router, tapes, tag, repeat) for tag in KINDS[rules]}


# -- why each host call of an initial INVITE is there -------------------------------------------

REASONS = {
    "python_exec": "the route itself: the cfg formats the facts into its argument (no host call for them)",
    f"set_pseudoVar {host.REQUEST_VAR}": "the actions of the request route (gateway.host.Act), run by the cfg's"
    " route[request_actions]",
    f"set_pseudoVar {host.AUTHORIZED_VAR}": "the actions after the digest check (on_authorized: the rules' answer)",
    f"set_pseudoVar {host.LOOKUP_FAILURE_VAR}": "the actions when lookup() found nobody",
    f"set_pseudoVar {host.IN_DIALOG_VAR}": "the actions for an in-dialog request",
    f"set_pseudoVar {host.REPLY_VAR}": "the actions of the reply route",
    f"set_pseudoVar {host.FAILURE_VAR}": "the actions of the failure route",
    f"set_pseudoVar {host.RECORD_VAR}": "the call record (caller's kind, offer, private SDP, the rules' flags): the"
    " cfg stores it in $dlg_val(gw) after create_dialog (keep_record), for branches, replies, BYE",
    f"set_pseudoVar {host.DIALOG_RECORD}": "the call record with the answered branch",
    f"set_pseudoVar {host.BRANCH_VARS[model.Registration.WEBRTC, False]}": "the plan of a branch to a browser, which"
    " the cfg's branch route runs without asking Python",
    f"set_pseudoVar {host.BRANCH_VARS[model.Registration.NATED_SIP, False]}": "the plan of a branch to a SIP phone"
    " behind NAT",
    f"set_pseudoVar {host.BRANCH_VARS[model.Registration.PLAIN_SIP, False]}": "the plan of a branch to a SIP phone or"
    " trunk not behind NAT",
    f"set_pseudoVar {host.BRANCH_VARS[model.Registration.WEBRTC, True]}": "the same for a browser that registered over"
    " IPv6 (rtpengine offers it its IPv6 address)",
    f"set_pseudoVar {host.BRANCH_VARS[model.Registration.NATED_SIP, True]}": "the same for a SIP phone behind NAT"
    " that registered over IPv6",
    f"set_pseudoVar {host.BRANCH_VARS[model.Registration.PLAIN_SIP, True]}": "the same for a SIP phone or trunk not"
    " behind NAT over IPv6",
    f"set_pseudoVar {host.ADD_HEADERS_VAR}": "the headers the rules add, for the cfg's append_hf",
    f"set_pseudoVar {host.REMOVE_HEADERS_VAR}": "the headers the rules remove, for the cfg's remove_hf",
    f"set_pseudoVar {host.MEDIA_FLAGS_VARS[model.Step.OFFER]}": "the rtpengine flags for the cfg's rtpengine_offer",
    f"set_pseudoVar {host.MEDIA_FLAGS_VARS[model.Step.ANSWER]}": "the rtpengine flags for the cfg's rtpengine_answer",
    f"set_pseudoVar {host.MEDIA_FLAGS_VARS[model.Step.DELETE]}": "the rtpengine flags for the cfg's rtpengine_delete",
    f"set_pseudoVar {host.REALM_VAR}": "the digest realm for the cfg's www/proxy_authorize (gateway.ini)",
    f"set_pseudoVar {host.REPLY_CODE_VAR}": "a local reply's code, for the cfg's sl_send_reply",
    f"set_pseudoVar {host.REPLY_REASON_VAR}": "a local reply's reason phrase",
    f"set_pseudoVar {host.EXCHANGE_AVP}": "the re-INVITE's exchange, for its reply route",
    f"set_pseudoVar {host.TRUSTED_VAR}": "the trusted sources, once per worker: pike's check route searches them"
    " natively",
    f"set_pseudoVar {host.PIKE_SOURCE_VAR}": "pike's kept answer, cleared when the rules change",
    "set_pseudoVar $rU": "to_user(another user): the request URI's user, for lookup()",
    "get_pseudoVar": "the headers gateway.ini [policy] headers names, for the rules to read",
    "set_dst_uri": "a trunk (the dial plan's, or a rule's), a browser's own connection, or the SIP destination",
    "rewrite_ruri": "to_uri(): the request URI a rule chose",
    "getHeader": "the Call-ID, only to log a failure",
}


def reason_of(name: str, is_method: bool, args: Tuple[Any, ...]) -> str:
    first = str(args[0]).split("|", 1)[0] if args else ""
    keys = [f"{name} {first}", f"{name} {args[0]}" if args else name, name] if is_method else [name]
    for key in keys:
        if key in REASONS:
            return REASONS[key]
    return "(no note in bench/micro.py REASONS: a host call new to the router?)"


# -- report -------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.micro", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20000)
    parser.add_argument(
        "--probe", type=Path, help="a saved output of python3 -m bench.probe: its host call costs, not PROBE_US"
    )
    parser.add_argument(
        "--rules", choices=("default", "recipes", "both"), default="both", help="the operator's rules (bench.run)"
    )
    parser.add_argument("--detail", action="store_true", help="each core and policy call of an initial INVITE, timed")
    args = parser.parse_args(argv)
    costs = dict(PROBE_US)
    source = "bench.probe's figures in bench/README.md (PROBE_US)"
    if args.probe is not None:
        costs.update(read_probe(args.probe.read_text()))
        source = f"bench.probe's output in {args.probe}"
    for rules in ["default", "recipes"] if args.rules == "both" else [args.rules]:
        report(rules, args.repeat, costs, source, args.detail)
    return 0


def report(rules: str, repeat: int, costs: Mapping[str, float], source: str, detail: bool) -> None:
    router, tapes = record_calls(rules)
    kinds = unique(tapes)
    where = RULES[rules]
    print(f"==== {rules} rules: {where.settings.relative_to(REPO)} + {where.policy.relative_to(REPO)}\n")
    print("== decision core plus policy per initial INVITE, us: the router's entry points as a worker runs them")
    print("   (on_request; on_authorized after a digest check) with the same facts each time and with varying")
    print(f"   facts (another source address and port each call, several called users or numbers, {VARYING:,}")
    print("   distinct facts strings); and the recorded core and policy calls replayed, every decision afresh")
    print("   (the branch plans of every kind too: the router keeps those by their inputs); cold: varying facts,")
    print(f"   each call after {EVICT_BYTES >> 20} MB were written (every cache evicted, as a loaded worker meets it;")
    print("   the median: not a target)")
    print(f"  {'initial INVITE':<16} {'routes':<27} {'same':>7} {'varying':>7} {'afresh':>7} {'cold':>7}  what")
    worst = 0.0
    for tag, what in KINDS[rules].items():
        figures = initial_invite_figures(router, tapes, tag, repeat)
        routes = " + ".join(t.route for t in initial_invite_tapes(tapes, tag))
        shown = [figures.get(name) for name in (SAME, VARYING_FACTS, AFRESH, COLD)]
        for value in shown[:2]:
            worst = max(worst, float("inf") if value is None else value)
        text = " ".join(f"{'-' if v is None else f'{v:.2f}':>7}" for v in shown)
        print(f"  {tag.lstrip(', '):<16} {routes:<27} {text}  {what}")
        if detail:
            for call in initial_invite_core(tapes, tag):
                print(f"      {call.name:<38} {time_core([call], repeat):7.2f}")
    verdict = "met" if worst < 10 else "NOT met"
    print(f"  target < 10 us, the worst same/varying figure: {worst:.2f}, {verdict}.  (Each the best of {ROUNDS}")
    print(f"   rounds spread over {ROUNDS * SPREAD_S:.0f} s: this machine runs at half speed for seconds at a time)\n")

    stub = stub_class(tapes)
    method_us, prop_us = stub_cost_us(stub, repeat * 5)
    print(f"== entry points on a replayed tape (stub msg: {method_us:.3f} us per method call, {prop_us:.3f} us per")
    print("   attribute read, subtracted): the router's Python with the same facts each time and with varying")
    print("   facts (another source address and port, several users; '-': its facts name no source); host calls")
    print(f"   per message at {source}:")
    priced = [f"{name} {us:.1f} us" for name, us in costs.items()]
    print("   " + ", ".join(priced[:4]) + ",")
    print("   " + ", ".join(priced[4:]) + ";")
    print("   'in OpenSIPS' = vary (or same) + host, still low: here the Python runs warm, in a worker each")
    print("   message finds it cold (bench/README.md)")
    width = max(len(t.route) for t in kinds)
    header = (
        f"  {'message':<44} {'route':<{width}} {'same us':>7} {'vary us':>7} {'cf':>3} {'gpv':>3} {'spv':>3} {'hdr':>3}"
    )
    print(header + f" {'attr':>4} {'other':>5} {'host us':>7} {'in OpenSIPS':>11}")
    for tape in kinds:
        counts = tape.counts()
        columns = [counts[k] for k in COLUMNS]
        other = sum(counts.values()) - sum(columns)
        why = None if tape.raised else replays_faithfully(router, tape)
        facts = varied_facts(tape, VARYING, frozenset(TRUSTED))
        python = varying = 0.0
        shown_same = vary_shown = f"{'-':>7}"
        if tape.raised or why is not None:
            shown_same = f"{'no':>7}"
        else:
            stub_us = prop_us * counts["attribute"] + method_us * (sum(counts.values()) - counts["attribute"])
            each = max(repeat // 4, 1000)
            python = varying = max(time_tape(router, stub, tape, each) - stub_us, 0.0)
            shown_same = f"{python:>7.2f}"
            if facts:
                why = varies_faithfully(router, tape, facts)
                if why is None:
                    varying = max(time_tape_varying(router, stub, tape, facts, each) - stub_us, 0.0)
                    vary_shown = f"{varying:>7.2f}"
                else:
                    vary_shown = f"{'no':>7}"
        host_us = tape.host_cost_us(costs)
        print(
            f"  {tape.label:<44.44} {tape.route:<{width}} {shown_same} {vary_shown} "
            + " ".join(f"{n:>3}" for n in columns[:4])
            + f" {columns[4]:>4} {other:>5} {host_us:>7.2f} {varying + host_us:>11.2f}"
        )
        if why is not None or tape.raised:
            print(f"      (not timed: {why or 'a host call raised'})")
    print("  (cf call_function, gpv get_pseudoVar, spv set_pseudoVar, hdr getHeader, attr msg attributes,")
    print("   other set_dst_uri and the like, at set_pseudoVar's cost; spv of a worker's first message of its")
    print("   kind: a $var the worker holds already is not written again, gateway.host.HELD_VARS)")

    for label in ("INVITE, plain SIP", "INVITE, dial plan"):
        initial = next((t for t in kinds if t.label == label), None)
        if initial is None:
            continue
        print(f"\n== the host calls of an initial INVITE ({KINDS[rules][label[6:]]}), and why each is there")
        shown_args = "".join(f", {a!r}" for a in initial.args)
        print(f"  python_exec({initial.route!r}{shown_args}) -> {initial.result!r}")
        for name, is_method, call_args, answer in initial.host_calls:
            text = f"{name}({', '.join(repr(a) for a in call_args)})" if is_method else f"msg.{name}"
            print(f"  {text} -> {answer!r:.40}")
            print(f"      {reason_of(name, is_method, call_args)}")
    print()


if __name__ == "__main__":
    sys.exit(main())
