"""Trace calls through the real cfg and pyscripts on the fake OpenSIPS host.

    python3 -m fakes.trace call browser:alice 0044201234   # your own call: a browser user dials a number
    python3 -m fakes.trace call phone:carol browser:bob    # a SIP phone calls a browser user
    python3 -m fakes.trace --settings my.ini --policy my_policy.py call nat-phone:dave 0900123
    python3 -m fakes.trace call --from-address 203.0.113.7 phone:carol 0044201234   # from that address
    python3 -m fakes.trace call --header "X-Tenant: acme" phone:carol 0044201234   # with a header of its own
    python3 -m fakes.trace call --also phone:frank phone:carol browser:frank   # frank has a phone too
    python3 -m fakes.trace call --trunk carrier=503 --trunk backup=200 phone:carol 0301234   # a failover
    python3 -m fakes.trace                      # every scenario
    python3 -m fakes.trace web-to-sip forking   # some of them
    python3 -m fakes.trace --table              # the effective rtpengine flag table
    python3 -m fakes.trace --list               # scenario names
    python3 -m fakes.trace --rtpengine 127.0.0.1:2223 web-to-sip   # through a real rtpengine

A call's rules are the files OpenSIPS would load: opensips/gateway.ini (or
GATEWAY_SETTINGS, or --settings) and pyscripts/policy.py (or GATEWAY_POLICY, or
--policy).  The scenarios show the gateway as shipped (fakes/shipped/), whatever
your rules change.  Message by message it prints what OpenSIPS would do: the routes run,
the router's actions, the functions called with their arguments and results, the
ng command sent to rtpengine, and where each message goes; a call ends with
where its INVITE went (request URI and destination) and what the rules decided.

A party of a call is KIND:USER[@DOMAIN], KIND one of browser, phone (a SIP phone
not behind NAT), nat-phone; a callee without a kind is a number or user nobody
registered (the rules send it to a trunk, or the gateway answers 404).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .rtpengine import Backend
from .rtpengine_ng import RealEngine
from .runtime import SHIPPED, Endpoint, Event, Gateway, uri_endpoint
from .scenarios import SCENARIOS
from .ua import UA, Network


def sdp_summary(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace")
    protos = re.findall(r"^m=\w+ \d+ (\S+)", text, re.M)
    if not protos:
        return ""
    marks = [
        p
        for p, flag in (("ICE", "a=ice-ufrag"), ("DTLS", "a=fingerprint"), ("mux", "a=rtcp-mux"), ("SDES", "a=crypto"))
        if flag in text
    ]
    direction = next((d for d in ("sendonly", "recvonly", "inactive") if f"a={d}" in text), "")
    return f"  [SDP {'/'.join(protos)}{' ' + ' '.join(marks) if marks else ''}{' ' + direction if direction else ''}]"


def render(events: Sequence[Event], names: Dict[Endpoint, str]) -> List[str]:
    lines: List[str] = []
    execs: List[int] = []  # the line of each python_exec not yet returned (what it logs comes in between)
    for event in events:
        if event.kind == "recv":
            source, msg = event.data
            lines.append(f"\n{names.get(source, str(source))} -> gateway: {msg.first_line}{sdp_summary(msg.body)}")
        elif event.kind == "send":
            endpoint, msg = event.data
            lines.append(
                f"    gateway -> {names.get(endpoint, str(endpoint))}: {msg.first_line}{sdp_summary(msg.body)}"
            )
        elif event.kind == "exec":
            if isinstance(event.data, int):
                failed = " (the Python side failed: the cfg's fail-safe answers)" if event.data == -2 else ""
                lines[execs.pop() if execs else -1] += f" = {event.data}{failed}"
            else:
                execs.append(len(lines))
                lines.append("      " + event.text.split("] ", 1)[-1].replace(", facts", ", <facts>"))
        elif event.kind == "branch":
            lines.append(f"    {event.text}")
        elif event.kind == "actions":
            lines.append(f"    actions: {event.text.replace(',', ', ')}")
        elif event.kind == "route":
            if not event.text.endswith("_actions]"):
                lines.append(f"  {event.text}")
        elif event.kind == "call":
            if not event.text.startswith("cfg python_exec("):
                lines.append(f"      {event.text.removeprefix('cfg ')}")
        elif event.kind == "rtpengine":
            ng, answer = event.data
            shown = " ".join(f"{k}={v}" for k, v in ng.items() if k not in ("sdp", "command", "received-from"))
            lines.append(f"        ng {ng['command']}: {shown} -> {answer.get('result')}")
        elif event.kind == "log":
            lines.append(f"      ! {event.text}")
        elif event.kind == "note":  # what the host did that is no fault (a rule's callee() dropped a branch)
            lines.append(f"      {event.text}")
    return lines


def run(name: str, settings: Optional[object] = None, rtpengine: Optional[Backend] = None) -> List[str]:
    """A scenario with ``settings``, or the gateway as shipped (SHIPPED): a scenario shows the gateway's own
    behaviour, which the operator's rules may change (``call`` traces those)."""
    if settings is None:
        gateway = Gateway(files=SHIPPED, rtpengine=rtpengine)
    else:
        gateway = Gateway(settings, rtpengine=rtpengine)
    net = Network(gateway)
    scenario = SCENARIOS[name]
    scenario(net)
    names = {endpoint: f"{ua.name}({'browser' if ua.is_browser else 'phone'})" for endpoint, ua in net.uas.items()}
    header = f"=== {name}: {(scenario.__doc__ or '').strip()}"
    lines = [header, *render(gateway.events, names)]
    left = gateway.sessions()
    lines.append(
        f"\n  rtpengine sessions left: {len(left)}; dialogs left: {len(gateway.dialogs)}; "
        f"host calls: {dict(sorted(gateway.counts.items()))}"
    )
    if net.undelivered:
        lines.append(f"  ! undelivered: {[(str(e), m.first_line) for e, m in net.undelivered]}")
    return lines


