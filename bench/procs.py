"""Processes the benchmark starts, and what /proc says about them.

Every process is started through ``Processes.start`` and stopped by its pid in
``Processes.stop_all`` (also on failure or Ctrl-C): SIGTERM, a bounded wait,
then SIGKILL, then the same for any child it left (OpenSIPS forks its workers).
Nothing is ever stopped by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import IO, Dict, Iterable, List, Optional, Sequence, Tuple

from rig.gateway import children_of

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> List[str]:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        # The command name may hold spaces or parentheses: split after the last ")".
        return handle.read().rsplit(")", 1)[1].split()


@dataclass(frozen=True)
class Cpu:
    """CPU used by a set of processes so far."""

    ticks: int
    """utime + stime from /proc/<pid>/stat, in clock ticks (what top and ps count)."""
    ns: int
    """On-CPU time from /proc/<pid>/task/*/schedstat, in nanoseconds (exact, a cross-check)."""
    faults: int = 0
    """Minor page faults (minflt of /proc/<pid>/stat): the first touch of memory by this process, e.g. shm
    pages at a concurrency it had not reached before."""

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.ticks - other.ticks, self.ns - other.ns, self.faults - other.faults)

    def __add__(self, other: Cpu) -> Cpu:
        return Cpu(self.ticks + other.ticks, self.ns + other.ns, self.faults + other.faults)

    @property
    def seconds(self) -> float:
        return self.ticks / CLK_TCK


def cpu_of(pids: Iterable[int]) -> Cpu:
    total = Cpu(0, 0)
    for cpu in cpu_by_pid(pids).values():
        total += cpu
    return total


def cpu_by_pid(pids: Iterable[int]) -> Dict[int, Cpu]:
    """CPU of each process so far (its threads included); a process that is gone is left out."""
    found = {}
    for pid in pids:
        try:
            fields = _stat_fields(pid)
            ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
            faults = int(fields[7])  # minflt (field 10 of stat)
            ns = 0
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as handle:
                    ns += int(handle.read().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # gone
        found[pid] = Cpu(ticks, ns, faults)
    return found


def memory_of(pid: int) -> Dict[str, int]:
    """RSS and its parts (VmRSS, RssAnon, RssShmem, RssFile) in bytes, from /proc/<pid>/status; {} when gone.

    RssAnon is the process's own memory (pkg memory, the Python heap): where a leak shows.
    RssShmem grows as a process touches more pages of OpenSIPS's shared memory, which says
    nothing about a leak: shm use is read from OpenSIPS's own statistics instead.
    """
    found = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssShmem", "RssFile"):
                    found[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return found


def machine_busy_ticks() -> Tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def loadavg() -> float:
    with open("/proc/loadavg", encoding="ascii") as handle:
        return float(handle.read().split()[0])


def wait_for_quiet(limit: float, max_wait: float) -> Tuple[float, float]:
    """Wait (at most ``max_wait`` s) for the 1-minute load average to drop to ``limit``; (load, waited)."""
    start = time.monotonic()
    load = loadavg()
    while load > limit and time.monotonic() - start < max_wait:
        time.sleep(1.0)
        load = loadavg()
    return load, time.monotonic() - start


class Processes:
    """The processes this run started; ``stop_all`` ends each of them by pid."""

    def __init__(self) -> None:
        self.running: List[Tuple[str, subprocess.Popen[bytes]]] = []
        self.family: Dict[int, Dict[int, str]] = {}  # pid -> {child pid: its start time}, for OpenSIPS

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log: Optional[IO[bytes]] = None,
        cwd: Optional[str] = None,
        env: Optional[Dict[str, str]] = None,
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
        )
        self.running.append((name, proc))
        return proc

    def remember_children(self, proc: subprocess.Popen[bytes]) -> List[int]:
        kids = children_of(proc.pid)
        known = self.family.setdefault(proc.pid, {})
        for kid in kids:
            started = _start_time(kid)
            if started is not None:
                known[kid] = started
        return kids

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for kid, started in self.family.get(proc.pid, {}).items():
            _kill_if_left(kid, started)
        self.running = [(n, p) for n, p in self.running if p is not proc]

    def stop_all(self) -> None:
        for _name, proc in reversed(list(self.running)):
            try:
                self.stop(proc)
            except (OSError, subprocess.SubprocessError):
                pass


def _start_time(pid: int) -> Optional[str]:
    try:
        return _stat_fields(pid)[19]
    except (OSError, IndexError):
        return None


def _kill_if_left(pid: int, started: str) -> None:
    """SIGKILL a recorded child that outlived its parent: only if that pid is still the same process."""
    if _start_time(pid) == started:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
