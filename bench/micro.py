"""In-process micro-benchmark of the router: the decision core, each entry point, and its host calls.

    python3 -m bench.micro

1. The decision core (``gateway.core``): what one initial INVITE asks of it, function
   by function (target: under 10 us per initial INVITE).
2. Each entry point (``Router.on_request/on_branch/on_reply/on_failure``) per message
   kind.  The messages come from calls run through the fake OpenSIPS (``fakes``): every
   host call the router makes (attribute reads, getHeader, get/set_pseudoVar,
   call_function) and its answer is recorded on a tape, and the timing replays the tape
   through a stub ``msg`` that hands back the recorded answers.  The stub's own cost per
   host call is measured separately and subtracted: what is left is the router's Python.
3. The host calls per message kind, with what they would cost inside OpenSIPS 3.6.8
   (FACTS.md: call_function ~4.2 us, get_pseudoVar ~1.8 us, set_pseudoVar ~0.55 us,
   getHeader ~0.32 us, an attribute ~0.28 us, python_exec itself ~0.26 us), and why each
   call of an initial INVITE is needed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from fakes.runtime import Gateway
from fakes.ua import Network
from gateway import core
from gateway.model import CallRecord, Leg, Party, Registration, Source, Step
from gateway.profiles import Profiles
from gateway.sdp import has_private_address
from gateway.settings import Settings

#: Cost of each host call inside a real OpenSIPS 3.6.8, microseconds: FACTS.md's figures, and the
#: facts argument (13 variables formatted natively) from ``python3 -m bench.probe`` on a 2-vCPU machine.
HOST_COST_US = {
    "python_exec": 0.26,
    "facts argument": 5.3,
    "call_function": 4.2,
    "get_pseudoVar": 1.8,
    "set_pseudoVar": 0.55,
    "getHeader": 0.32,
    "attribute": 0.28,
    "set_dst_uri": 0.55,
    "rewrite_ruri": 0.55,
}
METHODS = ("call_function", "get_pseudoVar", "set_pseudoVar", "getHeader", "set_dst_uri", "rewrite_ruri")
ATTRIBUTES = ("Type", "Method", "RURI", "Status", "src_address", "dst_address")

PHONE_SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 8\r\n"


def best_of(fn: Callable[[], object], repeat: int, rounds: int = 5) -> float:
    """Microseconds per call of ``fn``: the best of ``rounds`` timings of ``repeat`` calls."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best * 1e6


# -- 1. the decision core -----------------------------------------------------------------


def core_steps(settings: Settings) -> List[Tuple[str, Callable[[], object]]]:
    """What the request route and the branch route of one plain SIP->SIP initial INVITE ask of the core."""
    profiles: Profiles = settings.profiles
    caller = core.party_of(Source.SIP, False)
    record = CallRecord(caller, True, False)
    nat_record = CallRecord(core.party_of(Source.SIP, True), True, False)
    return [
        ("source_of", lambda: core.source_of("udp")),
        ("party_of", lambda: core.party_of(Source.SIP, False)),
        ("contact_fix", lambda: core.contact_fix("INVITE", False)),
        (
            "route_initial",
            lambda: core.route_initial("INVITE", "bob", "127.0.0.1", "127.0.0.1", "127.0.0.2", settings),
        ),
        ("sdp.has_private_address", lambda: has_private_address(PHONE_SDP)),
        ("CallRecord -> str", lambda: str(CallRecord(caller, True, False))),
        ("CallRecord.parse", lambda: CallRecord.parse("c=S0;o=e;p=0")),
        ("registration_from_bflags", lambda: core.registration_from_bflags("")),
        ("plan_branch (no media)", lambda: core.plan_branch(record, 0, Registration.PLAIN_SIP, profiles)),
        ("plan_branch (rtpengine offer)", lambda: core.plan_branch(nat_record, 0, Registration.PLAIN_SIP, profiles)),
        (
            "media_action (offer flags)",
            lambda: core.media_action(profiles, Step.OFFER, Party(Leg.SIP, True), Leg.SIP, False, 0),
        ),
    ]


def time_core_initial_invite(repeat: int = 50000, settings: Optional[Settings] = None) -> float:
    """Microseconds the core spends on one initial INVITE (request route + branch route, media proxy decided)."""
    settings = settings or Settings()
    profiles = settings.profiles

    def initial_invite() -> object:
        source = core.source_of("udp")
        caller = core.party_of(source, True)
        core.contact_fix("INVITE", True)
        core.route_initial("INVITE", "bob", "127.0.0.1", "127.0.0.1", "127.0.0.2", settings)
        has_private_address(PHONE_SDP)
        text = str(CallRecord(caller, True, False))
        record = CallRecord.parse(text)
        plan = core.plan_branch(record, 0, core.registration_from_bflags(""), profiles)
        return str(plan.record)

    return best_of(initial_invite, repeat)


# -- 2. entry points on a recorded tape ------------------------------------------------------


