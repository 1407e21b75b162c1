"""In-process micro-benchmark of the router: the decision core, each entry point, and its host calls.

    python3 -m bench.micro

Calls run through the fake OpenSIPS (``fakes.runtime.Gateway``, ``fakes.ua.Network``)
with the router wrapped: every route method the fake host's runtime calls
(``python_exec``) is recorded on a tape, with each host call the router makes
(attribute reads, getHeader, get/set_pseudoVar, call_function, ...) and its
answer, and each call the router makes into the decision core (the public
functions of ``gateway.core`` and ``gateway.sdp``, ``parse``/``str`` of the
model's records, ``flow_of``) with its arguments.  Nothing here names a route
or a host call in advance: whatever entry points the router has and whatever
it asks of the host is what gets measured.  Router methods the runtime does
not call (pike's ``is_trusted`` check) are called once over the context of an
initial INVITE.

1. The decision core per initial INVITE (request route + branch route): the
   recorded core calls replayed with their arguments, every decision taken
   afresh (target: under 10 us); and the router's entry points for it, with
   the same facts each time (the answer the router keeps for a facts string,
   replayed) and with facts that vary from call to call as bench.run's mix
   sends them (another source address and port each call, several users: the
   router's memo of whole facts strings misses, the decisions below it are kept).
2. Each entry point per message kind: the tape replayed through a stub ``msg``
   that hands back the recorded answers (checked once against the tape first),
   with the same facts and with varying facts (checked too: the same answer and
   host calls); the stub's own cost per host call is measured and subtracted,
   what is left is the router's Python.
3. The host calls per message kind, with what each costs inside OpenSIPS as
   ``bench.probe`` measured it (``--probe FILE``: a saved bench.probe output),
   and why each host call of an initial INVITE is there.

Two sets of calls: from a trusted source (as in ``bench.run``, whose SIPp is a
trusted source in bench/gateway.ini) and from our own users at untrusted
addresses (digest auth: challenged, then with credentials).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from fakes.runtime import Context, Gateway, exec_arguments
from fakes.ua import Network
from gateway import core, host, model, sdp
from gateway.settings import Settings
from gateway.settings import parse as parse_settings

from .site import SETTINGS

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
SOURCE_ADDRESS, SOURCE_PORT, CALLED_USER = "$si", "$sp", "$(rU{s.encode.hexa})"
CALLED_USERS = tuple(user.encode().hex() for user in ("erin", "frank", "gina", "0049301234"))
#: How many distinct facts strings a varying-facts timing cycles through: more than the router keeps
#: (gateway.host.DECISIONS_KEPT), so none is still kept when it comes round again.
VARYING = 20000


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

    def install(self, modules: Sequence[ModuleType], users: Sequence[ModuleType]) -> None:
        """Wrap the public functions of ``modules`` (also where ``users`` imported them by name), and the
        records' ``parse``/``__str__``."""
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
    if route in ("on_branch", "on_failure"):
        return f"{route[3:]} of {sip.method}"
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
        self.recorder.tape = tape
        self.router.held.clear()  # each tape a worker's first message of its kind: every $var written
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


def bench_settings() -> Settings:
    return parse_settings(SETTINGS.read_text(), str(SETTINGS))


def record_calls() -> Tuple[Any, List[Tape]]:
    """Calls through the fake OpenSIPS, trusted and with digest auth; the router and the tapes."""
    tapes: List[Tape] = []
    recorder = CoreRecorder()
    recorder.install([core, sdp, model], [host])
    try:
        settings = bench_settings()
        trusted = dataclasses.replace(settings, trusted_sources=frozenset(TRUSTED))
        gateway = Gateway(trusted)
        router = gateway.router
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
        # Methods the runtime does not call (pike's check route), over an initial INVITE's context.
        invite = next(t for t in tapes if t.label == "INVITE, plain SIP" and t.ctx is not None)
        assert invite.ctx is not None
        taping.tag = ""
        for name in entry_points(router):
            if name not in taping.called:
                taping.run_on_tape(name, FakeMsg(invite.ctx), (), f"INVITE, {name}")
        # Our own users from untrusted addresses: digest auth.
        gateway = Gateway(settings)
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


