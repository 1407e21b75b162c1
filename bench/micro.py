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
   recorded core calls replayed with their arguments (target: under 10 us).
2. Each entry point per message kind: the tape replayed through a stub ``msg``
   that hands back the recorded answers (checked once against the tape first);
   the stub's own cost per host call is measured and subtracted, what is left
   is the router's Python.
3. The host calls per message kind, with what they would cost inside OpenSIPS
   3.6.8 (FACTS.md), and why each host call of an initial INVITE is there.

Two sets of calls: from a trusted source (as in ``bench.run``, whose SIPp is a
trusted source in bench/gateway.ini) and from our own users at untrusted
addresses (digest auth: challenged, then with credentials).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from fakes.msgobj import FakeMsg
from fakes.runtime import Context, Gateway
from fakes.ua import Network
from gateway import core, host, model, sdp
from gateway.settings import Settings
from gateway.settings import parse as parse_settings

from .site import SETTINGS

#: Cost of each host call inside a real OpenSIPS 3.6.8 on a 2-vCPU machine, microseconds (FACTS.md).
HOST_COST_US = {
    "python_exec": 0.26,
    "call_function": 4.2,
    "get_pseudoVar": 1.8,
    "set_pseudoVar": 0.55,
    "getHeader": 0.32,
    "attribute": 0.28,
}
#: Added per python_exec when the cfg passes an argument (a string of 13 variables formatted natively;
#: ``python3 -m bench.probe``).
ARGUMENT_COST_US = 5.3
COLUMNS = ("call_function", "get_pseudoVar", "set_pseudoVar", "getHeader", "attribute")
#: The address the trusted phones send from (a TEST-NET-2 address: with the fake's in-memory
#: rtpengine, a phone there is not behind NAT).
TRUNK = "198.51.100.10"


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

    def host_cost_us(self) -> float:
        cost = HOST_COST_US["python_exec"] + (ARGUMENT_COST_US if self.args else 0.0)
        return cost + sum(HOST_COST_US.get(k, HOST_COST_US["set_pseudoVar"]) * n for k, n in self.counts().items())


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
        trusted = dataclasses.replace(settings, trusted_sources=frozenset({TRUNK}))
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


def core_per_initial_invite(repeat: int = 20000) -> Dict[str, float]:
    """Microseconds the decision core spends on one initial INVITE (request + branch route), by kind of call."""
    _router, tapes = record_calls()
    return {
        tag.lstrip(", "): time_core(initial_invite_core(tapes, tag), repeat, spread=True)
        for tag in (", plain SIP", ", rtpengine")
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
    args = parser.parse_args(argv)

    router, tapes = record_calls()
    kinds = unique(tapes)

    print("== decision core per initial INVITE (request + branch route), recorded calls replayed, us")
    for tag in (", plain SIP", ", rtpengine"):
        calls = initial_invite_core(tapes, tag)
        for call in calls:
            print(f"  {call.name:<40} {time_core([call], args.repeat):7.2f}")
        total = time_core(calls, args.repeat, spread=True)
        verdict = "met" if total < 10 else "NOT met"
        print(f"  {'initial INVITE' + tag + ', all of it':<40} {total:7.2f}   (target < 10 us: {verdict})")
        print(f"  (the best of {ROUNDS} rounds over {ROUNDS * SPREAD_S:.0f} s; each call above: of 5 back to back)\n")

    stub = stub_class(tapes)
    method_us, prop_us = stub_cost_us(stub, args.repeat * 5)
    print(f"== entry points on a replayed tape (stub msg: {method_us:.3f} us per method call, {prop_us:.3f} us per")
    print("   attribute read, subtracted), and host calls per message; 'in OpenSIPS' adds FACTS.md's cost of")
    print("   python_exec and of each host call to the router's Python time")
    header = f"  {'message':<46} {'route':<11} {'python us':>9} {'cf':>3} {'gpv':>3} {'spv':>3} {'hdr':>3} {'attr':>4}"
    print(header + f" {'other':>5} {'host us':>8} {'in OpenSIPS':>11}")
    for tape in kinds:
        counts = tape.counts()
        columns = [counts[k] for k in COLUMNS]
        other = sum(counts.values()) - sum(columns)
        why = None if tape.raised else replays_faithfully(router, tape)
        if tape.raised or why is not None:
            shown = f"{'not timed':>9}"
            python = 0.0
        else:
            stub_us = prop_us * counts["attribute"] + method_us * (sum(counts.values()) - counts["attribute"])
            python = max(time_tape(router, stub, tape, max(args.repeat // 4, 1000)) - stub_us, 0.0)
            shown = f"{python:>9.2f}"
        host_us = tape.host_cost_us()
        print(
            f"  {tape.label:<46.46} {tape.route:<11} {shown} "
            + " ".join(f"{n:>3}" for n in columns[:4])
            + f" {columns[4]:>4} {other:>5} {host_us:>8.2f} {python + host_us:>11.2f}"
        )
        if why is not None or tape.raised:
            print(f"      (not replayable: {why or 'a host call raised'})")
    print("  (cf call_function, gpv get_pseudoVar, spv set_pseudoVar, hdr getHeader, attr msg attributes,")
    print("   other set_dst_uri and the like; spv of a worker's first message of its kind: a $var the worker")
    print("   holds already is not written again, gateway.host.HELD_VARS)")

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