@dataclass
class Tape:
    """The host calls one route made for one message, with their answers."""

    label: str
    route: str
    facts: str = ""
    """What the cfg passed as python_exec's argument."""
    calls: List[Tuple[str, Tuple[Any, ...], Any]] = field(default_factory=list)
    result: int = 0

    def counts(self) -> Counter[str]:
        counted: Counter[str] = Counter()
        for name, _args, _result in self.calls:
            counted["attribute" if name in ATTRIBUTES else name] += 1
        return counted

    def host_cost_us(self) -> float:
        exec_cost = HOST_COST_US["python_exec"] + (HOST_COST_US["facts argument"] if self.facts else 0.0)
        return exec_cost + sum(HOST_COST_US.get(k, 0.0) * n for k, n in self.counts().items())


class Recorder:
    """Wraps the fake host's msg: passes every call through and writes it on a tape."""

    def __init__(self, msg: Any, tape: Tape) -> None:
        self._msg = msg
        self._tape = tape

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._msg, name)
        if name in ATTRIBUTES:
            self._tape.calls.append((name, (), value))
            return value
        if name in METHODS:

            def call(*args: Any) -> Any:
                result = value(*args)
                self._tape.calls.append((name, args, result))
                return result

            return call
        return value


class TapeMsg:
    """A stub msg that replays a tape: each host call returns the next recorded answer."""

    __slots__ = ("_next",)

    def __init__(self, answers: Iterator[Any]) -> None:
        self._next = answers.__next__

    Type = property(lambda self: self._next())
    Method = property(lambda self: self._next())
    RURI = property(lambda self: self._next())
    Status = property(lambda self: self._next())
    src_address = property(lambda self: self._next())
    dst_address = property(lambda self: self._next())

    def call_function(self, *args: Any) -> Any:
        return self._next()

    def get_pseudoVar(self, fmt: str) -> Any:
        return self._next()

    def set_pseudoVar(self, name: str, value: str) -> Any:
        return self._next()

    def getHeader(self, name: str) -> Any:
        return self._next()

    def set_dst_uri(self, uri: str) -> Any:
        return self._next()

    def rewrite_ruri(self, uri: str) -> Any:
        return self._next()


def label_of(route: str, msg: Any) -> str:
    ctx = msg._ctx
    sip = ctx.msg
    if not sip.is_request:
        return f"reply {sip.status} to {sip.cseq_method}"
    kind = "re-INVITE" if sip.method == "INVITE" and sip.to_tag else sip.method
    if route == "on_request":
        return f"{kind} (in dialog)" if sip.to_tag else f"{kind} (initial)"
    if route == "on_in_dialog":
        return f"{kind} (in dialog, after loose_route)"
    if route in ("on_branch", "on_failure"):
        return f"{route[3:]} of INVITE"
    return f"{kind} ({route[3:]})"


class TapingRouter:
    """Stands in for the router the fake host loaded; records a tape per route run."""

    def __init__(self, router: Any, tapes: List[Tape], tag: str) -> None:
        self.router = router
        self.tapes = tapes
        self.tag = tag

    def __getattr__(self, route: str) -> Callable[..., int]:
        if not route.startswith("on_"):
            raise AttributeError(route)

        def run(msg: Any, facts: str = "") -> int:
            tape = Tape(f"{label_of(route, msg)}{self.tag}", route, facts)
            result: int = getattr(self.router, route)(Recorder(msg, tape), facts)
            tape.result = result
            self.tapes.append(tape)
            return result

        return run


def record_tapes() -> Tuple[Any, List[Tape]]:
    """Calls through the fake OpenSIPS: plain SIP->SIP, then a NATed caller (rtpengine), a re-INVITE, a busy callee."""
    gateway = Gateway()
    router = gateway.router
    tapes: List[Tape] = []
    net = Network(gateway)
    carol, erin = net.phone("carol"), net.phone("erin")
    nat = net.phone("dave", nat=True)
    gateway.router = TapingRouter(router, tapes, "")
    for ua in (carol, erin, nat):
        net.register(ua)
    call = net.invite(carol, "erin")
    net.reply(call, erin, 180)
    net.reply(call, erin, 200)
    net.bye(call, "caller")
    gateway.router = TapingRouter(router, tapes, ", rtpengine")
    call = net.invite(nat, "erin")
    net.reply(call, erin, 180)
    net.reply(call, erin, 200)
    net.reinvite(call, "caller")
    net.bye(call, "caller")
    call = net.invite(nat, "erin")
    net.reply(call, erin, 486)
    gateway.router = router
    return router, tapes


def unique(tapes: Sequence[Tape]) -> List[Tape]:
    """One tape per label (the first seen): REGISTERs of three phones are one kind."""
    seen: Dict[str, Tape] = {}
    for tape in tapes:
        label = tape.label
        if tape.label.startswith("REGISTER"):
            nat = any(n == "call_function" and a and a[0] == "force_rport" for n, a, _ in tape.calls)
            label = "REGISTER (initial)" + (", NATed phone" if nat else "")
        if label not in seen:
            tape.label = label
            seen[label] = tape
    return list(seen.values())