def replays_faithfully(router: Any, tape: Tape) -> Optional[str]:
    """None when the router, fed the tape's answers, asks the same host calls and returns the same; else why not."""
    msg = CheckingMsg(tape)
    router = tape.router or router
    router.held.clear()  # the tape's $var writes were a worker's first
    try:
        result = getattr(router, tape.route)(msg, *tape.args)
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


def time_tape(router: Any, stub: type, tape: Tape, repeat: int) -> float:
    """Microseconds of one run of the tape's route over the stub (the stub's construction subtracted)."""
    answers = [answer for _name, _is_method, _args, answer in tape.host_calls]
    handler = getattr(router, tape.route)
    args = tape.args
    held = router.held  # emptied each time: the run makes the tape's host calls, each $var write too

    def once() -> object:
        held.clear()
        return handler(stub(iter(answers)), *args)

    def construct() -> object:
        held.clear()
        return stub(iter(answers))

    return max(best_of(once, repeat) - best_of(construct, repeat), 0.0)


def varied_facts(tape: Tape, count: int, trusted: frozenset[str]) -> List[str]:
    """``count`` facts strings for the tape's route, as calls from many phones bring them: each from
    another source address (as trusted as the tape's: ``trusted`` are the recording's trusted sources)
    and port, and a request to a user for one of several users; [] when the route's facts name no
    source (in-dialog requests, branches, failures: the same from any phone).  The cfg's format of
    each route's facts (opensips.cfg, its python_exec calls) says where each fact is."""
    formats = exec_arguments()
    names = formats.get(tape.route, "").split(host.SEP)
    if not tape.args or not isinstance(tape.args[0], str) or SOURCE_PORT not in names:
        return []
    parts = host.split_facts(tape.args[0], len(names))
    at = {name: i for i, name in enumerate(names)}
    pool = TRUSTED if SOURCE_ADDRESS in at and parts[at[SOURCE_ADDRESS]] in trusted else UNTRUSTED
    has_user = CALLED_USER in at and parts[at[CALLED_USER]] not in ("0", "", host.NULL)
    found = []
    for i in range(count):
        fields = list(parts)
        fields[at[SOURCE_PORT]] = str(10000 + i % 50000)
        if SOURCE_ADDRESS in at:
            fields[at[SOURCE_ADDRESS]] = pool[i % len(pool)]
        if has_user:
            fields[at[CALLED_USER]] = CALLED_USERS[i % len(CALLED_USERS)]
        found.append(host.SEP.join(fields))
    return found


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
    for text in facts[:8]:
        msg = NamingMsg(tape)
        router.held.clear()
        result = getattr(router, tape.route)(msg, text)
        if result != tape.result:
            return f"returned {result!r} for varied facts, the tape {tape.result!r}"
        if msg.names != expected:
            return f"host calls {msg.names} for varied facts, the tape's {expected}"
    return None


def time_tape_varying(router: Any, stub: type, tape: Tape, facts: Sequence[str], repeat: int) -> float:
    """time_tape with each run's facts the next of ``facts`` (cycled): the router meets them as new."""
    answers = [answer for _name, _is_method, _args, answer in tape.host_calls]
    handler = getattr(router, tape.route)
    held = router.held
    texts = itertools.cycle(facts)

    def once() -> object:
        held.clear()
        return handler(stub(iter(answers)), next(texts))

    def construct() -> object:
        held.clear()
        return (stub(iter(answers)), next(texts))

    return max(best_of(once, repeat) - best_of(construct, repeat), 0.0)


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


def initial_invite_core(tapes: Sequence[Tape], tag: str) -> List[CoreCall]:
    """The core calls of the first initial INVITE with ``tag``: its request route and its branch route."""
    calls: List[CoreCall] = []
    for label in (f"INVITE{tag}", f"branch of INVITE{tag}"):
        tape = next((t for t in tapes if t.label == label), None)
        if tape is not None:
            calls += tape.core_calls
    return calls


AFRESH, SAME, VARYING_FACTS = "every decision afresh", "same facts", "varying facts"


