"""What one python_exec and each kind of host call cost inside a real OpenSIPS.

    OPENSIPS_BIN=/opt/opensips-3.6.8/sbin/opensips python3 -m bench.probe

docs/host-facts.md gives in-process figures (python_exec of an empty method about 0.26 us,
call_function about 4.2 us, ...).  This measures them where it matters: the
OpenSIPS CPU per REGISTER (all processes, schedstat) of a minimal registrar cfg,
with one variant per run that does one thing ten times before
``save("location")``, against the same cfg without Python; and the router's own
``on_register`` for the REGISTER (the cfg saves when its actions say so) once, against the native
save; beside the CPU, the growth of every process's private memory (RssAnon:
OpenSIPS's pkg memory and the Python heap) per REGISTER, after a warm-up, tells
which host call leaks.  Each variant runs in its own OpenSIPS, one after the
other, at the same rate, in rounds; the best of the rounds is kept.  Prints figures; asserts
nothing.  Skips without OpenSIPS, SIPp, rtpengine or openssl (bench.run's tools).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from gateway import host
from rig.ports import free_port

from . import procs
from .procs import Processes
from .run import REPO, SippStats, Tools, find_tools, say, sipp_argv, wait_bounded
from .site import with_mpath

#: A get_pseudoVar of several variables, as the router formats its facts (host.REQUEST_FACTS where there is one).
FACTS: str = getattr(host, "REQUEST_FACTS", "$socket_in(proto)|$cl|$tt")
#: The same, as a cfg string (python_exec's argument): line breaks written as \n.
FACTS_CFG = FACTS.replace("\n", "\\n")
TIMES = 10

HANDLER = f"""
import sys
sys.path.insert(0, {str(REPO / "pyscripts")!r})
from gateway.host import Router
from gateway.settings import Settings

class Probe:
    def __init__(self):
        self.router = Router.fixed(Settings(), lambda text: None)
    def child_init(self, rank):
        return 0
    def empty(self, msg):
        return 1
    def empty_arg(self, msg, facts):
        return 1
    def attribute(self, msg):
        for _ in range({TIMES}):
            msg.Method
        return 1
    def get_pv(self, msg):
        for _ in range({TIMES}):
            msg.get_pseudoVar({FACTS!r})
        return 1
    def set_pv(self, msg):
        for _ in range({TIMES}):
            msg.set_pseudoVar("$var(probe)", "x")
        return 1
    def get_header(self, msg):
        for _ in range({TIMES}):
            msg.getHeader("To")
        return 1
    def call_function(self, msg):
        for _ in range({TIMES}):
            msg.call_function("setflag", "PROBE")
        return 1
    def on_register(self, msg, facts=""):
        return self.router.on_register(msg, facts)

def mod_init():
    return Probe()
