"""Where an instance's CPU goes by shared object, sampled with Linux perf during a step.

CPU time per call moves by 20 % from run to run on a shared 2-core machine, both
instances alike; what the Python routing itself costs is a much smaller figure
inside that.  ``perf record -e cpu-clock -c PERIOD_NS`` takes one sample per
PERIOD_NS of CPU any process of the instance spends, and ``perf report --sort dso``
says in which shared object: the samples in libpython and the python module are
the Python side's own CPU, measured in the same step as the rest.  Without a
usable perf (not installed, or perf_event_paranoid forbids it) ``Sampler.usable``
says why and the benchmark goes on without these figures.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .procs import Processes

#: One sample per half millisecond of CPU.
PERIOD_NS = 500_000
#: The shared objects that are the Python side: the interpreter and OpenSIPS's python module.
PYTHON_OBJECTS = re.compile(r"^(libpython[\d.]+\.so[\d.]*|python\.so)$")


def usable() -> Tuple[Optional[str], str]:
    """perf's path, or None and why it cannot sample here."""
    path = shutil.which("perf")
    if path is None:
        return None, "no perf (Debian package linux-perf)"
    try:
        done = subprocess.run(
            [path, "record", "-q", "-e", "cpu-clock", "-c", str(PERIOD_NS), "-o", "/dev/null", "--", "true"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"perf does not run: {exc}"
    if done.returncode != 0:
        return None, "perf cannot sample: " + done.stderr.decode(errors="replace").strip().splitlines()[-1][:120]
    return path, ""


class Sampler:
    """One ``perf record`` of a set of processes, started and stopped by pid."""

    def __init__(self, perf: str, processes: Processes, pids: Sequence[int], out: Path) -> None:
        self.perf = perf
        self.out = out
        self.processes = processes
        argv = [perf, "record", "-q", "-e", "cpu-clock", "-c", str(PERIOD_NS), "-o", str(out)]
        argv += ["-p", ",".join(str(p) for p in pids)]
        self.proc = processes.start("perf", argv)
        self.symbols: Dict[str, int] = {}
        """After stop(): samples by function, "<shared object> [.] <symbol>"."""

    def stop(self) -> Dict[str, int]:
        """Samples by shared object, and ALLOCATOR_KEY's; {} when perf recorded nothing readable."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # perf writes its file on SIGINT
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        self.processes.stop(self.proc)
        found = samples_by(self.perf, self.out, "dso")
        if found:
            self.symbols = samples_by(self.perf, self.out, "dso,sym")
            found[ALLOCATOR_KEY] = sum(n for sym, n in self.symbols.items() if sym.split()[-1] in ALLOCATOR)
        return found


#: OpenSIPS's memory allocators' entry points, pkg and shm: F_MALLOC's (mem/f_malloc*.h) and HP_MALLOC's
#: (mem/hp_malloc*.h, bench.run --allocator HP_MALLOC); their samples are kept under ALLOCATOR_KEY, which is no
#: shared object's name.
MALLOCS = frozenset({"fm_malloc", "hp_pkg_malloc", "hp_shm_malloc", "hp_shm_malloc_unsafe"})
ALLOCATOR = MALLOCS | frozenset({
    "fm_free", "fm_realloc", "hp_pkg_free", "hp_pkg_realloc", "hp_shm_free", "hp_shm_free_unsafe", "hp_shm_realloc",
    "hp_shm_realloc_unsafe",
})  # fmt: skip
ALLOCATOR_KEY = "(allocator: its malloc, free, realloc)"


def samples_by(perf: str, data: Path, key: str) -> Dict[str, int]:
    """``perf report --sort <key>``: samples by shared object (dso) or by symbol (sym)."""
    if not data.exists():
        return {}
    try:
        done = subprocess.run(
            [perf, "report", "-i", str(data), "--stdio", "--no-children", "-g", "none", "--sort", key, "-n"],
            capture_output=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_report(done.stdout.decode(errors="replace"))


def parse_report(text: str) -> Dict[str, int]:
    """``perf report --sort dso -n`` lines, "    52.96%          3646  opensips", as {dso: samples}
    (with --sort sym: "[.] fm_malloc"; with --sort dso,sym: "opensips [.] fm_malloc", one space between the
    columns, which perf pads to the report's longest name)."""
    found: Dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\S.*?)\s*$", line)
        if match:
            key = " ".join(match.group(2).split())
            found[key] = found.get(key, 0) + int(match.group(1))
    return found


def extra(ours: Sequence[Tuple[Dict[str, int], int]], native: Sequence[Tuple[Dict[str, int], int]]) -> Dict[str, float]:
    """Microseconds of CPU per call an instance spends over native in each function ("<shared object> [.]
    <symbol>" of Sampler.symbols): each side's samples summed over its steps, (symbols, calls), over their
    calls.  Negative where native spends more."""

    def per_call(steps: Sequence[Tuple[Dict[str, int], int]]) -> Dict[str, float]:
        calls = sum(n for _symbols, n in steps)
        found: Dict[str, float] = {}
        for symbols, _n in steps:
            for name, samples in symbols.items():
                found[name] = found.get(name, 0.0) + samples * PERIOD_NS / 1e3 / max(calls, 1)
        return found

    a, b = per_call(ours), per_call(native)
    return {name: a.get(name, 0.0) - b.get(name, 0.0) for name in set(a) | set(b)}


def by_object(extra_us: Dict[str, float]) -> List[Tuple[str, float, List[Tuple[str, float]]]]:
    """``extra``'s figures by shared object, the largest difference first, each with its functions (the
    largest difference either way first: an object's sum may hide a large one of each sign):
    [(object, us, [(symbol, us), ...])]."""
    grouped: Dict[str, List[Tuple[str, float]]] = {}
    for name, us in extra_us.items():
        parts = name.split(maxsplit=2)
        obj, symbol = parts[0], parts[-1] if len(parts) == 3 else "?"
        grouped.setdefault(obj, []).append((symbol, us))
    found = [
        (obj, sum(us for _s, us in funcs), sorted(funcs, key=lambda f: -abs(f[1]))) for obj, funcs in grouped.items()
    ]
    return sorted(found, key=lambda g: -g[1])


def python_share(samples: Dict[str, int]) -> Tuple[int, int]:
    """(samples in the Python side, all samples)."""
    own = sum(n for dso, n in samples.items() if PYTHON_OBJECTS.match(dso))
    return own, sum(n for dso, n in samples.items() if dso != ALLOCATOR_KEY)
