"""`python3 -m rig.up --settings FILE`, as the README tells an operator to try his files: OpenSIPS watches
FILE where it is, so an edit routes the next request, and Ctrl-C stops everything it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from rig.gateway import DEFAULT_SETTINGS

from .conftest import NO_OPENSIPS
from .rawsip import SDP, SipSocket

ROOT = Path(__file__).resolve().parents[2]


def banner(process: subprocess.Popen[str], seconds: float = 60.0) -> List[str]:
    """rig.up's lines up to the MI address it prints last (it is up then)."""
    lines: List[str] = []
    deadline = time.monotonic() + seconds
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.lstrip().startswith("MI:"):
            return lines
    raise AssertionError(f"rig.up did not come up (exit {process.poll()}):\n" + "\n".join(lines))


def invite(sip: Tuple[str, int], user: str) -> Optional[Tuple[int, str]]:
    with SipSocket(sip, host="127.0.0.42") as phone:
        reply = phone.final(phone.request("INVITE", f"sip:{user}@127.0.0.1", body=SDP), 5)
    return None if reply is None else (reply.status, reply.reason)


def test_rig_up_watches_the_operators_own_settings_file(opensips_bin: Optional[str], tmp_path: Path) -> None:
    if opensips_bin is None:
        pytest.skip(NO_OPENSIPS)
    mine = tmp_path / "my.ini"
    mine.write_text(DEFAULT_SETTINGS)
    env = dict(os.environ, OPENSIPS_BIN=opensips_bin, PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "rig.up", "--folder", str(tmp_path / "run"), "--settings", str(mine)]
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = banner(process)
        # the policy OpenSIPS loads: the operator's pyscripts/policy.py, or GATEWAY_POLICY's (tests/conftest.py:
        # the shipped one, in the project's tests)
        assert f"rules: {mine} and {os.environ['GATEWAY_POLICY']}" in "\n".join(lines), lines
        port = re.search(r"udp/tcp 127\.0\.0\.1:(\d+)", "\n".join(lines))
        assert port is not None, lines
        sip = ("127.0.0.1", int(port.group(1)))
        assert invite(sip, "0900123") == (404, "Not Found")  # nobody registered, nothing blocked
        stamp = mine.stat().st_mtime
        mine.write_text(DEFAULT_SETTINGS + "[blocked]\nprefixes = 0900\n")
        os.utime(mine, (stamp + 5, stamp + 5))
        time.sleep(1.2)  # a worker looks at the files once a second at most
        assert invite(sip, "0900123") == (403, "Forbidden - Blocked Number")
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: rig.up stops OpenSIPS, rtpengine and the page by pid
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, process.stdout.read() if process.stdout else ""
    log = (tmp_path / "run" / "opensips.log").read_text(errors="replace")
    assert f"gateway: rules loaded again from {os.environ['GATEWAY_POLICY']} with {mine}" in log