"""

SAVE = 'save("location");'
NATIVE = "native (no python)"
EMPTY = "python_exec, empty method"
WITH_ARG = f"python_exec with an argument ({FACTS.count('$')} variables)"
ROUTER = "the router's on_register for the REGISTER (the cfg saves when its actions say save)"
#: A REGISTER's facts as route[gw_register] passes them (asked every time here: no kept answer).
REGISTER_FACTS_CFG = host.REGISTER_FACTS.replace("\n", "\\n")


class Variant:
    """One way of handling a REGISTER: the route's body, and how to turn its CPU into one operation's."""

    def __init__(self, name: str, body: str, times: int, base: str) -> None:
        self.name, self.body, self.times, self.base = name, body, times, base


#: Each thing ten times (for a clear signal) before save("location"); the router once, saving itself.
VARIANTS: List[Variant] = [
    Variant(NATIVE, SAVE, 1, ""),
    Variant(EMPTY, 'python_exec("empty");' * TIMES + SAVE, TIMES, NATIVE),
    Variant(WITH_ARG, f'python_exec("empty_arg", "{FACTS_CFG}");' * TIMES + SAVE, TIMES, NATIVE),
    Variant(
        ROUTER,
        f'python_exec("on_register", "{REGISTER_FACTS_CFG}"); if ($(var(gw_register){{s.index,save}}) >= 0) {SAVE}',
        1,
        NATIVE,
    ),
    Variant("attribute read (msg.Method)", 'python_exec("attribute");' + SAVE, TIMES, EMPTY),
    Variant("getHeader", 'python_exec("get_header");' + SAVE, TIMES, EMPTY),
    Variant("set_pseudoVar", 'python_exec("set_pv");' + SAVE, TIMES, EMPTY),
    Variant(f"get_pseudoVar ({FACTS.count('$')} variables)", 'python_exec("get_pv");' + SAVE, TIMES, EMPTY),
    Variant("call_function (setflag)", 'python_exec("call_function");' + SAVE, TIMES, EMPTY),
]

CFG = """
log_level = 2
stderror_enabled = yes
syslog_enabled = no
udp_workers = 4
socket = udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "nathelper.so"
{python_modules}
modparam("nathelper", "sipping_from", "sip:probe@localhost")
modparam("usrloc", "working_mode_preset", "single-instance-no-db")
startup_route {{
	resetflag("PROBE");
}}
# Names the location table at start-up, for the router's save() through call_function.
route[declare_location_table] {{
	save("location");
}}
route {{
	$var(gw_nat) = 0;
	if (nat_uac_test("private-contact,diff-ip-src-via,diff-port-src-via"))
		$var(gw_nat) = 1;
	{variant}
	exit;
}}
"""


@dataclass(frozen=True)
class Figures:
    us: float
    """OpenSIPS on-CPU us per REGISTER, all processes."""
    failed: int
    growth: float
    """Growth of the private memory (RssAnon: pkg memory and the Python heap) of all processes, B per REGISTER."""


def register_load(tools: Tools, processes: Processes, folder: Path, port: int, count: int, rate: int) -> int:
    """``count`` REGISTERs at ``rate`` from SIPp; how many failed."""
    inf = folder / "users.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"u{i};localhost;9\n" for i in range(1000)))
    stat = folder / f"reg-{port}-{time.monotonic_ns()}.stat"
    argv = sipp_argv(tools, "reg.xml", free_port(), stat, [f"127.0.0.1:{port}"])
    argv += ["-inf", str(inf), "-m", str(count), "-r", str(rate), "-l", str(rate * 10)]
    argv += ["-timeout", f"{count / rate + 10:.0f}s", "-recv_timeout", "5000"]
    sipp = processes.start("sipp", argv)
    wait_bounded(sipp, count / rate + 15, processes)
    return count - SippStats.read(stat).successful


def measure(tools: Tools, processes: Processes, folder: Path, variant: str, count: int, rate: int) -> Figures:
    """One variant in its own OpenSIPS: 1,000 REGISTERs to warm it up, then ``count`` measured."""
    port = free_port()
    modules = ""
    if "python_exec" in variant:
        modules = f'loadmodule "python.so"\nmodparam("python", "script_name", "{folder / "probe_handler.py"}")'
    cfg = folder / f"probe-{port}.cfg"
    cfg.write_text(with_mpath("#\n" + CFG.format(port=port, python_modules=modules, variant=variant), tools.mpath))
    with open(folder / f"opensips-{port}.log", "wb") as log:
        proc = processes.start("opensips", [tools.opensips, "-F", "-m", "256", "-M", "32", "-f", str(cfg)], log)
        try:
            time.sleep(2.5)
            if proc.poll() is not None:
                raise RuntimeError(f"OpenSIPS did not start: see {folder}")
            pids = [proc.pid, *processes.remember_children(proc)]
            register_load(tools, processes, folder, port, 1000, rate)
            procs.wait_for_quiet(1.5, 10)
            anon = sum(procs.memory_of(pid).get("RssAnon", 0) for pid in pids)
            before = procs.cpu_of(pids)
            failed = register_load(tools, processes, folder, port, count, rate)
            time.sleep(1.0)
            used = procs.cpu_of(pids) - before
            growth = sum(procs.memory_of(pid).get("RssAnon", 0) for pid in pids) - anon
            return Figures(used.ns / 1e3 / count, failed, growth / count)
        finally:
            processes.stop(proc)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all variants (the best is kept)")
    args = parser.parse_args(argv)
    tools, reason = find_tools()
    if tools is None:
        say(f"SKIPPED: {reason}")
        return 0
    folder = Path(tempfile.mkdtemp(prefix="gw-probe-"))
    (folder / "probe_handler.py").write_text(HANDLER)
    processes = Processes()
    best: Dict[str, float] = {}
    growth: Dict[str, float] = {}
    try:
        say(f"OpenSIPS {tools.version} CPU per REGISTER: {args.count} at {args.rate}/s, best of {args.rounds}")
        say(f"(folder {folder})")
        for round_ in range(args.rounds):
            order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                got = measure(tools, processes, folder, variant.body, args.count, args.rate)
                best[variant.name] = min(got.us, best.get(variant.name, got.us))
                growth[variant.name] = min(got.growth, growth.get(variant.name, got.growth))
                say(
                    f"  {variant.name:<56} {got.us:8.1f} us  RssAnon {got.growth:+7.1f} B"
                    f"  failed {got.failed}  load {procs.loadavg():.2f}"
                )
    finally:
        processes.stop_all()
    say("\n  best per REGISTER (CPU, private memory growth), and one operation: (variant - its base) / times")
    for variant in VARIANTS:
        if not variant.base:
            say(f"  {variant.name:<56} {best[variant.name]:8.1f} us  RssAnon {growth[variant.name]:+7.1f} B")
            continue
        base, base_growth = best[variant.base], growth[variant.base]
        if variant.base == EMPTY:  # one empty python_exec is in both: take the native save as the base
            base = best[NATIVE] + (best[EMPTY] - best[NATIVE]) / TIMES
            base_growth = growth[NATIVE] + (growth[EMPTY] - growth[NATIVE]) / TIMES
        one = (best[variant.name] - base) / variant.times
        leak = (growth[variant.name] - base_growth) / variant.times
        against = "native + one empty python_exec" if variant.base == EMPTY else variant.base
        say(f"  {variant.name:<56} {best[variant.name]:8.1f} us  one: {one:+7.2f} us {leak:+7.1f} B  (base: {against})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