KINDS = ("browser", "phone", "nat-phone")


def party(net: Network, text: str, domain: str, host: Optional[str] = None) -> Tuple[Optional[UA], str, str]:
    """(the UA, its user, its domain) for KIND:USER[@DOMAIN], sending from ``host`` when given (else a test
    address of its own: a phone 198.51.100.x, a browser 127.0.0.x); no UA for a bare user (a number)."""
    kind, sep, rest = text.partition(":")
    if not sep:
        kind, rest = "", text
    elif kind not in KINDS:
        raise ValueError(f"{text}: the kind is one of {', '.join(KINDS)}")
    user, _, at = rest.partition("@")
    if not user:
        raise ValueError(f"{text}: no user")
    if not kind:
        return None, user, at or domain
    ua = net.browser(user, host=host) if kind == "browser" else net.phone(user, nat=kind == "nat-phone", host=host)
    ua.domain = at or domain
    return ua, user, ua.domain


def call(caller: str, callee: str, answer: bool = True, files: Tuple[Optional[str], Optional[str]] = (None, None),
         rtpengine: Optional[Backend] = None, source: Optional[str] = None,
         headers: Sequence[Tuple[str, str]] = (), others: Sequence[str] = (),
         trunks: Mapping[str, Sequence[int]] = {}) -> List[str]:  # fmt: skip
    """One ad-hoc call: the caller (from ``source``, an address, when given), a callee of a kind and the
    ``others`` (a forwarding target, a user's second device) register, the caller calls (its INVITE with
    ``headers`` too), the first of them that rings answers and hangs up (or nobody answers: the call times
    out); a trunk of ``trunks`` (gateway.ini name -> its final replies) that rings answers with its next code
    (a failure may send the call on to the next trunk; a 401 or 407 challenges the gateway); what the rules
    decided, where the INVITE went, and what is left."""
    gateway = Gateway(files=files, rtpengine=rtpengine)
    decided: List[str] = []
    watcher = gateway.router.watcher
    rule, chooser = watcher.rules.route, watcher.rules.callee

    def route(request: Any, default: Any) -> Any:  # the rules' own, noting what they answered
        try:
            decision = rule(request, default)
        except Exception as exc:
            decided.append(f"route() raised {type(exc).__name__}: {exc} (the caller gets 500)")
            raise
        decided.append(f"{decision}" + (" (default: the gateway's, unchanged)" if decision is default else ""))
        return decision

    route.__wrapped__ = rule  # type: ignore[attr-defined]  # a refusal names the rule's line (loader.returned_at)

    def choose(request: Any, who: Any, decision: Any) -> Any:  # the same for callee(), where it changes something
        try:
            chosen = chooser(request, who, decision)
        except Exception as exc:
            decided.append(f"callee() raised {type(exc).__name__}: {exc} (the caller gets 500)")
            raise
        if chosen is not decision:
            kind = f"{who.kind.value} contacts{' behind NAT' if who.behind_nat else ''}"
            decided.append(f"for {kind}, callee(): " + ("no branch (drop)" if chosen.dropped else f"{chosen}"))
        return chosen

    choose.__wrapped__ = chooser  # type: ignore[attr-defined]

    watcher.rules = watcher.rules._replace(route=route, callee=None if chooser is None else choose)
    net = Network(gateway)
    domain = sorted(gateway.router.settings.domains)[0]
    ua, _user, _ = party(net, caller, domain, source)
    if ua is None:
        raise ValueError(f"{caller}: the caller needs a kind (browser:, phone:, nat-phone:)")
    target, user, target_domain = party(net, callee, domain)
    more = [party(net, text, domain)[0] for text in others]
    if None in more:
        raise ValueError(f"{', '.join(others)}: --also takes parties with a kind (browser:, phone:, nat-phone:)")
    net.registered(*(u for u in (ua, target, *more) if u is not None))
    settings = gateway.router.settings
    answering = [net.trunk(name, settings.trunk_uri(name)) for name in trunks]
    # each INVITE a trunk gets takes its next code, the last one again after; a 401 or 407 alone is answered next
    codes = {id(u): [*trunks[u.name], 200] if list(trunks[u.name]) in ([401], [407]) else list(trunks[u.name])
             for u in answering}  # fmt: skip
    start = len(gateway.events)
    placed = net.invite(ua, user, domain=target_domain, extra_headers=headers)
    refused = placed.statuses()  # before anyone rang (a digest challenge, which the caller answers itself, left out)
    # Each party that rings answers once; a trunk that fails, or one nobody answers for (no UA: tm's 408 when its
    # timer fires), may hand the call to the next trunk; bounded, as each trunk is tried once.
    parties = [u for u in (target, *more, *answering) if u is not None]
    for _ in range(3 * len(settings.tables.trunks) + 2):  # a trunk may challenge first (twice: refused)
        ringing = [u for u in parties if placed.call_id in u.pending_invites]
        queue = codes.get(id(ringing[0])) if ringing else None
        code = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else (200 if answer and ringing else None)
        if code in (401, 407):
            net.challenge(placed, ringing[0], code, realm_of(settings, ringing[0].name))
            continue
        if code is not None and code < 200:  # it rings and never answers: tm's timer ends it (fr_inv_timeout)
            net.reply(placed, ringing[0], code)
            code = None
        if code is not None and code < 300:
            net.reply(placed, ringing[0], 180)
            net.reply(placed, ringing[0], code)
            net.bye(placed, "caller")
            break
        if code is not None:
            net.reply(placed, ringing[0], code)
        elif placed.statuses():
            break  # the caller has its final reply
        else:
            for someone in parties:  # tm's timer ends what rings now (a branch a failover sends next rings anew)
                someone.pending_invites.pop(placed.call_id, None)
            net.nobody_answers()  # the caller gets its 408 and ACKs it, unless a silent trunk fails over
    finals = [status for status in placed.statuses() if status >= 300]
    # tm's own 408, not a callee's (a trunk given --trunk NAME=408 answers so itself)
    received = [e.data[1] for e in gateway.events if e.kind == "recv" and e.data[1].call_id == placed.call_id]
    timed_out = not refused and finals == [408] and not any(not m.is_request and m.status == 408 for m in received)
    invites = [e.data for e in gateway.events[start:] if e.kind == "send" and e.data[1].is_request
               and e.data[1].method == "INVITE" and e.data[1].call_id == placed.call_id]  # fmt: skip
    branches = [e.text for e in gateway.events[start:] if e.kind == "branch"]
    names = {endpoint: f"{u.name}({'browser' if u.is_browser else 'phone'})" for endpoint, u in net.uas.items()}
    names.update({u.endpoint: f"{u.name}(trunk)" for u in answering})
    lines = [f"=== call {caller} -> {callee}" + (f" from {source}" if source else ""), *render(gateway.events, names)]
    lines.append("")
    lines += [f"  the rules decided: {text}" for text in decided] or [
        "  the rules were not asked: the gateway answered first (a [blocked] number, a refused relay, ...)"
    ]
    for (endpoint, message), branch in zip(invites, branches):
        added = [f"{k}: {v}" for k, v in message.headers if k.lower().startswith("x-")]
        answers = re.search(r'username="([^"]*)", realm="([^"]*)"', message.header("proxy-authorization")
                            or message.header("authorization") or "")  # fmt: skip
        lines.append(f"  the INVITE went to {names.get(endpoint, str(endpoint))} ({branch})"
                     + (f", headers {'; '.join(added)}" if added else "")
                     + (f", answering its challenge as {answers[1]} (realm {answers[2]})" if answers else "")
                     )  # fmt: skip
    for who in (u for u in (ua, target, *more) if u is not None):  # a registration refused (policy.py register())
        for got in who.inbox:
            if not got.is_request and got.cseq_method == "REGISTER" and got.status >= 300 and got.status != 401:
                lines.append(f"  {who.name}'s REGISTER got {got.first_line[len('SIP/2.0 ') :]}: not registered")
    for reply in ua.inbox:  # a trunk's challenge the gateway could not answer reaches the caller as it came
        challenge = reply.header("proxy-authenticate") or reply.header("www-authenticate") or ""
        realm = re.search(r'realm="([^"]*)"', challenge) if reply.call_id == placed.call_id else None
        if not reply.is_request and realm and realm[1] != settings.auth_realm:
            lines.append(f"  the caller got {reply.first_line[len('SIP/2.0 ') :]}, a trunk's challenge (realm "
                         f"{realm[1]}): the gateway answers one with the trunk's auth_user= and auth_password= in "
                         "[trunks]")  # fmt: skip
    if timed_out and invites:
        lines.append("  nobody answered (--no-answer, --trunk NAME=180, or a trunk or URI not given with --trunk: no UA"
                     " in a trace), so the caller got 408 when tm timed out")  # fmt: skip
    elif finals:
        final = next(m for m in ua.inbox if not m.is_request and m.call_id == placed.call_id and m.status == finals[0])
        lines.append(f"  the caller got {final.first_line[len('SIP/2.0 ') :]}")
    elif not invites:
        lines.append("  the INVITE went nowhere")
    offers = placed.rtpengine_offers()
    lines.append(f"  media proxy: {'yes, ' + str(len(offers)) + ' rtpengine offer(s)' if offers else 'no'}")
    lines.append(f"  rtpengine sessions left: {len(gateway.sessions())}; dialogs left: {len(gateway.dialogs)}")
    if gateway.python_failures:
        lines.append(
            f"  ! the Python side failed {gateway.python_failures} time(s); errors logged: {len(gateway.errors)}"
        )
    else:  # what the gateway logged of the call (a trunk's challenge it did not answer), no failure of the rules
        lines += [f"  logged: {line}" for line in gateway.errors]
    return lines


