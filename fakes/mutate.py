"""Mutation check of opensips.cfg: would the offline suite notice if a line of the cfg's routes never ran?

    python3 -m fakes.mutate                 # every statement, deleted and moved to its route's end
    python3 -m fakes.mutate --route relay   # the statements of some routes only
    python3 -m fakes.mutate --list          # the mutants, without running anything

For every statement of every route (a call, an assignment, ``route()``, ``exit``/``drop``/``return``,
and each ``if``/``switch``/``while`` with all it holds) two mutants are made: the statement deleted
(left as an empty statement, ``;``), and the statement moved after the route's exit (its closing
``exit``/``drop``/``return``, or a ``return`` put at its end): where it is parsed but never runs.  Each mutant
cfg runs the offline suite on the fake host (``GATEWAY_CFG`` names the mutant; the fake executes
the cfg itself, see cfgscript.py): the mutant is killed when a test fails.

Only the tests that ran the statement with the real cfg can notice either mutant: a test that
never ran it runs the same with or without it.  So a first run of the
suite records which cfg lines each test ran (tests/conftest.py, ``GATEWAY_CFG_COVERAGE``), and each
mutant runs those tests only, quickest first, stopping at the first failure.  A statement no test
runs is a survivor without a run.  Survivors the team judged harmless are named in ``HARMLESS``
with the reason.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

from . import cfgscript
from .runtime import CFG, REPO

#: (route, statement text, mutation) -> why the suite cannot and need not notice it.
HARMLESS: Dict[Tuple[str, str, str], str] = {
    ("route[request_actions]", "exit;", "delete"): (
        "every list of a request's actions ends with one that ends the script (relay, reply, save; "
        "gateway.host.ENDING, tests/test_router.py): the loop never runs out to this exit"
    ),
    ("route[branch_actions]", 'case "track": $dlg_val(gw_track) = 1; break;', "delete"): (
        "without the break a tracked branch also arms gw_reply; every tracked branch's plan arms its reply route "
        "next (core.branch_plan: track, then on_reply or on_reply_quiet), and t_on_reply keeps the last one armed"
    ),
}
HARMLESS[("route[branch_actions]", 'case "track": $dlg_val(gw_track) = 1; break;', "move")] = HARMLESS[
    ("route[branch_actions]", 'case "track": $dlg_val(gw_track) = 1; break;', "delete")
]

#: The request switch's breaks whose case, without them, runs the next case where that changes nothing: each
#: (case line, why).  Every other break of the loops is killed by the offline suite.
_HARMLESS_BREAKS = {
    'case "ws": setflag("SRC_WS"); break;': (
        "a request from a WebSocket always gets SRC_NAT next (host.source_actions: a browser is behind NAT)"
    ),
    'case "nat": setflag("SRC_NAT"); break;': (
        "force_rport() runs too: a SIP peer's list has rport next anyway (host.source_actions: nat, rport), and a "
        "browser's replies leave over its own WebSocket connection whatever the Via says (docs/host-facts.md 3)"
    ),
    'case "fix_contact": fix_nated_contact(); break;': (
        "fix_nated_register() runs too: it only keeps the source in nathelper's received_avp, which only save() "
        "reads, and save() comes only after fix_register itself (a REGISTER's Contact fix)"
    ),
    'case "www_auth": route(www_auth); break;': (
        "record_route() runs too: only a REGISTER is asked for www_auth, and the gateway answers every REGISTER "
        "itself (save or a reply), so a Record-Route on it goes nowhere"
    ),
    'case "hide_topology": topology_hiding(); break;': (
        "keep_record runs too: it is the next action of every list with hide_topology (host._carry_out)"
    ),
    'case "keep_record": $dlg_val(gw) = $var(gw_record); break;': (
        "relay_call runs too: it is the next action of every list with keep_record (host._carry_out)"
    ),
    'case "delete": route(rtp_delete); break;': (
        "relay_known runs too: t_check_trans() on the BYE finds a transaction only for a retransmission, which it "
        "absorbs as the list's relay would"
    ),
    'case "play_dtmf": route(play_dtmf); break;': (
        "remove_headers runs too: on an INFO the gateway answers itself (the list's reply), never relayed"
    ),
}
for _line, _why in _HARMLESS_BREAKS.items():
    for _kind in ("delete", "move"):
        HARMLESS[("route[request_actions]", _line, _kind)] = "without its break: " + _why

TIMEOUT = 600.0


@dataclass(frozen=True)
class Mutant:
    route: str
    action: cfgscript.Action
    kind: str  # "delete" or "move"
    text: str  # the mutant cfg
    line_text: str = ""  # the cfg's line that holds the statement (names the case a break ends)

    @property
    def label(self) -> str:
        first = self.action.text.splitlines()[0]
        return f"{self.route} line {self.action.line} {self.kind}: {first}"

    @property
    def key(self) -> Tuple[str, str, str]:
        """What HARMLESS names: the statement's text; a ``break``, which reads the same in every case, by its
        line (the case it ends)."""
        text = self.line_text if self.action.text.strip() == "break;" else self.action.text
        return (self.route, " ".join(text.split()), self.kind)


def route_label(block: cfgscript.RouteBlock) -> str:
    return f"{block.kind}[{block.name}]" if block.name else block.kind


def mutants(text: str, routes: Optional[Sequence[str]] = None) -> List[Mutant]:
    script = cfgscript.Parser(text).script(text)
    lines = text.splitlines()
    made: List[Mutant] = []
    for block in script.routes.values():
        label = route_label(block)
        if routes and block.name not in routes and label not in routes:
            continue
        last = block.body[-1] if block.body else None
        # After the route's exit: after its last statement when that ends it, else after a return put there.
        ends = isinstance(last, cfgscript.Keyword) and last.word in ("exit", "drop", "return")
        for action in block.actions:
            deleted = text[: action.start] + ";" + text[action.end :]
            line_text = lines[action.line - 1].split("#", 1)[0].strip()
            made.append(Mutant(label, action, "delete", deleted, line_text))
            if ends and action.end == max(a.end for a in block.actions):
                continue  # the exit itself: after itself is where it is
            close = block.close - len(action.text) + 1  # the deletion above shortened the text before it
            exit_ = "" if ends else "\treturn;\n"
            moved = deleted[:close] + exit_ + "\t" + action.text + "\n" + deleted[close:]
            made.append(Mutant(label, action, "move", moved, line_text))
    return made


def statement_lines(action: cfgscript.Action) -> Set[int]:
    return set(range(action.line, action.line + action.text.count("\n") + 1))


def pytest_command(tests: Sequence[str]) -> List[str]:
    return [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]


def record_coverage(extra: Sequence[str]) -> Tuple[Dict[str, Set[int]], Dict[str, float]]:
    """Which cfg lines each offline test runs, and how long each takes, with the real cfg."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "coverage.json")
        env = dict(os.environ, GATEWAY_CFG_COVERAGE=out)
        env.pop("GATEWAY_CFG", None)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ignore=tests/e2e", *extra]
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            sys.stdout.write(done.stdout[-4000:])
            raise SystemExit("the offline suite fails with the real cfg: fix that first")
        with open(out, encoding="utf-8") as handle:
            data = json.load(handle)
    lines = {test: set(found["lines"]) for test, found in data.items()}
    seconds = {test: float(found["seconds"]) for test, found in data.items()}
    return lines, seconds


