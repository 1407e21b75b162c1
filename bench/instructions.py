"""Instructions OpenSIPS executes per call, routing in Python against native cfg: figures that do not move.

    OPENSIPS_BIN=/opt/opensips-3.6.8/sbin/opensips python3 -m bench.instructions    # about 5 minutes
    python3 -m bench.instructions --compare 526af31     # and the gateway as it was at a git revision
    python3 -m bench.instructions --rules recipes       # with the README's recipes active (bench/recipes)

CPU time per call moves 10-30 % between two steps doing the same thing on a shared
2-core machine, more than the Python side costs.  Instructions do not: here each
OpenSIPS runs under valgrind's callgrind, which counts the instructions its
processes execute in user space while they handle a message (inside
``receive_msg``: parsing, the script and all it calls, Python included, the
messages sent), by shared object and function.  Start-up (module and Python
imports), idle timers and shutdown are not counted.  One run starts the gateway
(opensips.cfg + pyscripts/) and bench/native.cfg side by side under callgrind,
drives both at once with the same traffic at a low rate (valgrind slows them
20-50 times) and stops them a fixed time after they started; a run with no
traffic counts what every run has (the callee's REGISTER).  Per call:
(instructions with traffic - without) / calls.

It prints, per call and for each kind of traffic (calls without media, calls
through rtpengine, REGISTERs), the instructions of each instance and their
ratio, split three ways:

- the Python side: libpython and OpenSIPS's python module;
- OpenSIPS's memory allocator (``perf.ALLOCATOR``: F_MALLOC's fm_malloc, fm_free,
  fm_realloc, the default; HP_MALLOC's hp_pkg_malloc, hp_shm_malloc, their free
  and realloc under ``--allocator HP_MALLOC``), for
  pkg and shm memory, with its malloc calls per call and instructions per
  malloc.  Both walk their free-fragment buckets one by one from the size asked
  up to the first that holds a fragment, so what one allocation costs depends
  on the layout of that process's heap (which fragments are free), not on the
  caller;
- everything else (OpenSIPS, its modules, libc).

With ``--compare REV`` a third instance, "before", runs opensips.cfg and pyscripts/ as they are at
that git revision (``git archive``), under the same traffic in the same runs: the instructions of a
change's before and after.  With ``--rules recipes`` the gateway runs bench/recipes/gateway.ini and
policy.py and native.cfg their native form (bench/recipes/native-policy.cfg), and the calls are
bench.run's recipes traffic (bench/mix.py ``Mix(rules=True)``; no REGISTER run: no rule sees one;
no "before": an older router may not know the tables).

Kernel time (sockets, epoll) is not counted: the same messages cross the same
sockets in both instances; nor are the timer processes' (retransmissions,
transaction and dialog clean-up: tm's and dialog's work, the same in both).
Skips, with the reason, without OpenSIPS, SIPp, rtpengine, openssl or
valgrind.  Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from rig.gateway import make_certificate

from . import run
from .perf import ALLOCATOR, MALLOCS, PYTHON_OBJECTS

#: Traffic of a run: a name, and what drives one instance with it (None: no traffic).
TRAFFIC: Tuple[Tuple[str, Optional[str]], ...] = (
    ("no traffic", None),
    ("no media", "calls"),
    ("with rtpengine", "media"),
    ("REGISTER", "register"),
)


@dataclass
class Costs:
    """Instructions (callgrind's Ir, self cost) of every process of one instance."""

    by_object: Counter[str] = field(default_factory=Counter)
    by_function: Counter[str] = field(default_factory=Counter)
    mallocs: int = 0
    """Calls of the allocator's malloc (perf.MALLOCS: pkg and shm)."""

    @property
    def total(self) -> int:
        return sum(self.by_object.values())

    @property
    def python(self) -> int:
        return sum(n for ob, n in self.by_object.items() if PYTHON_OBJECTS.match(ob.rsplit("/", 1)[-1]))

    @property
    def allocator(self) -> int:
        return sum(self.by_function[name] for name in ALLOCATOR)

    def add(self, other: Costs) -> None:
        self.by_object.update(other.by_object)
        self.by_function.update(other.by_function)
        self.mallocs += other.mallocs


_NAMED = re.compile(r"\((\d+)\)(?: (.*))?$")
#: Which table of compressed names each kind of line uses (callgrind's file format); file names
#: (fl=, fi=, ...) are not needed here.
_NAME_TABLES = {"ob": "ob", "cob": "ob", "fn": "fn", "cfn": "fn"}


def read_callgrind(path: Path) -> Costs:
    """Self cost by object and function, and the allocator's malloc calls, from one callgrind.out file.

    Names may be compressed: ``fn=(12) name`` the first time, ``fn=(12)`` after, one table for
    objects (ob/cob), one for functions (fn/cfn).  A cost line right after ``calls=`` is the call's
    inclusive cost, already counted in the callee's own lines: it is skipped.
    """
    tables: Dict[str, Dict[str, str]] = {"ob": {}, "fn": {}}
    kinds = _NAME_TABLES

    def name(kind: str, text: str) -> str:
        match = _NAMED.match(text)
        if match is None:
            return text
        table = tables[kinds[kind]]
        if match.group(2) is not None:
            table[match.group(1)] = match.group(2)
        return table.get(match.group(1), "?")

    costs = Costs()
    ob = fn = "?"
    callee: Optional[str] = None
    inclusive = False
    with path.open(errors="replace") as handle:
        for line in handle:
            head = line[:1]
            if head.isdigit() or head in "+-*":
                if inclusive:
                    inclusive = False
                    continue
                parts = line.split()
                if len(parts) > 1:
                    cost = int(parts[1])
                    costs.by_object[ob] += cost
                    costs.by_function[fn] += cost
                continue
            key, sep, value = line.rstrip("\n").partition("=")
            if not sep or (key not in kinds and key != "calls"):
                continue
            if key == "calls":
                inclusive = True
                if callee in MALLOCS:
                    costs.mallocs += int(value.split()[0])
                continue
            text = name(key, value)
            if key == "ob":
                ob = text
            elif key == "fn":
                fn, callee = text, None
            elif key == "cfn":
                callee = text
    return costs


def read_folder(folder: Path) -> Costs:
    total = Costs()
    for path in sorted(folder.glob("callgrind.out.*")):
        total.add(read_callgrind(path))
    return total


#: Where OpenSIPS handles a message it received (core/receive.c): parsing, the script and what it calls
#: (Python, tm, dialog, rtpengine's control socket), the replies and requests it sends.
MESSAGE_FUNCTION = "receive_msg"


def valgrind_prefix(valgrind: str, out: Path) -> List[str]:
    """callgrind for one instance, counting only inside receive_msg: start-up (module and Python
    imports, whose count varies by millions from run to run), idle timers and shutdown are left
    out.  A file per process (OpenSIPS forks its workers; %p is the pid)."""
    return [
        valgrind,
        "--tool=callgrind",
        "--dump-instr=no",
        "--collect-atstart=no",
        f"--toggle-collect={MESSAGE_FUNCTION}",
        f"--callgrind-out-file={out}/callgrind.out.%p",
    ]


@dataclass
class Run:
    """What one run measured: per instance, its costs and the traffic's requests, failures, retransmissions."""

    costs: Dict[str, Costs]
    steps: Dict[str, run.Step]


def one_run(
    tools: run.Tools,
    args: argparse.Namespace,
    valgrind: str,
    drive: Optional[str],
    folder: Path,
    mode: str = "default",
    before: Optional[Path] = None,
    times: int = 1,
) -> Run:
    """The instances under callgrind (python and native with ``mode``'s rules, and the gateway exported to
    ``before`` when given), the same traffic on each at once, stopped ``args.vg_span`` s after start; with
    ``times`` 2, that traffic twice in a row, stopped as long after the second."""
    bench = run.Bench(tools, run_args(args))
    steps: Dict[str, run.Step] = {}
    outs: Dict[str, Path] = {}
    cfgs: List[Tuple[str, Path, Optional[Path], Optional[str]]] = [
        ("python", run.PYTHON_CFG, run.ENTRY, None),
        ("native", run.NATIVE_CFG, None, None),
    ]
    if before is not None:
        template = before / "opensips" / "gateway.ini"
        cfgs.append(
            (
                "before",
                before / "opensips" / "opensips.cfg",
                before / "pyscripts" / "opensips_entry.py",
                template.read_text() if template.exists() else None,
            )
        )
    try:
        make_certificate(bench.folder)
        ng = bench.start_rtpengine()
        for name, cfg, entry, settings in cfgs:
            outs[name] = folder / name
            outs[name].mkdir(parents=True)
            prefix = valgrind_prefix(valgrind, outs[name])
            bench.start_instance(name, cfg, ng, entry, settings, prefix, role=name, mode=mode)
        started = time.monotonic()
        count = int(args.vg_rate * args.vg_seconds)
        drivers: Dict[str, Callable[[run.Instance], run.Step]] = {
            "calls": lambda inst: bench.calls(inst, False, args.vg_rate, count, sample=False),
            "media": lambda inst: bench.calls(inst, True, args.vg_rate, count, sample=False),
            "register": lambda inst: bench.registers(inst, args.vg_rate, count),
        }
        last = started
        for _ in range(times if drive is not None else 0):
            last = time.monotonic()
            steps_now = part(bench, drivers[drive] if drive is not None else None)
            for name, step in steps_now.items():  # what a part asked and what failed, added up
                steps[name] = step if name not in steps else add_steps(steps[name], step)
        time.sleep(max(args.vg_span - (time.monotonic() - last), 0.0))  # as long after the last part's start
        for inst in bench.instances.values():
            if inst.proc is not None:
                bench.processes.stop(inst.proc, grace=120.0)  # valgrind writes its files as each process exits
    finally:
        bench.close()
    return Run({name: read_folder(out) for name, out in outs.items()}, steps)


def part(bench: run.Bench, drive: Optional[Callable[[run.Instance], run.Step]]) -> Dict[str, run.Step]:
    """The traffic on every instance at once: each instance's step."""
    found: Dict[str, run.Step] = {}
    if drive is None:
        return found
    threads = [
        threading.Thread(target=lambda n=n: found.__setitem__(n, drive(bench.instances[n]))) for n in bench.instances
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


def add_steps(one: run.Step, other: run.Step) -> run.Step:
    """Two parts of a run as one step: requests, failures and retransmissions added up."""
    stats = run.SippStats.combined([one.stats, other.stats])
    return dataclasses.replace(
        one,
        requested=one.requested + other.requested,
        stats=stats,
        callee_failed=one.callee_failed + other.callee_failed,
    )


def run_args(args: argparse.Namespace) -> argparse.Namespace:
    """What bench.run's Bench reads of its arguments: no perf, no waiting for the load average."""
    return argparse.Namespace(
        shm=args.shm,
        allocator=getattr(args, "allocator", None),
        perf=False,
        max_load=99.0,
        max_wait=0.0,
        compare=None,
        settle=0.0,
        mix=getattr(args, "mix", None),
    )


def per_call(with_traffic: Costs, without: Costs, calls: int, pick: Callable[[Costs], int]) -> float:
    return (pick(with_traffic) - pick(without)) / calls if calls else float("nan")


def report(pairs: Dict[str, Tuple[Run, Run]], heading: str) -> None:
    """The per-call table, and python/native per kind of traffic: for each, (a run - the run before it) / the
    requests the first had more."""
    run.say(heading)
    head = f"  {'traffic':<15} {'cfg':<7} {'all':>10} {'Python':>8} {'allocator':>10} {'the rest':>9}"
    run.say(head + f" {'malloc calls x instructions':>31}  failed retrans")
    for label, (found, base) in pairs.items():
        figures: Dict[str, Tuple[float, float, float]] = {}
        for cfg in [c for c in ("native", "python", "before") if c in found.costs]:
            step = found.steps.get(cfg)
            earlier = base.steps.get(cfg)
            calls = (step.requested if step is not None else 0) - (earlier.requested if earlier is not None else 0)
            now, before = found.costs[cfg], base.costs[cfg]
            total = per_call(now, before, calls, lambda c: c.total)
            python = per_call(now, before, calls, lambda c: c.python)
            alloc = per_call(now, before, calls, lambda c: c.allocator)
            mallocs = per_call(now, before, calls, lambda c: c.mallocs)
            malloc = per_call(now, before, calls, lambda c: sum(c.by_function[m] for m in MALLOCS))
            each = malloc / mallocs if mallocs else 0.0
            figures[cfg] = (total, python, alloc)
            failed = f"{step.failed:>6} {step.stats.retransmissions:>7}" if step is not None else "     -       -"
            rest = total - python - alloc
            run.say(
                f"  {label:<15} {cfg:<7} {total:>10,.0f} {python:>8,.0f} {alloc:>10,.0f} {rest:>9,.0f}"
                f" {mallocs:>14.1f} x {each:>6,.0f} each  {failed}"
            )
        nat = figures["native"]
        for cfg in [c for c in ("python", "before") if c in figures]:
            py = figures[cfg]
            ratio = py[0] / nat[0] if nat[0] else float("nan")
            without = (py[0] - py[2]) / (nat[0] - nat[2]) if nat[0] - nat[2] else float("nan")
            share = py[1] / nat[0] if nat[0] else float("nan")
            run.say(
                f"  {'':<15} {cfg}/native {ratio:.3f}; without the allocator {without:.3f};"
                f" the Python side {share:.4f} of native's instructions"
            )


def find_valgrind() -> Tuple[Optional[str], str]:
    path = shutil.which("valgrind")
    return (path, "") if path else (None, "no valgrind (Debian package valgrind)")


def measure(tools: run.Tools, args: argparse.Namespace, valgrind: str, folder: Path, mode: str = "default") -> None:
    """One run per kind of traffic (TRAFFIC; no REGISTER with the recipes: no rule sees one), with ``mode``'s
    rules; with ``args.compare`` (the default rules only) the gateway at that revision beside them."""
    runs: Dict[str, Run] = {}
    before = None
    if getattr(args, "compare", None) and mode == "default":
        folder.mkdir(parents=True, exist_ok=True)
        before = run.export_revision(args.compare, folder / "revision")
        run.say(f"  before = opensips.cfg and pyscripts/ at {args.compare}")
    for label, drive in TRAFFIC:
        if mode != "default" and drive == "register":
            continue
        for times in (1, 2) if drive is not None and args.steady else (1,):
            twice = ", twice in a row" if times == 2 else ""
            run.say(
                f"  run: {label} ({args.vg_rate}/s for {args.vg_seconds:.0f} s{twice}, stopped"
                f" {args.vg_span:.0f} s after the start of the last)"
            )
            name = label if times == 1 else f"{label} twice"
            runs[name] = one_run(tools, args, valgrind, drive, folder / name.replace(" ", "-"), mode, before, times)
    count = int(args.vg_rate * args.vg_seconds)
    kinds = [label for label, drive in TRAFFIC if drive is not None and label in runs]
    heading = "\n== instructions per call under valgrind (callgrind, user space, in receive_msg of every OpenSIPS"
    report(
        {label: (runs[label], runs["no traffic"]) for label in kinds},
        f"{heading} process):\n  the first {count} requests of instances just started ((run with traffic - run"
        " without) / requests)",
    )
    if args.steady:
        report(
            {label: (runs[f"{label} twice"], runs[label]) for label in kinds},
            f"{heading} process):\n  the steady state: the same traffic again after the first {count} requests"
            " ((run with it twice - run with it once) / requests)",
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allocator", help="OpenSIPS's memory allocator for every instance (-a, e.g. HP_MALLOC)")
    parser.add_argument("--vg-rate", dest="vg_rate", type=int, default=10, help="requests/s under valgrind")
    parser.add_argument("--vg-seconds", dest="vg_seconds", type=float, default=30.0, help="seconds of traffic")
    parser.add_argument("--vg-span", dest="vg_span", type=float, default=50.0, help="seconds from start to stop")
    parser.add_argument(
        "--no-steady",
        dest="steady",
        action="store_false",
        help="no steady-state figures (each traffic's run with it twice in a row)",
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.instructions", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--shm", type=int, default=1024, help="OpenSIPS shared memory, MB")
    parser.add_argument(
        "--compare", metavar="REV", help="also the gateway (opensips.cfg + pyscripts/) at this git revision"
    )
    parser.add_argument(
        "--rules", choices=("default", "recipes", "both"), default="default", help="the operator's rules (bench.run)"
    )
    args = parser.parse_args(argv)
    tools, reason = run.find_tools()
    valgrind, why = find_valgrind()
    if tools is None or valgrind is None:
        run.say(f"SKIPPED: {reason or why}")
        return 0
    folder = Path(tempfile.mkdtemp(prefix="gw-instructions-"))
    run.say(f"OpenSIPS {tools.version} ({tools.opensips}) under {valgrind}; files in {folder}")
    try:
        for mode in run.modes_of(args):
            run.say(f"\n== {run.RULES_LABEL[mode]}")
            measure(tools, args, valgrind, folder / mode, mode)
    except KeyboardInterrupt:
        run.say("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