def initial_invite_tapes(tapes: Sequence[Tape], tag: str) -> List[Tape]:
    """The router's tapes of the first initial INVITE with ``tag``: its request route, and its branch route
    when the cfg asks the router about the branch (not for a plain SIP contact: Do.PLAIN_CONTACT)."""
    found = []
    for label in (f"INVITE{tag}", f"branch of INVITE{tag}"):
        tape = next((t for t in tapes if t.label == label), None)
        if tape is not None:
            found.append(tape)
    return found


def initial_invite_figures(router: Any, tapes: Sequence[Tape], tag: str, repeat: int) -> Dict[str, Optional[float]]:
    """Microseconds of one initial INVITE with ``tag`` (request + branch route): the decision core with
    every decision taken afresh (its recorded calls replayed); the router's entry points with the same
    facts each time; and with facts varying from call to call (None: a tape that cannot be replayed)."""
    figures: Dict[str, Optional[float]] = {AFRESH: time_core(initial_invite_core(tapes, tag), repeat, spread=True)}
    chosen = initial_invite_tapes(tapes, tag)
    stub = stub_class(tapes)
    trusted = frozenset(TRUSTED)
    same = varying = 0.0
    for tape in chosen:
        facts = varied_facts(tape, VARYING, trusted)
        if tape.raised or replays_faithfully(router, tape) is not None:
            return {**figures, SAME: None, VARYING_FACTS: None}
        one = time_tape(router, stub, tape, max(repeat // 4, 1000))
        same += one
        if not facts:
            varying += one  # its facts name no source: the same from any phone
        elif varies_faithfully(router, tape, facts) is None:
            varying += time_tape_varying(router, stub, tape, facts, max(repeat // 4, 1000))
        else:
            return {**figures, SAME: same, VARYING_FACTS: None}
    figures[SAME], figures[VARYING_FACTS] = same, varying
    return figures


def core_per_initial_invite(repeat: int = 20000) -> Dict[str, Dict[str, Optional[float]]]:
    """Microseconds of one initial INVITE (request + branch route) by kind of call: the decision core
    afresh, and the router's entry points with the same and with varying facts (initial_invite_figures)."""
    router, tapes = record_calls()
    return {
        tag.lstrip(", "): initial_invite_figures(router, tapes, tag, repeat) for tag in (", plain SIP", ", rtpengine")
    }


# -- why each host call of an initial INVITE is there -------------------------------------------

REASONS = {
    "python_exec": "the route itself: the cfg formats the facts into its argument (no host call for them)",
    "set_pseudoVar $var(gw_record)": "the call record (caller's kind, offer, private SDP): the cfg stores it "
    "in $dlg_val(gw) after create_dialog, for branches, replies, BYE",
    "set_pseudoVar $dlg_val(gw)": "the call record with the answered branch",
    "set_pseudoVar $var(gw_do)": "the actions of the request route (gateway.host.Act), run by the cfg's gw_run",
    "set_pseudoVar $var(gw_authorized)": "the actions after the digest check",
    "set_pseudoVar $var(gw_to_webrtc)": "the plan of a branch to a browser, which the cfg's branch route runs",
    "set_pseudoVar $var(gw_to_nated)": "the plan of a branch to a SIP phone behind NAT",
    "set_pseudoVar $var(gw_to_plain)": "the plan of a branch to a SIP phone or trunk not behind NAT",
    "set_pseudoVar $var(gw_reply)": "the actions of the reply route",
    "set_pseudoVar $var(gw_in_dialog)": "the actions for an in-dialog request",
    "set_pseudoVar $var(gw_rtp_offer)": "the rtpengine flags for the cfg's rtpengine_offer",
    "set_pseudoVar $var(gw_rtp_answer)": "the rtpengine flags for the cfg's rtpengine_answer",
    "set_pseudoVar $var(gw_rtp_delete)": "the rtpengine flags for the cfg's rtpengine_delete",
    "set_pseudoVar $var(gw_realm)": "the digest realm for the cfg's www/proxy_authorize (gateway.ini)",
    "set_pseudoVar $var(gw_code)": "a local reply's code, for the cfg's sl_send_reply",
    "set_pseudoVar $var(gw_reason)": "a local reply's reason phrase",
    "set_pseudoVar $avp(gw_tx)": "the re-INVITE's exchange, for its reply route",
    "set_pseudoVar $var(gw_trusted)": "the trusted sources, once per worker: pike's check route searches them natively",
    "set_dst_uri": "back to a browser over its own connection, or to the SIP destination",
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
    args = parser.parse_args(argv)
    costs = dict(PROBE_US)
    source = "bench.probe's figures in bench/README.md (PROBE_US)"
    if args.probe is not None:
        costs.update(read_probe(args.probe.read_text()))
        source = f"bench.probe's output in {args.probe}"

    router, tapes = record_calls()
    kinds = unique(tapes)

    print("== decision core per initial INVITE (request + branch route), us")
    for tag in (", plain SIP", ", rtpengine"):
        calls = initial_invite_core(tapes, tag)
        print(f"  every decision afresh: the recorded core calls replayed{tag}")
        for call in calls:
            print(f"    {call.name:<38} {time_core([call], args.repeat):7.2f}")
        figures = initial_invite_figures(router, tapes, tag, args.repeat)
        timed = [v for v in figures.values() if v is not None]
        verdict = "met" if timed and max(timed) < 10 else "NOT met"
        routes = " + ".join(t.route for t in initial_invite_tapes(tapes, tag))
        for name, value in figures.items():
            what = "the core, all of it" if name == AFRESH else f"{routes}, {name}"
            text = f"{value:7.2f}" if value is not None else "not timed"
            print(f"  {'initial INVITE' + tag + ': ' + what:<66} {text}")
        print(f"  (target < 10 us, the worst of the three: {verdict}.  The core: the best of {ROUNDS} rounds")
        print(f"   over {ROUNDS * SPREAD_S:.0f} s, each call above of 5 back to back.  Same facts: the answer the")
        print("   router keeps for a facts string, replayed.  Varying facts: another source address and port")
        print(f"   each call, several users, {VARYING:,} distinct facts strings, more than the router keeps.)\n")

    stub = stub_class(tapes)
    method_us, prop_us = stub_cost_us(stub, args.repeat * 5)
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
        shown = vary_shown = f"{'-':>7}"
        if tape.raised or why is not None:
            shown = f"{'no':>7}"
        else:
            stub_us = prop_us * counts["attribute"] + method_us * (sum(counts.values()) - counts["attribute"])
            repeat = max(args.repeat // 4, 1000)
            python = varying = max(time_tape(router, stub, tape, repeat) - stub_us, 0.0)
            shown = f"{python:>7.2f}"
            if facts:
                why = varies_faithfully(router, tape, facts)
                if why is None:
                    varying = max(time_tape_varying(router, stub, tape, facts, repeat) - stub_us, 0.0)
                    vary_shown = f"{varying:>7.2f}"
                else:
                    vary_shown = f"{'no':>7}"
        host_us = tape.host_cost_us(costs)
        print(
            f"  {tape.label:<44.44} {tape.route:<{width}} {shown} {vary_shown} "
            + " ".join(f"{n:>3}" for n in columns[:4])
            + f" {columns[4]:>4} {other:>5} {host_us:>7.2f} {varying + host_us:>11.2f}"
        )
        if why is not None or tape.raised:
            print(f"      (not timed: {why or 'a host call raised'})")
    print("  (cf call_function, gpv get_pseudoVar, spv set_pseudoVar, hdr getHeader, attr msg attributes,")
    print("   other set_dst_uri and the like, at set_pseudoVar's cost; spv of a worker's first message of its")
    print("   kind: a $var the worker holds already is not written again, gateway.host.HELD_VARS)")

    initial = next((t for t in kinds if t.label == "INVITE, plain SIP"), None)
    if initial is not None:
        print("\n== the host calls of a plain SIP->SIP initial INVITE from a trusted source, and why each is there")
        shown_args = "".join(f", {a!r}" for a in initial.args)
        print(f"  python_exec({initial.route!r}{shown_args}) -> {initial.result!r}")
        for name, is_method, call_args, answer in initial.host_calls:
            text = f"{name}({', '.join(repr(a) for a in call_args)})" if is_method else f"msg.{name}"
            print(f"  {text} -> {answer!r:.40}")
            print(f"      {reason_of(name, is_method, call_args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
