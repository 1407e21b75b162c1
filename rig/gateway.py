"""Start rtpengine and a real OpenSIPS with the repository's opensips.cfg on loopback; stop both by pid.

``Gateway.start(binary)`` lays out a temporary folder the way a site would:

    opensips.cfg   the repository's file, copied as it is
    site.cfg         this binary's module path (../lib64/opensips/modules), loopback sockets on
                     free ports (udp, tcp, tls, ws, wss)
    site-params.cfg  a certificate made now with openssl, the rtpengine socket, MI over HTTP,
                     the FIFO, an empty subscriber database, the script path
    gateway.ini    the router's settings (found through GATEWAY_SETTINGS)

and starts ``rtpengine`` (userspace, a media range in 35000-39999), a recording
ng relay in front of it, then ``opensips -F``, and waits until MI answers.
``stop()`` ends OpenSIPS (and any worker left behind) and rtpengine by pid,
with bounded waits; the context manager calls it on failure too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import mi, netns, ng
from .ports import free_port, media_range
from .subscribers import subscribers

REPO = Path(__file__).resolve().parent.parent
CFG_DIR = REPO / "opensips"
ENTRY = REPO / "pyscripts" / "opensips_entry.py"

#: tm's fr_inv_timeout on the rig (seconds a callee may ring before the caller gets 408).
FR_INV_TIMEOUT = 4

DEFAULT_SETTINGS = """\
[gateway]
domains = 127.0.0.1 localhost gateway.local
sip_destination =
trusted_sources =
topology_hiding = no
"""


@dataclass
class Binaries:
    """What OPENSIPS_BIN (or PATH) gave: the executables found, and each named path that is not one."""

    found: List[str]
    problems: List[str]
    """``"<path>: <why>"`` for each part of OPENSIPS_BIN that names no executable file."""
    named: str
    """OPENSIPS_BIN as it was ("" when unset or empty: then PATH was searched)."""


def find_opensips(env: Optional[Dict[str, str]] = None) -> Binaries:
    """OpenSIPS binaries named by OPENSIPS_BIN (several, separated by ':' or os.pathsep), else `opensips` on PATH.

    A named path that is not an executable file is a problem, not something to pass over: a typo
    in OPENSIPS_BIN must not turn a test run against that build into a run against nothing."""
    env = dict(os.environ) if env is None else env
    named = env.get("OPENSIPS_BIN", "")
    if not named:
        on_path = shutil.which("opensips", path=env.get("PATH", os.defpath))
        return Binaries([on_path] if on_path else [], [], named="")
    found: List[str] = []
    problems: List[str] = []
    for part in named.replace(os.pathsep, ":").split(":"):
        if not part:
            continue
        why = _not_an_executable(part)
        if why:
            problems.append(f"{part}: {why}")
        else:
            found.append(part)
    if not found and not problems:
        problems.append(f"{named!r}: names no path")
    return Binaries(found, problems, named)


def _not_an_executable(path: str) -> str:
    """Why ``path`` is not an executable file, or "" when it is one."""
    if not os.path.lexists(path):
        return "no such file"
    if not os.path.exists(path):
        return "a broken symbolic link"
    if os.path.isdir(path):
        return "a directory, not a file"
    if not os.path.isfile(path):
        return "not a regular file"
    if not os.access(path, os.X_OK):
        return "not executable (no x permission for this user)"
    return ""


def opensips_binaries(env: Optional[Dict[str, str]] = None) -> List[str]:
    """The executables of ``find_opensips`` only (a named path that is none is left out: see its problems)."""
    return find_opensips(env).found


def version_of(binary: str) -> str:
    out = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10).stdout
    first = out.splitlines()[0] if out else ""
    return first.split()[2] if first.startswith("version:") and len(first.split()) > 2 else "unknown"


def module_dir(binary: str) -> Path:
    """``<prefix>/lib64/opensips/modules`` (or lib/) beside ``<prefix>/sbin/opensips``."""
    prefix = Path(binary).resolve().parent.parent
    for lib in ("lib64", "lib"):
        candidate = prefix / lib / "opensips" / "modules"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no modules folder beside {binary}")


def make_certificate(
    folder: Path, names: Sequence[str] = ("localhost", "gateway.local"), addresses: Sequence[str] = ("127.0.0.1",)
) -> None:
    """A self-signed ECDSA certificate for the WSS/TLS listeners, made at test time."""
    san = ",".join([f"DNS:{n}" for n in names] + [f"IP:{a}" for a in dict.fromkeys(addresses)])
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(folder / "gateway.key"), "-out", str(folder / "gateway.crt"), "-days", "2",
            "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={san}",
        ],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


@dataclass
class Ports:
    sip: int  # udp and tcp
    tls: int
    ws: int
    wss: int
    mi: int
    ng: int
    media: tuple[int, int]


def _stop_pid(pid: int, grace: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def children_of(pid: int) -> List[int]:
    """Pids whose parent is ``pid`` (OpenSIPS's workers, timer, MI processes), in order."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields and int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


class StartError(RuntimeError):
    pass


@dataclass
class Engine:
    """One rtpengine and the recording relay OpenSIPS talks to instead of it."""

    process: subprocess.Popen[bytes]
    port: int
    relay: ng.Relay


class Gateway:
    """One running OpenSIPS + rtpengine pair; use ``with Gateway.start(binary) as gw:``."""

    def __init__(
        self, binary: str, folder: Path, ports: Ports, host: str = "127.0.0.1", address: str = "127.0.0.1",
        namespace: Optional[str] = None, advertised: Optional[str] = None, private: Optional[str] = None,
    ) -> None:  # fmt: skip
        self.binary = binary
        self.version = version_of(binary)
        self.folder = folder
        self.ports = ports
        self.host = host
        self.address = address
        """Where OpenSIPS's SIP sockets and rtpengine's media listen."""
        self.namespace = namespace
        self.advertised = advertised
        """The public address a 1:1 NAT maps to ``address`` (sockets ``as`` it, rtpengine's interface
        ``address!advertised``); None: ``address`` is the one clients reach."""
        self.private = private
        """A dual-homed gateway's address on its private network: SIP over UDP and TCP there too
        (mhomed: OpenSIPS sends from the address that reaches the destination), and rtpengine's
        interfaces named ``public`` (``address``) and ``private`` (this one)."""
        self.ipv6: Optional[str] = None
        """An IPv6 address (``::1``) the gateway also takes SIP over UDP and WSS on, and rtpengine media."""
        """The network namespace OpenSIPS and rtpengine run in (rig/netns.py); None: the machine's own."""
        self.opensips: Optional[subprocess.Popen[bytes]] = None
        self.engines: List[Engine] = []
        self.workers: List[int] = []
        self.rtpengine_options: Tuple[str, ...] = ()
        self.env: Dict[str, str] = {}
        """What OpenSIPS's environment had besides ours (start's ``env``), for a restart."""

    @property
    def rtpengine(self) -> Optional[subprocess.Popen[bytes]]:
        return self.engines[0].process if self.engines else None

    @property
    def relay(self) -> Optional[ng.Relay]:
        return self.engines[0].relay if self.engines else None

    # -- addresses ---------------------------------------------------------------------------

    def inside(self) -> Any:
        """A block whose sockets are made in the gateway's namespace (MI, ng, the relay)."""
        return netns.entered(self.namespace)

    @property
    def sip(self) -> Tuple[str, int]:
        """Where clients send SIP (over UDP or TCP)."""
        return (self.advertised or self.address, self.ports.sip)

    @property
    def mi_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.mi}/mi"

    @property
    def engine(self) -> ng.Address:
        return ("127.0.0.1", self.ports.ng)

    @property
    def wss_url(self) -> str:
        return f"wss://{self.host}:{self.ports.wss}"

    @property
    def wss6_url(self) -> str:
        """WSS on the gateway's IPv6 address (``ipv6``)."""
        return f"wss://[{self.ipv6}]:{self.ports.wss}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ports.ws}"

    @property
    def log_path(self) -> Path:
        return self.folder / "opensips.log"

    @property
    def rtpengine_log_path(self) -> Path:
        return self.folder / "rtpengine.log"

    def engine_log_path(self, index: int) -> Path:
        return self.rtpengine_log_path if index == 0 else self.folder / f"rtpengine-{index + 1}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        binary: str,
        folder: Optional[Path] = None,
        settings: str = DEFAULT_SETTINGS,
        entry: Path = ENTRY,
        env: Optional[Dict[str, str]] = None,
        host: str = "127.0.0.1",
        names: Sequence[str] = ("localhost", "gateway.local"),
        certificate: Optional[Tuple[Path, Path]] = None,
        engines: int = 1,
        extra_params: str = "",
        rtpengine_options: Sequence[str] = (),
        address: str = "127.0.0.1",
        namespace: Optional[str] = None,
        advertised: Optional[str] = None,
        private: Optional[str] = None,
        ipv6: Optional[str] = None,
    ) -> Gateway:
        """Start it all; ``engines`` rtpengines, each behind its own relay, all named in rtpengine_sock.

        ``rtpengine_options``: more rtpengine arguments (e.g. its timeouts), for every engine and restart;
        ``address``: where SIP and media listen; ``namespace``: the network namespace all of it runs in
        (MI, ng and the relay on that namespace's own 127.0.0.1); ``advertised``: the public address a
        1:1 NAT in front maps to ``address``; ``private``: a dual-homed gateway's other address."""
        folder = folder or Path(tempfile.mkdtemp(prefix="gw-e2e-"))
        sip = free_port()
        ports = Ports(
            sip=sip,
            tls=free_port(udp=False),
            ws=free_port(udp=False),
            wss=free_port(udp=False),
            mi=free_port(udp=False),
            ng=free_port(tcp=False),
            media=media_range(),
        )
        gateway = cls(binary, folder, ports, host, address, namespace, advertised, private)
        gateway.ipv6 = ipv6
        gateway.rtpengine_options = tuple(rtpengine_options)
        try:
            gateway._write(settings, entry, names, certificate, extra_params)
            for index in range(engines):
                gateway._start_rtpengine(index)
            gateway._name_engines()
            gateway._start_opensips(env or {})
        except BaseException:
            gateway.stop()
            raise
        return gateway

    def _write(
        self,
        settings: str,
        entry: Path,
        names: Sequence[str],
        certificate: Optional[Tuple[Path, Path]] = None,
        extra_params: str = "",
    ) -> None:
        """``extra_params``: more site-params.cfg lines; {folder} and {tls_port} are filled in."""
        folder = self.folder
        shutil.copy(CFG_DIR / "opensips.cfg", folder / "opensips.cfg")
        if certificate is not None:  # a site's own, e.g. issued for the host name browsers use
            shutil.copy(certificate[0], folder / "gateway.crt")
            shutil.copy(certificate[1], folder / "gateway.key")
        else:
            make_certificate(folder, names, ("127.0.0.1", self.address, self.advertised or self.address))
        assert not self.engines
        p = self.ports
        (folder / "site.cfg").write_text(
            "\n".join(
                [
                    "# Written by rig/gateway.py for one test run: loopback, or a test network's namespace.",
                    f'mpath = "{module_dir(self.binary)}/"',
                    *self._sockets(),
                    'alias = "gateway.local"',
                    "# No DNS server: nothing a test sends (RFC 4475 names example.com hosts) may make",
                    "# OpenSIPS ask one; every address it needs here is a loopback literal.",
                    "dns_servers_no = 0",
                    "",
                ]
            )
        )
        subscribers.connect(str(folder / "gateway.sqlite")).close()
        (folder / "site-params.cfg").write_text(
            "\n".join(
                [
                    "# Written by rig/gateway.py for one test run: loopback only.",
                    "# SIPp answers one scripted call per run: a keep-alive OPTIONS landing on a SIPp",
                    "# callee mid-test would abort it, so nathelper's pings are off on the rig.",
                    'modparam("nathelper", "natping_interval", 0)',
                    "# Unanswered calls time out in seconds, not the cfg's 30, so a no-answer test stays short.",
                    f'modparam("tm", "fr_inv_timeout", {FR_INV_TIMEOUT})',
                    f'modparam("tls_mgm", "certificate", "[webrtc]{folder}/gateway.crt")',
                    f'modparam("tls_mgm", "private_key", "[webrtc]{folder}/gateway.key")',
                    'modparam("rtpengine", "rtpengine_sock", "{ng}")',
                    'modparam("httpd", "ip", "127.0.0.1")',
                    f'modparam("httpd", "port", {p.mi})',
                    f'modparam("mi_fifo", "fifo_name", "{folder}/opensips_fifo")',
                    'modparam("nathelper", "sipping_from", "sip:keepalive@gateway.local")',
                    f'modparam("auth_db", "db_url", "sqlite://{folder}/gateway.sqlite")',
                    f'modparam("usrloc", "db_url", "sqlite://{folder}/gateway.sqlite")',
                    f'modparam("dialog", "db_url", "sqlite://{folder}/gateway.sqlite")',
                    f'modparam("python", "script_name", "{entry}")',
                    extra_params.replace("{folder}", str(folder)).replace("{tls_port}", str(p.tls)),
                    "",
                ]
            )
        )
        (folder / "gateway.ini").write_text(settings)

    def _sockets(self) -> List[str]:
        p = self.ports
        found = []
        for proto, port in (("udp", p.sip), ("tcp", p.sip), ("tls", p.tls), ("ws", p.ws), ("wss", p.wss)):
            public = f" as {self.advertised}:{port}" if self.advertised else ""
            found.append(f"socket = {proto}:{self.address}:{port}{public}")
        if self.private:
            found += [f"socket = udp:{self.private}:{p.sip}", f"socket = tcp:{self.private}:{p.sip}", "mhomed = 1"]
        if self.ipv6:
            found += [f"socket = {proto}:[{self.ipv6}]:{port}" for proto, port in (("udp", p.sip), ("wss", p.wss))]
        return found

    @property
    def media_interfaces(self) -> List[str]:
        """rtpengine's --interface arguments: its address, and the public one a 1:1 NAT maps to it
        (``local!public``); a dual-homed gateway's two, by name."""
        if self.private:
            return [f"--interface=public/{self.address}", f"--interface=private/{self.private}"]
        if self.ipv6:  # one interface of both families: rtpengine picks the family per leg
            return [f"--interface={self.address}", f"--interface={self.ipv6}"]
        return ["--interface=" + self.address + (f"!{self.advertised}" if self.advertised else "")]

    def _start_rtpengine(self, index: int) -> None:
        engine_port = free_port(tcp=False)
        process = self._run_rtpengine(index, engine_port)
        with self.inside():  # the relay's socket and thread in the gateway's namespace
            relay = ng.Relay(("127.0.0.1", engine_port))
        self.engines.append(Engine(process, engine_port, relay))
        self.ports.ng = self.engines[0].relay.address[1]

    def _run_rtpengine(self, index: int, engine_port: int) -> subprocess.Popen[bytes]:
        low, high = self.ports.media
        size = (high - low + 1) // 2  # room for a second engine's ports in the same block
        if index:
            low, high = low + size * (index % 2), low + size * (index % 2) + size - 1
        with open(self.engine_log_path(index), "ab") as log:
            process = subprocess.Popen(
                netns.command(self.namespace, [
                    "rtpengine", "--config-file=none", "--table=-1", *self.media_interfaces,
                    f"--listen-ng=127.0.0.1:{engine_port}", f"--port-min={low}", f"--port-max={high}",
                    "--delete-delay=0", "--foreground", "--log-stderr", "--log-level=6", *self.rtpengine_options,
                ]),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        engine = ("127.0.0.1", engine_port)
        try:
            with self.inside():
                _wait(lambda: ng.command(engine, {"command": "ping"}, timeout=0.5).get("result") == "pong", 10,
                      "rtpengine")  # fmt: skip
        except BaseException:
            _stop_pid(process.pid, 5)
            raise
        return process

    def _name_engines(self) -> None:
        sockets = " ".join(f"udp:127.0.0.1:{e.relay.address[1]}" for e in self.engines)
        site = self.folder / "site-params.cfg"
        site.write_text(site.read_text().replace("{ng}", sockets))

    def stop_engine(self, index: int = 0) -> None:
        """Stop rtpengine ``index`` by pid; its ng port (the relay's) is closed as a stopped one's is."""
        engine = self.engines[index]
        engine.relay.pause()
        if engine.process.poll() is None:
            _stop_pid(engine.process.pid, 5)
            engine.process.wait(timeout=5)

    def start_engine(self, index: int = 0) -> None:
        """Start rtpengine ``index`` again (it knows no call from before), behind the same relay port.

        The engine itself gets a new ng port, the relay's target: while it was stopped, its old port
        was free for any process on the machine to take (seen: "Address already in use")."""
        engine = self.engines[index]
        if engine.process.poll() is None:
            return
        engine.port = free_port(tcp=False)
        engine.process = self._run_rtpengine(index, engine.port)
        engine.relay.engine = ("127.0.0.1", engine.port)
        with self.inside():
            engine.relay.resume()

    def _start_opensips(self, env: Dict[str, str]) -> None:
        self.env = dict(env)
        environment = dict(os.environ)
        environment.update(env)
        # the rig's copy, unless the caller names the file OpenSIPS should watch (rig.up --settings: the operator's)
        environment["GATEWAY_SETTINGS"] = self.env.get("GATEWAY_SETTINGS", str(self.folder / "gateway.ini"))
        argv = netns.command(self.namespace, [self.binary, "-F", "-m", "256", "-f", str(self.folder / "opensips.cfg")])
        with open(self.log_path, "ab") as log:  # a restart's log follows the first run's
            self.opensips = subprocess.Popen(
                argv,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.folder, env=environment,
            )  # fmt: skip
        process = self.opensips

        def ready() -> bool:
            if process.poll() is not None:
                raise StartError(f"OpenSIPS {self.version} exited with {process.returncode}:\n{self.log()[-4000:]}")
            with self.inside():
                try:
                    if mi.call(self.mi_url, "version", timeout=1) is None:
                        return False
                except OSError:
                    return False
                # MI can answer before the TCP listeners accept (seen on 4.0.1): wait for them too
                for port in (self.ports.sip, self.ports.tls, self.ports.ws, self.ports.wss):
                    with socket.create_connection((self.address, port), timeout=1):
                        pass
            return True

        _wait(ready, 30, f"OpenSIPS {self.version} MI")
        self.workers = children_of(process.pid)

    def stop_opensips(self, kill: bool = False) -> None:
        """Stop OpenSIPS alone (rtpengine keeps running): SIGTERM, its graceful stop, or with ``kill``
        SIGKILL to the main process and every worker at once, as a crash or ``kill -9`` would."""
        if self.opensips is None:
            return
        pid = self.opensips.pid
        self.workers = sorted(set(self.workers) | set(children_of(pid)))
        if kill:
            for victim in (pid, *self.workers):
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        else:
            _stop_pid(pid, 10)
        self.opensips.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in self.workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        for worker in self.workers:
            if _alive(worker):
                _stop_pid(worker, 2)

    def restart_opensips(self, kill: bool = False, env: Optional[Dict[str, str]] = None) -> float:
        """Stop OpenSIPS (``stop_opensips``) and start it again on the same folder, ports and database;
        the seconds it was away (stopped to MI and listeners answering again)."""
        started = time.monotonic()
        self.stop_opensips(kill)
        self._start_opensips(env if env is not None else self.env)
        return time.monotonic() - started

    def alive(self) -> bool:
        return self.opensips is not None and self.opensips.poll() is None

    def stop(self) -> None:
        if self.opensips is not None:
            pid = self.opensips.pid
            self.workers = sorted(set(self.workers) | set(children_of(pid)))
            _stop_pid(pid, 10)
            self.opensips.wait(timeout=5)
            for worker in self.workers:
                if _alive(worker):
                    _stop_pid(worker, 2)
        for engine in self.engines:
            engine.relay.close()
            if engine.process.poll() is None:
                _stop_pid(engine.process.pid, 5)
            engine.process.wait(timeout=5)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    last: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except StartError:
            raise
        except (OSError, TimeoutError) as exc:
            last = exc
        time.sleep(0.1)
    raise StartError(f"{what} not ready within {seconds}s ({last})")