def realm_of(settings: Any, name: str) -> str:
    """The realm trunk ``name`` challenges in, in a trace: its auth_realm=, else its domain='s host or its
    address's."""
    from gateway.settings import split_domain  # pyscripts/ is on the path once a Gateway loaded

    their = settings.credentials.get(name)
    domain = settings.trunk_domain(name)
    if their is not None and their.realm:
        return str(their.realm)
    return split_domain(domain)[0] if domain else uri_endpoint(settings.trunk_uri(name)).host


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "call" in argv:
        return call_main(argv)
    parser = argparse.ArgumentParser(
        prog="python3 -m fakes.trace",
        description=__doc__.split("\n\n")[0],
        epilog="Your own call: python3 -m fakes.trace [--settings INI] [--policy PY] call CALLER CALLEE "
        "(python3 -m fakes.trace call --help)",
    )
    parser.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    parser.add_argument("--table", action="store_true", help="print the effective rtpengine flag table")
    parser.add_argument("--list", action="store_true", help="list the scenarios")
    parser.add_argument(
        "--rtpengine", metavar="HOST:PORT", help="send the ng commands to this real rtpengine instead of the fake one"
    )
    args = parser.parse_args(argv)
    if args.list:
        for name, scenario in SCENARIOS.items():
            print(f"{name:<12} {(scenario.__doc__ or '').strip()}")
        return 0
    if args.table:
        from gateway.profiles import render as render_table
        from gateway.settings import load

        print(render_table(load().profiles))
        return 0
    unknown = [n for n in args.scenarios if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; try --list", file=sys.stderr)
        return 2
    engine = None
    if args.rtpengine:
        host, _, port = args.rtpengine.rpartition(":")
        engine = RealEngine((host, int(port)))
    try:
        for name in args.scenarios or SCENARIOS:
            print("\n".join(run(name, rtpengine=engine)))
            print()
    finally:
        if engine is not None:
            engine.close()
    return 0


def call_main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m fakes.trace ... call", description="trace one call of your own")
    parser.add_argument("--settings", metavar="INI", help="gateway.ini to use (default: GATEWAY_SETTINGS or opensips/)")
    parser.add_argument("--policy", metavar="PY", help="policy.py to use (default: GATEWAY_POLICY or pyscripts/)")
    parser.add_argument("--no-answer", action="store_true", help="the callee does not answer")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a header of the caller's INVITE (again: more)",
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="KIND:USER",
        help="one more party registered before the call: a forwarding target, a user's second device (again: more)",
    )
    parser.add_argument(
        "--trunk",
        action="append",
        default=[],
        metavar="NAME=CODE[,CODE]",
        help="the gateway.ini trunk NAME answers with CODE: 200 answers, 503 fails (the call may go on to the "
        "next trunk), 401 or 407 challenges the gateway (in its auth_realm=, else its domain='s or address's "
        "host) and answers the retry (407,407: challenges the retry too: refused credentials), 180 rings until "
        "tm gives up; with several codes each INVITE the trunk gets takes the next (again: more; a trunk not "
        "named here is nobody: the call times out there)",
    )
    parser.add_argument(
        "--from-address", metavar="ADDR", help="the caller's source address (default: a test address of its own)"
    )
    parser.add_argument(
        "--rtpengine", metavar="HOST:PORT", help="send the ng commands to this real rtpengine instead of the fake one"
    )
    parser.add_argument("call", choices=["call"])
    parser.add_argument("caller", help="KIND:USER[@DOMAIN], KIND one of " + ", ".join(KINDS))
    parser.add_argument("callee", help="KIND:USER[@DOMAIN], or a number or user nobody registered")
    args = parser.parse_args(argv)
    engine = None
    if args.rtpengine:
        host, _, port = args.rtpengine.rpartition(":")
        engine = RealEngine((host, int(port)))
    headers = [tuple(part.strip() for part in text.split(":", 1)) for text in args.header]
    if any(len(h) != 2 or not h[0] for h in headers):
        print(f"fakes.trace: --header takes 'Name: value', not {args.header}", file=sys.stderr)
        return 2
    trunks = dict(text.partition("=")[::2] for text in args.trunk)
    bad = [f"{name}={codes}" for name, codes in trunks.items() if not name
           or not all(c.isdigit() and 180 <= int(c) <= 699 for c in codes.split(","))]  # fmt: skip
    bad += [text for text in args.trunk if sum(t.partition("=")[0] == text.partition("=")[0] for t in args.trunk) > 1]
    if bad:
        print(f"fakes.trace: --trunk takes NAME=CODE[,CODE...] (180-699), each NAME once, not {', '.join(bad)}",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        lines = call(args.caller, args.callee, not args.no_answer, (args.settings, args.policy), engine,
                     args.from_address, [(h[0], h[1]) for h in headers], args.also,
                     {name: [int(c) for c in codes.split(",")] for name, codes in trunks.items()})  # fmt: skip
    except ValueError as exc:
        print(f"fakes.trace: {exc}", file=sys.stderr)
        return 2
    finally:
        if engine is not None:
            engine.close()
    print("\n".join(lines))
    if lines[-1].startswith("  ! "):
        print("fakes.trace: the call met errors (lines with !): your rules raised or answered what the gateway "
              "cannot do", file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
