"""A real rtpengine for tests: Debian's daemon on loopback, userspace only.

Importable by any suite (``from tests.rtpengine_fixture import ...``); the
fixtures are registered for this folder by ``tests/conftest.py``.

- ``rtpengine_daemon`` (session): starts ``rtpengine`` once, waits for ng
  ``ping`` -> ``pong``, keeps its log in a file, and stops it by its pid at the
  end, failed tests included.  Skips, with one reason, when rtpengine is not
  installed.
- ``rtpengine`` (per test): a fresh ng client on that daemon and a mark in its
  log.  At the end it deletes whatever the test left (so one failure does not
  spill into the next test); the test itself asserts that nothing was left.

rtpengine answers success to flags it does not know and only says so in its
log (docs/host-facts.md); ``RtpengineDaemon.complaints`` reads those lines.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, List, Optional, Tuple

import pytest

from fakes.process import stop_process
from fakes.rtpengine_ng import NgError, RealEngine
from rig.ports import free_port

RTPENGINE = "/usr/bin/rtpengine"
#: Media ports stay in 30000-34999 (another suite on this machine may run its own rtpengine):
#: one block of this size, picked by our pid, so two of our own runs do not share one either.
PORT_BLOCK = 500
PORT_BASE, PORT_TOP = 30000, 34999
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

#: What rtpengine 10.5 logs for a flag or key it does not know, or knows and ignores
#: (daemon/call_interfaces.c: "Unknown flag encountered", "Unknown 'rtcp-mux' flag
#: encountered", "Unknown dictionary key encountered", "Ignoring obsolete flag ...").
COMPLAINT = re.compile(r"Unknown (flag|dictionary key|'[^']+' (flag|operation)) encountered|Ignoring obsolete flag")


def rtpengine_binary() -> Optional[str]:
    if os.access(RTPENGINE, os.X_OK):
        return RTPENGINE
    return shutil.which("rtpengine")


def port_block(pid: int) -> Tuple[int, int]:
    blocks = (PORT_TOP + 1 - PORT_BASE) // PORT_BLOCK
    low = PORT_BASE + (pid % blocks) * PORT_BLOCK
    return low, low + PORT_BLOCK - 1


@dataclass
class RtpengineDaemon:
    process: subprocess.Popen[bytes]
    ng_address: Tuple[str, int]
    ports: Tuple[int, int]
    log_path: Path

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, mark: int) -> str:
        with open(self.log_path, "rb") as handle:
            handle.seek(mark)
            return handle.read().decode("utf-8", errors="replace")

    def complaints(self, mark: int = 0) -> List[str]:
        """Log lines since ``mark`` in which rtpengine says it did not know or ignored a flag or key."""
        return [line for line in self.log_since(mark).splitlines() if COMPLAINT.search(line)]


def start_rtpengine(log_path: Path, binary: str = RTPENGINE) -> RtpengineDaemon:
    """Start rtpengine on 127.0.0.1 and wait for it to answer ng ping; stop it again if it does not."""
    low, high = port_block(os.getpid())
    last_error = "not started"
    for _attempt in range(3):  # the ng port picked may be taken between probe and bind
        port = free_port(tcp=False)
        args = [
            binary,
            "--config-file=none",
            "--table=-1",
            "--interface=127.0.0.1",
            f"--listen-ng=127.0.0.1:{port}",
            f"--port-min={low}",
            f"--port-max={high}",
            "--delete-delay=0",
            "--foreground",
            "--log-stderr",
            "--log-level=7",
        ]
        log: IO[bytes] = open(log_path, "ab")  # the daemon holds its own descriptor
        try:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()
        daemon = RtpengineDaemon(process, ("127.0.0.1", port), (low, high), log_path)
        if _wait_for_pong(daemon):
            return daemon
        stop_rtpengine(daemon)
        last_error = f"no pong on 127.0.0.1:{port} within {START_TIMEOUT}s (exit code {process.returncode})"
    raise RuntimeError(f"rtpengine did not start: {last_error}; log in {log_path}")


def _wait_for_pong(daemon: RtpengineDaemon) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    with RealEngine(daemon.ng_address, timeout=0.2, attempts=1) as engine:
        while time.monotonic() < deadline:
            if daemon.process.poll() is not None:
                return False
            try:
                if engine.ping():
                    return True
            except NgError:
                pass
            time.sleep(0.05)
    return False


def stop_rtpengine(daemon: RtpengineDaemon) -> None:
    stop_process(daemon.process, STOP_TIMEOUT)


@pytest.fixture(scope="session")
def rtpengine_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtpengineDaemon]:
    binary = rtpengine_binary()
    if binary is None:
        pytest.skip("rtpengine is not installed (Debian package rtpengine-daemon; bin/setup installs it)")
    log_path = tmp_path_factory.mktemp("rtpengine") / "rtpengine.log"
    daemon = start_rtpengine(log_path, binary)
    try:
        yield daemon
    finally:
        stop_rtpengine(daemon)


@dataclass
class RtpengineClient:
    """One test's view of the daemon: an ng client, and the log from the test's start."""

    daemon: RtpengineDaemon
    engine: RealEngine
    mark: int

    def complaints(self) -> List[str]:
        return self.daemon.complaints(self.mark)

    def log(self) -> str:
        return self.daemon.log_since(self.mark)


@pytest.fixture
def rtpengine(rtpengine_daemon: RtpengineDaemon) -> Iterator[RtpengineClient]:
    if rtpengine_daemon.process.poll() is not None:
        pytest.fail(f"rtpengine exited ({rtpengine_daemon.process.returncode}); log: {rtpengine_daemon.log_path}")
    engine = RealEngine(rtpengine_daemon.ng_address)
    try:
        yield RtpengineClient(rtpengine_daemon, engine, rtpengine_daemon.log_size())
    finally:
        try:
            for call_id in engine.calls():
                engine.command({"command": "delete", "call-id": call_id})
        finally:
            engine.close()
