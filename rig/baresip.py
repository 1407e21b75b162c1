"""A real SIP softphone: baresip (Debian's baresip-core), driven over its ctrl_tcp socket.

``Baresip.start`` writes a config folder (its own SIP and RTP ports, G.711 only, a tone from a
WAV file made here as its microphone, auto-answer) and starts ``baresip -f folder``, in a network
namespace when given one (rig/netns.py).  Commands (``dial``, ``hangup``, ``hold``, ``resume``)
go as netstring JSON to ctrl_tcp on the namespace's own 127.0.0.1; its events (``CALL_ESTABLISHED``,
``CALL_CLOSED``, ``REGISTER_OK``, ...) come back on the same connection.  Stopped by pid.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import struct
import subprocess
import time
import wave
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import netns
from .ports import free_port

MODULES = "/usr/lib/baresip/modules"


def available() -> Optional[str]:
    """Why baresip cannot run here (None when it can)."""
    if shutil.which("baresip") is None:
        return "baresip is not installed (bin/setup installs baresip-core)"
    if not Path(MODULES, "ctrl_tcp.so").exists():
        return f"baresip's ctrl_tcp module is not in {MODULES}"
    return None


def tone(path: Path, seconds: int = 60, hertz: int = 440) -> None:
    """A 8 kHz mono 16-bit tone: what G.711 carries without resampling (aufile wants the codec's rate)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hertz * n / 8000))) for n in range(8000))
        out.writeframes(frames * seconds)


class Baresip:
    def __init__(self, process: subprocess.Popen[bytes], folder: Path, user: str, namespace: Optional[str],
                 control: int, rtp: Tuple[int, int]) -> None:  # fmt: skip
        self.process = process
        self.folder = folder
        self.user = user
        self.namespace = namespace
        self.control = control
        self.rtp = rtp
        """The RTP ports it takes (its media port is one of them)."""
        self.events: List[Dict[str, Any]] = []
        self._sock: Optional[socket.socket] = None
        self._buffer = b""

    @classmethod
    def start(cls, folder: Path, user: str, host: str, registrar: Tuple[str, int], domain: str,
              namespace: Optional[str] = None, transport: str = "udp", video: bool = False,
              cafile: Optional[Path] = None) -> Baresip:  # fmt: skip
        """Register ``user`` at ``registrar`` (for ``domain``) from ``host`` over ``transport`` (udp, tcp,
        tls: ``cafile`` the certificate it trusts); answers calls by itself.  ``video``: a camera too
        (baresip's fakevideo, VP8)."""
        folder.mkdir(parents=True, exist_ok=True)
        sip, control = free_port(), free_port(udp=False)
        low = free_port(tcp=False, even=True, span=8)
        tone(folder / "tone.wav")
        (folder / "config").write_text("\n".join([
            "poll_method epoll",
            f"sip_listen {host}:{sip}",
            "call_local_timeout 120",
            f"audio_source aufile,{folder / 'tone.wav'}",
            "audio_player aubridge,nowhere",  # no sound card: what it hears goes nowhere (RTP still counts)
            "audio_alert aubridge,nowhere",
            f"rtp_ports {low}-{low + 7}",
            "rtcp_mux no",
            f"module_path {MODULES}",
            "module g711.so", "module aufile.so", "module aubridge.so", "module ctrl_tcp.so",
            *(["module vp8.so", "module fakevideo.so", "video_source fakevideo,nil", "video_display fakevideo,nil"]
              if video else []),
            *([f"sip_cafile {cafile}"] if cafile is not None else []),
            *([f"net_interface {host}"] if host.startswith("127.") else []),
            "module_tmp account.so", "module_app menu.so",
            f"ctrl_tcp_listen 127.0.0.1:{control}",
            "",
        ]))  # fmt: skip
        params = f";transport={transport}" if transport != "udp" else ""
        (folder / "accounts").write_text(
            f'<sip:{user}@{domain}{params}>;outbound="sip:{registrar[0]}:{registrar[1]}{params}";'
            f"regint=600;answermode=auto;audio_codecs=PCMU,PCMA" + (";video_codecs=VP8" if video else "") + "\n"
        )
        (folder / "contacts").write_text("")
        with open(folder / "baresip.log", "ab") as log:
            process = subprocess.Popen(netns.command(namespace, ["baresip", "-f", str(folder), "-v"]),
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        phone = cls(process, folder, user, namespace, control, (low, low + 7))
        try:
            phone._connect()
        except BaseException:
            phone.stop()
            raise
        return phone

    def _connect(self, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"baresip exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                with netns.entered(self.namespace):
                    self._sock = socket.create_connection(("127.0.0.1", self.control), timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"baresip's ctrl_tcp did not answer within {seconds}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        path = self.folder / "baresip.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def command(self, name: str, params: str = "", timeout: float = 5.0) -> Dict[str, Any]:
        """Send one command; its response (events that came meanwhile are kept in ``events``)."""
        assert self._sock is not None
        token = f"t{len(self.events)}{time.monotonic_ns()}"
        body = json.dumps({"command": name, "params": params, "token": token}).encode()
        self._sock.sendall(str(len(body)).encode() + b":" + body + b",")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self._read(deadline - time.monotonic()):
                if message.get("response") and message.get("token") == token:
                    return message
        raise TimeoutError(f"baresip did not answer {name} within {timeout}s")

    def wait_event(self, kind: str, timeout: float = 15.0, count: int = 1) -> Dict[str, Any]:
        """The ``count``-th event of type ``kind`` (e.g. CALL_ESTABLISHED), waiting for it (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events if e.get("type") == kind]
            if len(found) >= count:
                return found[count - 1]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"baresip {self.user}: no {kind} (x{count}) within {timeout}s: "
                                     f"{[e.get('type') for e in self.events]}")  # fmt: skip
            self._read(left)

    def poll(self, seconds: float) -> None:
        """Take in what baresip sent within ``seconds`` (its events go to ``events``)."""
        self._read(seconds)

    def _read(self, timeout: float) -> List[Dict[str, Any]]:
        assert self._sock is not None
        self._sock.settimeout(max(0.05, min(timeout, 0.5)))
        try:
            data = self._sock.recv(65536)
        except socket.timeout:
            data = b""
        self._buffer += data
        messages = []
        while b":" in self._buffer:
            size, _, rest = self._buffer.partition(b":")
            if not size.isdigit() or len(rest) < int(size) + 1:
                break
            body, self._buffer = rest[: int(size)], rest[int(size) + 1 :]
            message = json.loads(body)
            if message.get("event"):
                self.events.append(message)
            messages.append(message)
        return messages

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