def stub_cost_us(repeat: int) -> Tuple[float, float]:
    """(method call, property read) cost of the stub msg, microseconds: what the replay adds per host call."""
    values = [0] * (repeat * 2)
    msg = TapeMsg(iter(values))
    method = best_of(lambda: msg.get_pseudoVar("x"), repeat, rounds=1)
    msg = TapeMsg(iter(values))
    prop = best_of(lambda: msg.Method, repeat, rounds=1)
    return method, prop


def time_tape(router: Any, tape: Tape, repeat: int) -> float:
    answers = [result for _name, _args, result in tape.calls]
    handler = getattr(router, tape.route)

    def once() -> object:
        return handler(TapeMsg(iter(answers)), tape.facts)

    return best_of(once, repeat)


# -- why each host call of an initial INVITE is there ------------------------------------------

REASONS = {
    "Method": "the method: INVITE, REGISTER, ... (a cheap attribute)",
    "RURI": "user and domain of the request URI: ours (location) or elsewhere",
    "src_address": "the sender's address: trusted sources may relay to other domains",
    "get_pseudoVar $rb": "the SDP, for private addresses that need the media proxy (SIP callers with SDP only;"
    " the body is not in the facts argument, whose buffer is 20,000 bytes)",
    "set_pseudoVar $var(gw_record)": "the call record (caller's kind, offer, private SDP), which the cfg stores"
    " in $dlg_val(gw) after create_dialog",
    "set_pseudoVar $dlg_val(gw)": "the call record with this branch's decision, for replies and in-dialog requests",
    "set_pseudoVar $var(gw_rtp)": "the rtpengine flags for the offer/answer/delete the cfg makes",
}


def describe_bits(code: int) -> str:
    from fakes.trace import describe_code

    return describe_code(code, "on_request").split("+ ", 1)[-1]


def reason_of(name: str, args: Tuple[Any, ...]) -> str:
    keys = [f"{name} {args[0]}" if args else name, name]
    for key in keys:
        if key in REASONS:
            return REASONS[key]
    return ""


# -- report -------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.micro", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20000)
    args = parser.parse_args(argv)
    settings = Settings()

    print("== decision core (gateway.core), microseconds per call")
    for name, fn in core_steps(settings):
        print(f"  {name:<32} {best_of(fn, args.repeat):7.2f}")
    total = time_core_initial_invite(args.repeat, settings)
    verdict = "met" if total < 10 else "NOT met"
    print(f"  {'initial INVITE, all of the above':<32} {total:7.2f}   (target < 10 us: {verdict})")

    router, tapes = record_tapes()
    method_us, prop_us = stub_cost_us(args.repeat * 10)
    print(f"\n== entry points on a replayed tape (stub msg: {method_us:.3f} us per method call, {prop_us:.3f} us per")
    print("   attribute read, subtracted), and host calls per message; 'in OpenSIPS' adds FACTS.md's cost of")
    print("   python_exec, its facts argument and each host call to the router's Python time")
    header = f"  {'message':<52} {'route':<11} {'python us':>9} {'cf':>3} {'gpv':>3} {'spv':>3} {'hdr':>3} {'attr':>4}"
    print(header + f" {'host us':>8} {'in OpenSIPS':>11}")
    for tape in unique(tapes):
        counts = tape.counts()
        stub = prop_us * counts["attribute"] + method_us * (sum(counts.values()) - counts["attribute"])
        python = max(time_tape(router, tape, max(args.repeat // 4, 1000)) - stub, 0.0)
        host = tape.host_cost_us()
        columns = [counts[k] for k in ("call_function", "get_pseudoVar", "set_pseudoVar", "getHeader")]
        print(
            f"  {tape.label:<52} {tape.route:<11} {python:>9.2f} "
            + " ".join(f"{n:>3}" for n in columns)
            + f" {counts['attribute']:>4} {host:>8.2f} {python + host:>11.2f}"
        )
    print("  (cf call_function, gpv get_pseudoVar, spv set_pseudoVar, hdr getHeader, attr msg attributes)")

    initial = next(t for t in unique(tapes) if t.label == "INVITE (initial)")
    print("\n== the host calls of a plain SIP->SIP initial INVITE (request route), and why each is needed")
    print(f"  python_exec('on_request', {initial.facts!r})")
    print("      the facts, formatted natively into the argument: method, transport, nathelper's NAT verdict, body")
    print("      length, to-tag, Contacts, source, R-URI user and domain, To and From domains, Content-Type")
    bits = describe_bits(initial.result)
    print(f"  -> {initial.result} (verdict {initial.result & 7}; the cfg then does the bits: {bits})")
    for name, call_args, result in initial.calls:
        shown = ", ".join(repr(a) for a in call_args)
        print(f"  {name}({shown}) -> {result!r:.40}")
        reason = reason_of(name, call_args)
        if reason:
            print(f"      {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
