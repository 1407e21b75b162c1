"""Trace call scenarios through the real pyscripts on the fake OpenSIPS host.

    python3 -m fakes.trace                      # every scenario
    python3 -m fakes.trace web-to-sip forking   # some of them
    python3 -m fakes.trace --table              # the effective rtpengine flag table
    python3 -m fakes.trace --list               # scenario names
    python3 -m fakes.trace --rtpengine 127.0.0.1:2223 web-to-sip   # through a real rtpengine
    GATEWAY_SETTINGS=site.ini python3 -m fakes.trace   # with a site's settings

Message by message it prints what OpenSIPS would do: the routes run, the
functions called with their arguments and results, the flags and branch
flags, the ng command sent to rtpengine, and where each message goes.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Dict, List, Optional, Sequence

from .rtpengine import Backend
from .rtpengine_ng import RealEngine
from .runtime import Endpoint, Event, Gateway
from .scenarios import SCENARIOS
from .ua import Network


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
                lines[-1] += f" = {event.data}{failed}"
            else:
                lines.append("      " + event.text.split("] ", 1)[-1].replace(", facts", ", <facts>"))
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
    return lines


def run(name: str, settings: Optional[object] = None, rtpengine: Optional[Backend] = None) -> List[str]:
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m fakes.trace", description=__doc__.split("\n\n")[0])
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


if __name__ == "__main__":
    sys.exit(main())