def run_mutant(mutant: Mutant, tests: List[str], folder: str) -> Tuple[bool, str]:
    """(killed, how): the mutant cfg through the tests that ran its statement."""
    path = os.path.join(folder, f"mutant-{abs(hash(mutant.label))}-{mutant.kind}.cfg")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(mutant.text)
    env = dict(os.environ, GATEWAY_CFG=path)
    env.pop("GATEWAY_CFG_COVERAGE", None)
    try:
        done = subprocess.run(pytest_command(tests), cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return True, f"the tests did not end within {TIMEOUT:.0f} s"
    finally:
        os.unlink(path)
    if done.returncode == 0:
        return False, f"{len(tests)} test(s) passed"
    failed = next((line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))), "")
    return True, failed[:160] or f"pytest exit {done.returncode}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m fakes.mutate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--route", action="append", help="only the statements of this route (name)")
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants run at once")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for the coverage run (e.g. -m 'not browser')")
    args = parser.parse_args(argv)
    with open(CFG, encoding="utf-8") as handle:
        text = handle.read()
    made = mutants(text, args.route)
    if args.list:
        for mutant in made:
            print(mutant.label)
        print(f"{len(made)} mutants")
        return 0
    started = time.monotonic()
    coverage, seconds = record_coverage(args.pytest_args)
    print(f"coverage of {len(coverage)} tests recorded in {time.monotonic() - started:.0f} s; {len(made)} mutants")
    results: Dict[Mutant, Tuple[bool, str]] = {}
    with tempfile.TemporaryDirectory() as folder, concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {}
        for mutant in made:
            wanted = statement_lines(mutant.action)
            tests = sorted((t for t, lines in coverage.items() if lines & wanted), key=lambda t: seconds[t])
            if not tests:
                results[mutant] = (False, "no test runs this statement")
                continue
            futures[pool.submit(run_mutant, mutant, tests, folder)] = mutant
        for future in concurrent.futures.as_completed(futures):
            mutant = futures[future]
            results[mutant] = future.result()
            killed, how = results[mutant]
            print(f"{'killed  ' if killed else 'SURVIVED'} {mutant.label}  ({how})", flush=True)
    dead = [m for m in made if results[m][0]]
    survivors = [m for m in made if not results[m][0]]
    harmless = [m for m in survivors if m.key in HARMLESS]
    print(f"\nmutants killed: {len(dead)} / {len(made)} ({100.0 * len(dead) / max(len(made), 1):.1f} %)")
    print(f"survivors: {len(survivors)} ({len(harmless)} named harmless); {time.monotonic() - started:.0f} s")
    for mutant in survivors:
        reason = HARMLESS.get(mutant.key)
        print(f"  {mutant.label}: " + (f"harmless: {reason}" if reason else f"NOT EXPLAINED ({results[mutant][1]})"))
    unexplained = [m for m in survivors if m.key not in HARMLESS]
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
