"""What one python_exec and each kind of host call cost inside a real OpenSIPS.

    OPENSIPS_BIN=/opt/opensips-3.6.8/sbin/opensips python3 -m bench.probe

FACTS.md gives in-process figures (python_exec of an empty method about 0.26 us,
call_function about 4.2 us, ...).  This measures them where it matters: the
OpenSIPS CPU per REGISTER (all processes, schedstat) of a minimal registrar cfg,
with one variant per run that does one thing ten times before
``save("location")``, against the same cfg without Python.  Each variant runs in
its own OpenSIPS, one after the other, at the same rate, in rounds; the best of
the rounds is kept.  Prints figures; asserts nothing.  Skips without OpenSIPS.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from gateway.host import REQUEST_FACTS

from . import procs
from .procs import Ports, Processes
from .run import REPO, SippStats, Tools, find_tools, say, sipp_argv, wait_bounded, with_mpath

# The router's facts for a request, as the cfg writes them (a line break is "\\n" in a cfg string).
FACTS = REQUEST_FACTS.replace("\n", "\\n")
TIMES = 10

HANDLER = f"""
import sys
sys.path.insert(0, {str(REPO / "pyscripts")!r})
from gateway.host import Router
from gateway.settings import Settings

class Probe:
    def __init__(self):
        self.router = Router(Settings(), lambda text: None)
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
    def on_request(self, msg, facts):
        return self.router.on_request(msg, facts)

def mod_init():
    return Probe()
"""

NATIVE = "native (no python)"
EMPTY = "python_exec, empty method"
WITH_FACTS = "python_exec with the facts argument"
ROUTER = "the router's on_request, REGISTER"
#: (name, what the route does before save("location")): each thing ten times, for a clear signal.
VARIANTS: List[Tuple[str, str]] = [
    (NATIVE, ""),
    (EMPTY, 'python_exec("empty");' * TIMES),
    (WITH_FACTS, f'python_exec("empty_arg", "{FACTS}");' * TIMES),
    (ROUTER, f'python_exec("on_request", "{FACTS}");' * TIMES),
    ("attribute read (msg.Method)", 'python_exec("attribute");'),
    ("getHeader", 'python_exec("get_header");'),
    ("set_pseudoVar", 'python_exec("set_pv");'),
    ("get_pseudoVar (13 variables)", 'python_exec("get_pv");'),
    ("call_function (setflag)", 'python_exec("call_function");'),
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
modparam("usrloc", "db_mode", 0)
startup_route {{
	resetflag("PROBE");
}}
route {{
	$var(gw_nat) = 0;
	if (nat_uac_test("private-contact,diff-ip-src-via,diff-port-src-via"))
		$var(gw_nat) = 1;
	{variant}
	save("location");
	exit;
}}
"""


def measure(
    tools: Tools, processes: Processes, folder: Path, ports: Ports, variant: str, count: int, rate: int
) -> Tuple[float, int]:
    """(OpenSIPS on-CPU us per REGISTER, failed REGISTERs) for one variant."""
    port, uac = ports.take(), ports.take()
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
            inf = folder / "users.csv"
            inf.write_text("SEQUENTIAL\n" + "".join(f"u{i};localhost;9\n" for i in range(1000)))
            stat = folder / f"reg-{port}.stat"
            argv = sipp_argv(tools, "reg.xml", uac, stat, [f"127.0.0.1:{port}"])
            argv += ["-inf", str(inf), "-m", str(count), "-r", str(rate), "-l", str(rate * 10)]
            argv += ["-timeout", f"{count / rate + 10:.0f}s", "-recv_timeout", "5000"]
            procs.wait_for_quiet(1.5, 10)
            before = procs.cpu_of(pids)
            sipp = processes.start("sipp", argv)
            wait_bounded(sipp, count / rate + 15, processes)
            time.sleep(1.0)
            used = procs.cpu_of(pids) - before
            return used.ns / 1e3 / count, count - SippStats.read(stat).successful
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
    base = 30000 + (os.getpid() % 40) * 100
    ports = Ports(base, base + 100)
    processes = Processes()
    best: Dict[str, float] = {}
    try:
        say(f"OpenSIPS CPU per REGISTER: {args.count} at {args.rate}/s, best of {args.rounds} (folder {folder})")
        for round_ in range(args.rounds):
            order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
            for name, variant in order:
                us, failed = measure(tools, processes, folder, ports, variant, args.count, args.rate)
                best[name] = min(us, best.get(name, us))
                say(f"  {name:<40} {us:8.1f} us   failed {failed}   load {procs.loadavg():.2f}")
    finally:
        processes.stop_all()
    native = best[NATIVE]
    one_exec = (best[EMPTY] - native) / TIMES
    say(f"\n  best per REGISTER, and one operation: (variant - base) / {TIMES}")
    for name, _variant in VARIANTS:
        if name == NATIVE:
            say(f"  {name:<40} {best[name]:8.1f} us")
            continue
        if name in (EMPTY, WITH_FACTS):
            base_us, against = native, "native"
        elif name == ROUTER:
            base_us, against = best[WITH_FACTS], "python_exec with the facts"
        else:
            base_us, against = native + one_exec, "native + one empty python_exec"
        say(f"  {name:<40} {best[name]:8.1f} us   one: {(best[name] - base_us) / TIMES:+7.2f} us  (base: {against})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
