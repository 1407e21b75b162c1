"""A small OpenSIPS that runs our opensips.cfg around the real ``pyscripts`` code.

``Gateway`` loads ``pyscripts/opensips_entry.py`` the way the python module
does (its folder first on ``sys.path``, ``mod_init()`` once, ``child_init``),
and keeps the state OpenSIPS would: message, branch and dialog flags, AVPs,
``$var`` values per process, dialog values, the location table, transactions with
branches, and an rtpengine backend.  ``receive()`` takes one SIP message from the
network and returns what OpenSIPS would send.  The routes are not written here:
the cfg (``opensips/opensips.cfg``, or the file ``GATEWAY_CFG`` names) is parsed
and run statement by statement by ``cfgscript``; this module is the host under it,
its core and the module functions the cfg calls (``fn_<name>``), with their
quirks as OpenSIPS 3.6.8 and 4.0.1 show them (tests/e2e holds the fake to them).
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import importlib
import itertools
import locale
import os
import re
import sys
import time
import traceback
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

from . import cfgscript, opensips_module
from .cfgscript import Value
from .msgobj import FakeMsg, HostCrash
from .rtpengine import Backend, FlagError, MemoryEngine, ng_command
from .signatures import SIGNATURES, STATEMENTS, Kind
from .sipmsg import SipMessage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYSCRIPTS = os.path.join(REPO, "pyscripts")
#: The gateway as shipped (gateway.ini, policy.py), whatever the operator changed in opensips/ and pyscripts/:
#: the tracer's scenarios run it, and the project's tests (tests/conftest.py).
SHIPPED = (os.path.join(REPO, "fakes", "shipped", "gateway.ini"), os.path.join(REPO, "fakes", "shipped", "policy.py"))
#: The cfg the fake runs: the repository's, or another one (the mutation check's) named by GATEWAY_CFG.
CFG = os.environ.get("GATEWAY_CFG") or os.path.join(REPO, "opensips", "opensips.cfg")

# nathelper's "private" networks (ip_addr_is_1918 in OpenSIPS 3.6/4.0): RFC 1918,
# RFC 6598 and loopback 127.0.0.0/8 too, so a 127.x Contact is "behind NAT".
_PRIVATE = re.compile(r"^(10\.|127\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.)")


#: lib/reg's USERNAME_MAX_SIZE: the longest user part (as written) registrar's save() and lookup() take.
MAX_AOR_USER = 64


def aor_user(written: str) -> Optional[str]:
    """The user part of an address of record as the registrar keeps it (lib/reg extract_aor()): %-escapes undone
    (RFC 3261 10.3.5), None when it is longer than MAX_AOR_USER as written (save() and lookup() fail)."""
    if len(written.encode("utf-8", "surrogateescape")) > MAX_AOR_USER:
        return None
    return urllib.parse.unquote(written, errors="surrogateescape") if "%" in written else written


class HostFault(AssertionError):
    """The Python side left OpenSIPS in a bad state (pending exception, non-int or 0 return, escaped exception)."""


@dataclass(frozen=True)
class Endpoint:
    proto: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.proto}:{self.host}:{self.port}"


def uri_endpoint(uri: str) -> Endpoint:
    """Where a SIP URI leads: transport parameter (TLS for sips:), host and port; without a port, 5061 over TLS
    and 5060 else, as sip_resolvehost gives an address (resolve.c: the protocol's default port)."""
    scheme, _, body = uri.partition(":") if ":" in uri else ("sip", "", uri)
    params = body.split(";")[1:]
    hostport = body.split(";", 1)[0].split("?", 1)[0].rpartition("@")[2]
    proto = "tls" if scheme.lower() == "sips" else "udp"
    for param in params:
        key, _, value = param.partition("=")
        if key.lower() == "transport":
            proto = value.lower()
    host, port = split_hostport(hostport)
    if proto == "tls" and not re.search(r"(^|[^:]|\]):\d+$", hostport):
        port = 5061
    return Endpoint(proto, host, port)


def split_hostport(hostport: str) -> Tuple[str, int]:
    """``host[:port]`` -> (host, port, 5060 without one); an IPv6 reference ``[::1]:5060`` without its brackets
    (nathelper compares addresses, not their spelling)."""
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    return host, int(port) if port.isdigit() else 5060


TCP_DISCONNECT = "E_CORE_TCP_DISCONNECT"
#: An event route runs with a dummy message (OpenSIPS's is empty; nothing of it is read there).
_EVENT_MESSAGE = (
    b"OPTIONS sip:event@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKevent\r\n"
    b"From: <sip:event@127.0.0.1>;tag=e\r\nTo: <sip:event@127.0.0.1>\r\nCall-ID: event\r\nCSeq: 1 OPTIONS\r\n\r\n"
)

#: Transports over a connection: OpenSIPS reuses the peer's, or opens one (tcp_no_new_conn_bflag forbids that).
STREAM_PROTOS = frozenset({"tcp", "tls", "ws", "wss"})


def is_private(host: str) -> bool:
    return bool(_PRIVATE.match(host))


#: The digest algorithms OpenSIPS's digest_auth library computes (lib/digest_auth), each also as "-sess".
DIGEST_HASHES: Dict[str, Callable[[bytes], Any]] = {
    "MD5": hashlib.md5,  # SIP digest's own (RFC 2617)
    "SHA-256": hashlib.sha256,
    "SHA-512-256": lambda data: hashlib.new("sha512_256", data),
}


def digest_fields(value: str) -> Dict[str, str]:
    """The parameters of a digest challenge or answer (``Digest realm="x", nonce="y", qop=auth``), names in lower
    case; what follows the scheme only."""
    return {k.lower(): a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value[7:])}


def digest_response(creds: Dict[str, str], password: str, method: str, body: bytes = b"") -> str:
    """RFC 7616's response (RFC 2617's for MD5): ``creds``' algorithm (MD5 without one, "-sess" too), with qop
    auth, auth-int (of ``body``) or none."""
    algorithm = creds.get("algorithm", "MD5").upper()
    base = algorithm[: -len("-SESS")] if algorithm.endswith("-SESS") else algorithm

    def digest(data: bytes) -> str:
        return str(DIGEST_HASHES[base](data).hexdigest())

    def h(text: str) -> str:
        return digest(text.encode())

    nonce, cnonce, qop = creds.get("nonce"), creds.get("cnonce"), creds.get("qop")
    ha1 = h(f"{creds.get('username')}:{creds.get('realm')}:{password}")
    if algorithm != base:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{creds.get('uri')}" + (f":{digest(body)}" if qop == "auth-int" else ""))
    if qop in ("auth", "auth-int"):
        return h(f"{ha1}:{nonce}:{creds.get('nc')}:{cnonce}:{qop}:{ha2}")
    return h(f"{ha1}:{nonce}:{ha2}")


def load_script(cfg_path: str = CFG) -> cfgscript.Script:
    with open(cfg_path, encoding="utf-8") as handle:
        return cfgscript.parse(handle.read())


def exec_arguments(cfg_path: str = CFG) -> Dict[str, str]:
    """The argument each python_exec of the cfg passes, by method, its escapes read as OpenSIPS reads them."""
    found: Dict[str, str] = {}
    for route in load_script(cfg_path).routes.values():
        for action in route.actions:
            for name, fmt in re.findall(r'python_exec\("(\w+)", "((?:[^"\\]|\\.)*)"\)', action.text):
                found[name] = cfgscript.unescape(fmt)
    return found


def private_sdp_test(cfg_path: str = CFG) -> Optional[re.Pattern[str]]:
    """The cfg's ``$rb =~ "..."`` test of the SDP, compiled as OpenSIPS compiles it; None without one."""
    with open(cfg_path, encoding="utf-8") as handle:
        found = re.search(r'\$rb =~ "((?:[^"\\]|\\.)*)"', handle.read())
    if found is None:
        return None
    return re.compile(cfgscript.unescape(found.group(1)), re.IGNORECASE | re.ASCII)


def declared_flags(script: cfgscript.Script) -> Set[str]:
    """Flag names the cfg mentions, so OpenSIPS allocates them at startup in every process."""
    names = set(re.findall(r'\b(?:set|reset|is)b?flag\(\s*"(\w+)"', script.text))
    names |= {str(v) for m, p, v in script.modparams if "flag" in p}
    return names


def declared_tables(script: cfgscript.Script) -> Set[str]:
    """usrloc tables the cfg names in save()/lookup(): only those exist at run time.

    usrloc creates a table while the script is fixed up at start-up; one first named
    from Python's call_function fails ("cannot register new domain during runtime").
    """
    return set(re.findall(r'\b(?:save|lookup)\(\s*"(\w+)"', script.text))


@dataclass
class Contact:
    uri: str
    received: Optional[str]
    bflags: Set[str]
    expires: int


@dataclass
class Dialog:
    did: str
    call_id: str
    caller_tag: str
    callee_tag: Optional[str] = None
    caller_contact: Optional[str] = None
    callee_contact: Optional[str] = None
    vals: Dict[str, str] = field(default_factory=dict)
    hidden: bool = False
    state: str = "unconfirmed"
    callee_cseq: int = 0
    """uac_auth() raised the CSeq of the callee's leg (dialog's DLG_FLAG_CSEQ_ENFORCE): the CSeq of the callee's
    2xx, and of each request since sent it (its last_gen_cseq); the caller's requests get it, their replies
    their own back.  0: the caller's CSeqs go as they are."""
    cseq_enforced: bool = False


@dataclass
class Branch:
    index: int
    endpoint: Endpoint
    via_branch: str
    message: SipMessage
    bflags: Set[str]
    status: Optional[int] = None
    reply_route: Optional[str] = None
    """The onreply route armed for this branch (t_on_reply in its branch route, else the transaction's)."""
    heard: bool = False
    """A reply came for it from the network, a 100 included (tm's T_UAC_HAS_RECV_REPLY)."""
    faked: bool = False
    """Its final reply is tm's own (a timeout's 408: FAKED_REPLY)."""
    reply: Optional[SipMessage] = None
    """Its final reply from the network (what uac_auth() reads the challenge of)."""


@dataclass
class Transaction:
    key: str
    request: SipMessage
    source: Endpoint
    flags: Set[str]
    avps: Dict[str, Value]
    routes: Dict[str, str]
    """The routes armed in the request route: "branch", "reply", "failure" -> route name."""
    dialog: Optional[Dialog]
    branches: List[Branch] = field(default_factory=list)
    final: Optional[int] = None
    replies: List[SipMessage] = field(default_factory=list)
    serial: str = ""
    reply_to: Optional[Endpoint] = None
    """Where tm sends this transaction's replies upstream (reply_address when it was made)."""
    sent_final: Optional[SipMessage] = None
    """The negative final reply tm sent upstream for an INVITE: sent again until its ACK comes (retransmit)."""
    acked: bool = False
    cancelled: bool = False
    """A CANCEL of it came (t_was_cancelled)."""
    record_route: bool = False
    """record_route() ran before t_relay: the request tm keeps carries it to every branch, later ones too."""
    local_replies: List[SipMessage] = field(default_factory=list)
    """The final replies tm made itself (a timeout's 408): sent upstream as they are."""
    first_branch: int = 0
    """The first branch of the set tm picks the final reply from: a failure route's new ones start a set."""
    picked: Optional[Branch] = None
    """The branch whose reply tm picked, while the failure route runs."""
    upstream_cseq: Optional[str] = None
    """The CSeq the sender wrote, when its request went on with another (uac_auth, dialog's CSeq of a leg): every
    reply tm sends it has its own back (uac's apply_cseq_decrement, dialog's fix_final_cseq)."""
    failure_reply: Optional[SipMessage] = None
    """The reply the failure route sent (t_reply): tm sends it instead of the one it picked."""

    @property
    def method(self) -> str:
        return self.request.method


@dataclass
class Event:
    """One line of what OpenSIPS did, for the tracer and for tests."""

    kind: str  # route, call, exec, send, rtpengine, log
    text: str
    data: Any = None


#: Pseudo-variables without an argument, each read only when asked for.
_SIMPLE_PVS: Dict[str, Any] = {
    "si": lambda c: c.source.host,
    "sp": lambda c: c.source.port,
    "ci": lambda c: c.msg.call_id,
    "tt": lambda c: c.msg.to_tag,
    "ft": lambda c: c.msg.from_tag,
    "au": lambda c: c.vars.get("auth_user"),
    "tU": lambda c: _uri_user(_raw_address(c.msg, "to")),
    "fU": lambda c: _uri_user(_raw_address(c.msg, "from")),
    "rm": lambda c: c.msg.method,
    "rb": lambda c: c.msg.body.decode("utf-8", errors="surrogateescape") if c.msg.body else None,
    "T_branch_idx": lambda c: c.branch_index,
    "bf": lambda c: " ".join(sorted(c.bflags)) or None,
    "mf": lambda c: " ".join(sorted(c.flags)) or None,
    "rc": lambda c: c.rc,
    "retcode": lambda c: c.rc,
    "ua": lambda c: c.msg.header("user-agent"),
    "Ts": lambda c: int(c.runtime.clock()),
}

#: $DLG_status by the fake's dialog state (dialog module: 1 unconfirmed ... 5 deleted).
DIALOG_STATES = {"unconfirmed": 1, "early": 2, "confirmed": 4, "deleted": 5}


@dataclass
class Context:
    """One message through the script: its flags, AVPs, destination, the routes it armed."""

    runtime: Gateway
    route: str
    msg: SipMessage
    source: Endpoint
    flags: Set[str] = field(default_factory=set)
    bflags: Set[str] = field(default_factory=set)
    avps: Dict[str, Value] = field(default_factory=dict)
    vars: Dict[str, str] = field(default_factory=dict)
    dst_uri: Optional[str] = None
    extra_branches: List[Contact] = field(default_factory=list)
    tx: Optional[Transaction] = None
    dialog: Optional[Dialog] = None
    branch_index: int = 0
    record_route: bool = False
    received: Optional[str] = None
    direction: Optional[str] = None
    rc: int = 1
    """$rc: the return code of the last function or route."""
    armed: Dict[str, str] = field(default_factory=dict)
    """t_on_branch/t_on_reply/t_on_failure: kind -> route name."""
    rport: bool = False
    """force_rport() ran: replies go to the source port, as if the Via had rport (msg_translator.c)."""
    params: Dict[str, Value] = field(default_factory=dict)
    """$param(name) in an event route: the event's parameters."""

    def set_ruri(self, uri: str) -> None:
        self.msg.ruri = uri

    # -- pseudo-variables ------------------------------------------------------------

    def pv_get(self, name: str, arg: Optional[str]) -> Any:
        """Value of $name(arg): None for NULL, an int (which has its string form too) or a str;
        ``...`` for a variable the fake does not know."""
        m = self.msg
        simple = _SIMPLE_PVS.get(name)
        if simple is not None:
            return simple(self)
        if name == "cl":
            value = m.header("content-length")
            return int(value) if value is not None and value.strip().isdigit() else None
        if name == "rs":
            return None if m.is_request else m.status
        if name == "T_reply_code":  # the reply tm picked (failure route), the one being handled (reply route)
            if self.route == "failure" and self.tx is not None:
                return self.tx.final
            return None if m.is_request else m.status
        if name in ("ru", "rU", "rd", "ou"):
            if not m.is_request:
                return None
            if name in ("ru", "ou"):
                return m.original_ruri or m.ruri if name == "ou" else m.ruri
            uri = m.ruri.split(":", 1)[-1].split(";")[0]
            user, _, host = uri.rpartition("@")
            return (user or None) if name == "rU" else host.split(":")[0]
        if name in ("td", "fd"):
            address = _raw_address(m, "to" if name == "td" else "from")
            if address is None:
                return None
            return address.split(":", 1)[-1].split(";", 1)[0].split("?", 1)[0].rpartition("@")[2].split(":", 1)[0]
        if name == "hdrcnt" and arg:
            return len(m.header_values(arg))
        if name == "du":
            return self.dst_uri
        if name == "socket_in" and arg == "proto":
            return self.source.proto
        if name == "socket_in" and arg == "af":
            return "INET6" if ":" in self.source.host else "INET"
        if name == "hdr" and arg:
            return m.header(arg)
        if name == "avp" and arg:
            return self.avps.get(arg)
        if name == "var" and arg:
            return self.runtime.script_vars.get(arg)
        if name == "dlg_val" and arg:
            return None if self.dialog is None else self.dialog.vals.get(arg)
        if name == "DLG_dir":
            return self.direction if self.dialog is not None else None
        if name == "DLG_status":
            return None if self.dialog is None else DIALOG_STATES[self.dialog.state]
        if name == "param" and arg:
            return self.params.get(arg)
        return ...

    def pv_set(self, name: str, arg: Optional[str], value: Value) -> None:
        if name == "avp" and arg:
            if value is None:
                self.avps.pop(arg, None)
            else:
                self.avps[arg] = value
        elif name == "var" and arg:
            if value is None:
                self.runtime.script_vars.pop(arg, None)
            else:
                self.runtime.script_vars[arg] = value
        elif name == "dlg_val" and arg:
            if self.dialog is None:
                self.runtime.log_error("ERROR:dialog: no dialog to store a value in")
            elif value is None:
                self.dialog.vals.pop(arg, None)
            else:
                self.dialog.vals[arg] = str(value)  # dialog values are strings
        elif name == "ru" and self.msg.is_request and value is not None:
            self.set_ruri(str(value))
        elif name == "rU" and self.msg.is_request and value is not None:
            scheme, _, rest = self.msg.ruri.partition(":")
            host = rest.rpartition("@")[2]
            self.set_ruri(f"{scheme}:{value}@{host}" if value else f"{scheme}:{host}")
        elif name in ("rd", "rp") and self.msg.is_request and value is not None:
            # rewrite_ruri (parser/msg_parser.c) RW_RURI_HOST / RW_RURI_PORT: the other parts stay; an empty
            # port leaves none
            head, host, port, tail = ruri_parts(self.msg.ruri)
            host, port = (str(value), port) if name == "rd" else (host, str(value))
            self.set_ruri(f"{head}{host}{':' + port if port else ''}{tail}")
        elif name == "du" and self.msg.is_request:
            self.dst_uri = None if value is None else str(value)
        # anything else is read-only or unknown: ignored silently, as OpenSIPS does


def ruri_parts(uri: str) -> Tuple[str, str, str, str]:
    """A SIP URI as (``scheme:user@``, host (IPv6 bracketed), port ("" for none), ``;params?headers``)."""
    scheme, _, rest = uri.partition(":")
    userinfo, at, hostpart = rest.rpartition("@")
    cut = min((i for i in (hostpart.find(";"), hostpart.find("?")) if i >= 0), default=len(hostpart))
    hostport, tail = hostpart[:cut], hostpart[cut:]
    if hostport.startswith("["):
        host, _, port = hostport.partition("]")
        host, port = host + "]", port[1:]
    else:
        host, _, port = hostport.partition(":")
    return f"{scheme}:{userinfo}{at}", host, port, tail


class Gateway:
    """The fake OpenSIPS host with our cfg's routes."""

    def __init__(
        self,
        settings: Any = None,
        rtpengine: Optional[Backend] = None,
        address: Endpoint = Endpoint("udp", "127.0.0.1", 5060),
        strict: bool = True,
        cfg_path: str = CFG,
        rules: Optional[Tuple[Any, Any]] = None,
        files: Optional[Tuple[Optional[str], Optional[str]]] = None,
    ) -> None:
        """``settings`` (gateway.settings.Settings) with ``rules``, the operator's (route, callee) functions,
        or ``files``, the (gateway.ini, policy.py) paths to load and watch; neither: what mod_init loads."""
        self.rule_functions: Tuple[Any, Any] = rules or (None, None)
        self.rule_files = files
        self.address = address
        self.strict = strict
        self.rtpengine: Backend = rtpengine if rtpengine is not None else MemoryEngine()
        self.script = load_script(cfg_path)
        self.runner = cfgscript.Runner(self.script, self)
        self.flags_declared = declared_flags(self.script)
        self.tables_declared = declared_tables(self.script)
        # tm shows a transaction's AVPs to onreply routes only with onreply_avp_mode 1 (default 0)
        self.reply_sees_avps = 1 in self.script.modparam("tm", "onreply_avp_mode")
        # auth_db's default load_credentials ("rpid") reads a column our subscriber table lacks
        self.loads_rpid = "" not in self.script.modparam("auth_db", "load_credentials")
        self.pike_route = next(iter(self.script.modparam("pike", "check_route")), None)
        #: $var(...): one process's, kept from one message to the next (as OpenSIPS keeps them).
        self.script_vars: Dict[str, Value] = {}
        #: The wall clock $Ts reads (tests move it).
        self.clock = time.time
        self.location: Dict[str, List[Contact]] = {}
        self.dialogs: Dict[str, Dialog] = {}
        self.transactions: Dict[str, Transaction] = {}
        self.completed: Dict[str, Transaction] = {}
        self.events: List[Event] = []
        self.errors: List[str] = []
        self.warnings: List[str] = []
        self.counts: Counter[str] = Counter()
        self.omitted: List[Tuple[str, int, str]] = []
        self.copies = 0
        self.pending_error: Optional[str] = None
        self.poisoned: Optional[str] = None
        self.current: Optional[Context] = None
        self._ids = itertools.count(1)
        self.subscribers: Dict[Tuple[str, str], str] = {}
        self.nonces: Set[str] = set()
        self.statistics: Counter[str] = Counter()
        self.statistics_declared = {str(v) for v in self.script.modparam("statistics", "variable")}
        self._pending_out: List[Tuple[Endpoint, SipMessage]] = []
        #: TCP/TLS/WebSocket connections open now: one per peer that sent us something, or that we dialled.
        self.connections: Set[Endpoint] = set()
        #: Every connection OpenSIPS opened itself, toward a peer that had none (a browser accepts none).
        self.dialled: List[Endpoint] = []
        #: tcp_no_new_conn_bflag: a branch with this flag goes over an open connection or not at all.
        flag = self.script.globals.get("tcp_no_new_conn_bflag")
        self.no_new_conn_bflag = None if flag is None else str(flag)
        #: A relayed 503 goes upstream as 500 (RFC 3261 16.7 item 6; msg_translator.c build_res_buf_from_sip_res)
        #: unless the cfg sets disable_503_translation.
        self.translates_503 = str(self.script.globals.get("disable_503_translation", "0")).lower() in ("0", "no", "off")
        # What usrloc and dialog keep in the database (restart): which, from the cfg's modparams.
        preset = self.script.modparam("usrloc", "working_mode_preset")
        self.keeps_location = any("sql" in str(v) for v in preset)
        self.keeps_dialogs = any(v != 0 for v in self.script.modparam("dialog", "db_mode"))
        self.flushes_dialog_values = 1 in self.script.modparam("dialog", "db_flush_vals_profiles")
        self.stored_location: Dict[str, List[Contact]] = {}
        self.max_expires = next((int(str(v)) for v in self.script.modparam("registrar", "max_expires")), 0)
        self.expires_deviation = next(
            (int(str(v)) for v in self.script.modparam("registrar", "expires_max_deviation")), 0
        )
        self.stored_dialogs: Dict[str, Dialog] = {}
        self.restarts = 0
        self._settings = settings
        self.router = self._load(settings)
        self._workers: Dict[int, Tuple[Dict[str, Value], Any]] = {}
        self.worker = 0

    def use_worker(self, worker: int) -> None:
        """The messages from now on go to another worker (a process of its own), with its own $vars and its
        own router's memory, as OpenSIPS hands each packet to whichever worker is free: a call's replies and
        its failure route may run in a worker that never saw its INVITE.  The first use of a worker starts
        it (child_init); worker 0 is the one every test starts with."""
        if worker == self.worker:
            return
        self._workers[self.worker] = (self.script_vars, self.router)
        kept = self._workers.pop(worker, None)
        self.script_vars, self.router = kept if kept is not None else ({}, self._load(self._settings))
        self.worker = worker

    # -- loading, as modules/python does ---------------------------------------------

    def _load(self, settings: Any) -> Any:
        """mod_init with the files (``settings`` None), else a router with ``settings`` and the default
        policy (or the ``route``/``callee`` rules the Gateway was given); then child_init, as modules/python."""
        opensips_module.install(self.log_error)
        if PYSCRIPTS not in sys.path:
            sys.path.insert(0, PYSCRIPTS)
        entry = importlib.import_module("opensips_entry")
        if settings is None and self.rule_files is None:
            # mod_init gives the C library the "C" LC_CTYPE OpenSIPS runs in (Py_Initialize set the
            # environment's); this test process keeps its own.
            kept = locale.setlocale(locale.LC_CTYPE)
            try:
                router = entry.mod_init()
            finally:
                locale.setlocale(locale.LC_CTYPE, kept)
        else:
            from gateway.host import Router
            from gateway.settings import Settings

            if self.rule_files is not None:
                router = Router.from_files(opensips_module.LM_ERR, *self.rule_files)
            else:
                router = Router.fixed(settings or Settings(), opensips_module.LM_ERR, *self.rule_functions)
        if router.child_init(1) != 0:
            raise HostFault("child_init did not return 0")
        router.explain_refusals = True  # offline, a refused answer's line names the rule's line (Router's doc)
        return router

    # -- restarts --------------------------------------------------------------------

    def flush(self, on_shutdown: bool = False) -> None:
        """usrloc's and dialog's timer (and a graceful stop): what is in memory is written to the database,
        as far as the cfg keeps it there.  A dialog's values go with it only at a stop, or on every write
        with db_flush_vals_profiles (dlg_db_handler.c: else the timer writes the dialog without them)."""
        if self.keeps_location:
            self.stored_location = {
                user: [replace(c, bflags=set(c.bflags)) for c in contacts]
                for user, contacts in self.location.items()
                if contacts
            }
        if self.keeps_dialogs:
            stored = {}
            for did, dialog in self.dialogs.items():
                if dialog.state == "deleted":
                    continue
                before = self.stored_dialogs.get(did)
                values = dialog.vals if on_shutdown or self.flushes_dialog_values else before.vals if before else {}
                stored[did] = replace(dialog, vals=dict(values))
            self.stored_dialogs = stored

    def restart(self, kill: bool = False) -> None:
        """OpenSIPS stops and starts again: gracefully (the database written first) or killed (the database
        as the last ``flush`` left it).  Its memory is new: transactions, $var, connections (every browser's
        WebSocket is gone), nonces, a fresh router; registrations and dialogs come back from the database.
        rtpengine, not restarted, keeps its sessions; the statistics are kept for the tests' checks."""
        if not kill:
            self.flush(on_shutdown=True)
        self.location = {u: [replace(c, bflags=set(c.bflags)) for c in cs] for u, cs in self.stored_location.items()}
        self.dialogs = {did: replace(d, vals=dict(d.vals)) for did, d in self.stored_dialogs.items()}
        self.transactions.clear()
        self.completed.clear()
        self.connections.clear()
        self.script_vars.clear()
        self._workers.clear()
        self.worker = 0
        self.nonces.clear()
        self.restarts += 1
        self.events.append(Event("log", f"OpenSIPS {'killed' if kill else 'stopped'} and started again"))
        self.router = self._load(self._settings)

    def close_connection(self, endpoint: Endpoint) -> None:
        """The peer closed its connection (a browser's page went away): the core raises E_CORE_TCP_DISCONNECT,
        which the cfg's event route gets (event_routing) with the peer's address and the protocol."""
        if endpoint not in self.connections:
            return
        self.connections.discard(endpoint)
        if ("event_route", TCP_DISCONNECT) not in self.script.routes:
            return
        dummy = SipMessage.parse(_EVENT_MESSAGE)
        ctx = Context(self, "event", dummy, endpoint)
        ctx.params = {"src_ip": endpoint.host, "src_port": endpoint.port, "proto": endpoint.proto,
                      "dst_ip": self.address.host, "dst_port": self.address.port}  # fmt: skip
        self.run_route("event_route", TCP_DISCONNECT, ctx)

    # -- bookkeeping -----------------------------------------------------------------

    @property
    def python_failures(self) -> int:
        """The cfg's fail-safe counts each failure in this statistic."""
        return self.statistics["python_failures"]

    def log_error(self, text: str) -> None:
        """What the python module logs (LM_ERR); the router's warnings (gateway.loader.WARNING: a load's rules fail
        on sample calls) go to ``warnings``, not ``errors``: they say what may come, not what went wrong."""
        from gateway.loader import WARNING  # the module's first call comes after _load put pyscripts/ on the path

        if text.startswith(WARNING):
            self.warnings.append(text.rstrip("\n"))
            self.events.append(Event("note", text.rstrip("\n")))
            return
        self.errors.append(text.rstrip("\n"))
        self.events.append(Event("log", text.rstrip("\n")))

    def count(self, what: str) -> None:
        self.counts[what] += 1

    def record_call(self, name: str, args: Tuple[Optional[str], ...]) -> Event:
        """The call's event, logged before the function runs (what it sends follows it); finish() adds the result."""
        shown = ", ".join("None" if a is None else repr(a) for a in args)
        event = Event("call", f"{name}({shown})", (name, args, None))
        self.events.append(event)
        return event

    @staticmethod
    def finish(event: Event, result: int) -> None:
        name, args, _ = event.data
        event.text += f" -> {result}"
        event.data = (name, args, result)

    def _send(self, endpoint: Endpoint, message: SipMessage, out: List[Tuple[Endpoint, SipMessage]]) -> None:
        self.events.append(Event("send", f"-> {endpoint}  {message.first_line}", (endpoint, message.copy())))
        out.append((endpoint, message))

    def _new_id(self) -> str:
        return str(next(self._ids))

    # -- python_exec ------------------------------------------------------------------

    def python_exec(self, method: str, ctx: Context, arg: Optional[str] = None) -> int:
        """modules/python's python_exec(method [, arg]): ``arg`` is the cfg's format string, already printed."""
        self.events.append(Event("exec", f'[{ctx.route}] python_exec("{method}"{"" if arg is None else ", facts"})'))
        if self.poisoned is not None:
            failure = f"an earlier call left an exception pending ({self.poisoned})"
            self.poisoned = None
            if self.strict:
                raise HostFault(failure)
            self.log_error(f"ERROR:python:python_exec: SystemError: {failure}")
            return -1
        handler = getattr(self.router, method, None)
        if handler is None:
            self.poisoned = f"AttributeError: no method {method}"
            self.log_error(f"ERROR:python:python_exec: {method} not found or is not callable")
            return -1
        text = arg
        if arg is not None:
            try:
                (text or "").encode("utf-8")
            except UnicodeEncodeError:
                # PyUnicode_FromString fails: python_exec logs, returns -1 and leaves the
                # UnicodeDecodeError pending in the worker (python_exec.c never clears it).
                self.log_error(f"ERROR:python:python_exec: PyUnicode_FromString({text!r}) has failed")
                self.poisoned = "UnicodeDecodeError in python_exec's argument"
                if self.strict:
                    raise HostFault(f"{method}'s argument is not UTF-8: {text!r}") from None
                return -1
        msg = FakeMsg(ctx)
        self.current = ctx
        try:
            result = handler(msg) if text is None else handler(msg, text)
        except HostCrash:
            raise
        except Exception as exc:
            self.log_error(
                "ERROR:python:python_handle_exception: " + "".join(traceback.format_exception_only(type(exc), exc))
            )
            if self.strict:
                raise HostFault(f"{method} let {type(exc).__name__} escape: {exc}") from exc
            return -1
        finally:
            msg.invalidate()
            self.current = None
        if self.pending_error is not None:
            pending, self.pending_error = self.pending_error, None
            if self.strict:
                raise HostFault(f"{method} returned with an exception pending: {pending}")
            self.poisoned = pending
        if not isinstance(result, int):
            self.poisoned = f"TypeError: {method} returned {type(result).__name__}"
            if self.strict:
                raise HostFault(f"{method} returned {result!r}, not an int")
            return -1
        rc = ctypes.c_int(result).value if -(2**63) <= result < 2**63 else -1
        self.events.append(Event("exec", f"[{ctx.route}] {method} -> {rc}", rc))
        if rc == 0 and self.strict:
            raise HostFault(f"{method} returned 0, which ends the whole script like exit")
        return rc

    # -- the network side -----------------------------------------------------------

    def receive(self, data: Union[bytes, SipMessage], source: Endpoint) -> List[Tuple[Endpoint, SipMessage]]:
        """Process one incoming message; what OpenSIPS sends in answer."""
        out: List[Tuple[Endpoint, SipMessage]] = []
        self._pending_out = out  # where replies sent from script functions go
        try:
            msg = data if isinstance(data, SipMessage) else SipMessage.parse(data)
        except ValueError as exc:
            self.events.append(Event("log", f"dropped unparsable message from {source}: {exc}"))
            return out
        self.events.append(Event("recv", f"<- {source}  {msg.first_line}", (source, msg.copy())))
        if source.proto in STREAM_PROTOS:
            self.connections.add(source)  # the peer's connection, which replies and requests to it reuse
        if msg.is_request:
            ctx = Context(self, "request", msg, source)
            self.pike_exempt(ctx)
            self.run_route("route", "", ctx)
            self._drop_unattached_dialog(ctx)
        else:
            self._reply(msg, source, out)
        return out

    def run_route(self, kind: str, name: str, ctx: Context) -> str:
        """One of the cfg's routes, run by cfgscript: "end", "exit" or "drop"."""
        self.events.append(Event("route", f"{kind}[{name}]" if name else kind))
        return self.runner.run(kind, name, ctx)

    def pike_exempt(self, ctx: Context) -> bool:
        """pike's check route (modparam check_route), which pike runs for each request it would count:
        True when it drops the message, i.e. leaves the source uncounted.  The fake counts nothing."""
        if self.pike_route is None:
            return False
        check = Context(self, "pike", ctx.msg, ctx.source)
        return self.runner.run("route", str(self.pike_route), check) == "drop"

    # -- cfgscript's host: pseudo-variables and script functions --------------------------

    def pv_get(self, ctx: Context, name: str, arg: Optional[str]) -> Any:
        return ctx.pv_get(name, arg)

    def in_context(self, ctx: Context, context: str) -> Context:
        """tm's pseudo-variable context ``<reply>`` (tm.c tm_pv_context_reply): in a failure route the reply tm
        picked (a message of NULL fields for tm's own 408), in a reply route the reply itself."""
        if context != "reply" or ctx.route not in ("failure", "reply"):
            raise cfgscript.CfgError(f"the fake knows the <reply> context of a failure or reply route only, not "
                                     f"<{context}> in a {ctx.route} route")  # fmt: skip
        if ctx.route == "reply":
            return ctx
        picked = ctx.tx.picked if ctx.tx is not None else None
        reply = picked.reply if picked is not None and picked.reply is not None else SipMessage("SIP/2.0 408 -", [])
        return dataclasses.replace(ctx, msg=reply)

    def pv_set(self, ctx: Context, name: str, arg: Optional[str], value: Value) -> None:
        if name == "var" and arg == "gw_actions":  # what the router answered, about to be done: for traces
            self.events.append(Event("actions", str(value)))
        ctx.pv_set(name, arg, value)

    def entered(self, route: str) -> None:
        self.events.append(Event("route", f"route[{route}]"))

    def warn(self, text: str) -> None:
        """What OpenSIPS logs for a script error (an invalid comparison, an unknown route): a cfg bug."""
        self.log_error(text)
        if self.strict:
            raise HostFault(f"the cfg did what OpenSIPS refuses: {text}")

    def script_call(self, ctx: Context, name: str, args: List[Value], line: int) -> int:
        """A function the cfg calls (fixed up at start-up, no host call from Python): its parameters
        checked against the declared ones, shown in traces as ``cfg name(...)``."""
        params = SIGNATURES[name] if name in SIGNATURES else STATEMENTS.get(name)
        implementation = getattr(self, "fn_" + name, None)
        if params is None or implementation is None:
            raise cfgscript.CfgError(f"line {line}: {name}() is not known to the fake")
        texts: List[Optional[str]] = []
        for index, arg in enumerate(args):
            kind = params[index].kind if index < len(params) else None
            if kind is None:
                raise cfgscript.CfgError(f"line {line}: {name}() takes {len(params)} parameters")
            if kind is Kind.INT and arg is not None and not isinstance(arg, int) and not str(arg).lstrip("-").isdigit():
                self.warn(f"ERROR: line {line}: {name}(): parameter {index + 1} is not an integer: {arg!r}")
                return -1
            texts.append(None if arg is None else str(arg))
        if any(not p.optional for p in params[len(texts) :]):
            raise cfgscript.CfgError(f"line {line}: {name}() lacks a mandatory parameter")
        shown = ", ".join("None" if a is None else repr(a) for a in texts)
        texts += [None] * (len(params) - len(texts))  # the script leaves optional ones unset: no crash there
        event = Event("call", f"cfg {name}({shown})")
        self.events.append(event)
        result = int(implementation(ctx, *texts))
        event.text += f" -> {result}"
        event.data = (name, tuple(texts), result)
        return result

    def _drop_unattached_dialog(self, ctx: Context) -> None:
        """A dialog created for a request that no transaction took is gone with the message."""
        dialog = ctx.dialog
        if (
            dialog is not None
            and dialog.state == "unconfirmed"
            and not any(t.dialog is dialog for t in self.transactions.values())
        ):
            self.dialogs.pop(dialog.did, None)

    # -- t_relay --------------------------------------------------------------------

    def fn_t_relay(self, ctx: Context, flags: Optional[str] = None, proxy: Optional[str] = None) -> int:
        """tm's t_relay(): an ACK and a CANCEL hop by hop, anything else in a new transaction forked
        to the R-URI and lookup()'s other contacts, each branch through the armed branch route.
        No branch sent: without "no-auto-477" tm answers 500 itself and returns 0, which ends the script."""
        out = self._pending_out
        msg = ctx.msg
        dialog = ctx.dialog
        sent_cseq = None
        if dialog is not None and dialog.callee_cseq and msg.to_tag is not None and ctx.direction == "downstream":
            # dialog's CSeq of the callee's leg, which uac_auth() raised (dlg_handlers.c dlg_onroute)
            sent_cseq = msg.header("cseq")
            if msg.method not in ("ACK", "CANCEL"):
                dialog.callee_cseq += 1
            msg.set_header("CSeq", f"{dialog.callee_cseq} {msg.method}")
        if msg.method == "ACK":
            self._forward(ctx, msg.copy(), out)
            return 1
        if msg.method == "CANCEL":
            tx = self._find_tx(msg, "INVITE")
            if tx is None:
                return -1
            self._reply_to(ctx, 200, "OK", out)
            tx.cancelled = True
            self._cancel_pending(tx, out)
            return 1
        if ctx.route == "failure" and ctx.tx is not None:
            return self._new_branch(ctx, ctx.tx, out)
        key = self._tx_key(msg, msg.method)
        if key in self.transactions or key in self.completed:
            self.events.append(Event("log", f"retransmission of {msg.method} absorbed by tm"))
            return 0
        tx = Transaction(key, msg.copy(), ctx.source, set(ctx.flags), ctx.avps, dict(ctx.armed), ctx.dialog)
        tx.upstream_cseq = sent_cseq
        tx.serial = self._new_id()
        tx.reply_to = reply_address(ctx)
        tx.record_route = ctx.record_route
        self.transactions[key] = tx
        ctx.tx = tx
        targets = [Contact(msg.ruri, ctx.dst_uri, set(ctx.bflags), 0), *ctx.extra_branches]
        for index, target in enumerate(targets):
            branch_msg = msg.copy()
            branch_msg.ruri = target.uri
            bctx = Context(
                self,
                "branch",
                branch_msg,
                ctx.source,
                set(ctx.flags),
                set(target.bflags),
                tx.avps,
                dst_uri=target.received,
                tx=tx,
                dialog=ctx.dialog,
                branch_index=index,
                record_route=ctx.record_route,
                direction=ctx.direction,
            )
            branch_route = tx.routes.get("branch")
            if branch_route is not None and self.run_route("branch_route", branch_route, bctx) == "drop":
                self.events.append(Event("note", f"branch {index} dropped by the branch route: tm sends it nothing"))
                continue
            self._send_branch(tx, bctx, index, out, bctx.armed.get("reply", tx.routes.get("reply")))
        if msg.method == "BYE" and ctx.dialog is not None:
            # dialog ends the call at the BYE request itself, sent on or not (dlg_onroute, DLG_EVENT_REQBYE)
            ctx.dialog.state = "deleted"
            self.dialogs.pop(ctx.dialog.did, None)
        if not tx.branches:
            del self.transactions[key]
            if flags is None or "no-auto-477" not in flags:
                # tm answers the failure itself and t_relay() returns true (tm.c w_t_relay)
                self._reply_to(ctx, 500, "Server error occurred (1/TM)", out)
                return 1
            return -1
        return 1

    def _new_branch(self, ctx: Context, tx: Transaction, out: List[Tuple[Endpoint, SipMessage]]) -> int:
        """t_relay() in a failure route: one more branch of the same transaction, to the R-URI and $du as the
        failure route left them, through the routes it armed; tm then waits for that branch's final reply."""
        tx.routes.update(ctx.armed)
        index = len(tx.branches)
        bctx = Context(self, "branch", ctx.msg.copy(), tx.source, set(tx.flags), set(ctx.bflags), tx.avps,
                       dst_uri=ctx.dst_uri, tx=tx, dialog=tx.dialog, branch_index=index,
                       record_route=tx.record_route, direction=ctx.direction)  # fmt: skip
        branch_route = tx.routes.get("branch")
        if branch_route is not None and self.run_route("branch_route", branch_route, bctx) == "drop":
            self.events.append(Event("note", f"branch {index} dropped by the branch route: tm sends it nothing"))
            return -1
        self._send_branch(tx, bctx, index, out, bctx.armed.get("reply", tx.routes.get("reply")))
        return 1

    def fn_t_local_replied(self, ctx: Context, which: str) -> int:
        """1 when the reply is tm's own and no reply came from the network: "all" of the branches of the current
        set, the failure route's picked "branch", or its picked reply being tm's own ("last")."""
        tx = ctx.tx
        if tx is None:
            return -1
        if which == "all":
            return -1 if any(b.heard for b in tx.branches[tx.first_branch :]) else 1
        picked = tx.picked if ctx.route == "failure" else None
        if picked is None:
            return -1
        if which == "branch":
            return -1 if picked.heard else 1
        if which == "last":
            return 1 if picked.faked else -1
        raise HostFault(f"t_local_replied: unknown type {which!r}")

    def fn_t_was_cancelled(self, ctx: Context) -> int:
        return 1 if ctx.tx is not None and ctx.tx.cancelled else -1

    def fn_t_on_branch(self, ctx: Context, name: str) -> int:
        ctx.armed["branch"] = name
        return 1

    def fn_t_on_reply(self, ctx: Context, name: str) -> int:
        """In a request route: every branch's replies; in a branch route: this branch's only."""
        ctx.armed["reply"] = name
        return 1

    def fn_t_on_failure(self, ctx: Context, name: str) -> int:
        ctx.armed["failure"] = name
        return 1

    def _send_branch(
        self,
        tx: Transaction,
        bctx: Context,
        index: int,
        out: List[Tuple[Endpoint, SipMessage]],
        reply_route: Optional[str] = None,
    ) -> None:
        message = bctx.msg
        via_branch = f"z9hG4bKgw{tx.serial}.{index}"
        message.add_header_first(
            "Via", f"SIP/2.0/{bctx.source.proto.upper()} {self.address.host}:{self.address.port};branch={via_branch}"
        )
        dialog = bctx.dialog
        if dialog is not None and tx.method == "INVITE" and dialog.state == "unconfirmed":
            if dialog.hidden:
                dialog.caller_contact = message.address_uri("contact")
                message.set_header("Contact", f"<sip:{self.address.host}:{self.address.port};thinfo={dialog.did}>")
            elif bctx.record_route:
                message.add_header_first(
                    "Record-Route", f"<sip:{self.address.host}:{self.address.port};lr;did={dialog.did}>"
                )
        endpoint = uri_endpoint(bctx.dst_uri or message.ruri)
        if endpoint.proto in STREAM_PROTOS and endpoint not in self.connections:
            if self.no_new_conn_bflag is not None and self.no_new_conn_bflag in bctx.bflags:
                # tm: the send fails at once, the branch is not counted (t_fwd.c t_forward_nonack)
                self.events.append(Event("log", f"branch {index}: no connection to {endpoint}, none opened"))
                return
            self.dialled.append(endpoint)
            self.connections.add(endpoint)
        tx.branches.append(Branch(index, endpoint, via_branch, message, bctx.bflags, reply_route=reply_route))
        where = f"branch {index}: request URI {message.ruri}, destination URI {bctx.dst_uri or '(none)'}"
        self.events.append(Event("branch", where, (index, message.ruri, bctx.dst_uri)))
        self._send(endpoint, message, out)

    def _forward(self, ctx: Context, message: SipMessage, out: List[Tuple[Endpoint, SipMessage]]) -> None:
        message.add_header_first(
            "Via", f"SIP/2.0/UDP {self.address.host}:{self.address.port};branch=z9hG4bKgwack{self._new_id()}"
        )
        self._send(uri_endpoint(ctx.dst_uri or message.ruri), message, out)

    def _cancel_pending(self, tx: Transaction, out: List[Tuple[Endpoint, SipMessage]]) -> None:
        for branch in tx.branches:
            if branch.status is None or branch.status < 200:
                cancel = SipMessage(
                    f"CANCEL {branch.message.ruri} SIP/2.0",
                    [
                        ("Via", branch.message.header_values("via")[0]),
                        ("From", branch.message.header("from") or ""),
                        ("To", branch.message.header("to") or ""),
                        ("Call-ID", branch.message.call_id),
                        ("CSeq", f"{branch.message.cseq_number} CANCEL"),
                        ("Max-Forwards", "70"),
                        ("Content-Length", "0"),
                    ],
                )
                self._send(branch.endpoint, cancel, out)

    def _tx_key(self, msg: SipMessage, method: str) -> str:
        """RFC 3261 17.2.3: the top Via's branch and sent-by, and the method (a CANCEL matches its INVITE)."""
        sent_by = next(msg.vias(), "").split(";", 1)[0].split(None, 1)[-1]
        return f"{msg.top_via_branch()}@{sent_by}:{method}"

    def _find_tx(self, msg: SipMessage, method: str) -> Optional[Transaction]:
        return self.transactions.get(self._tx_key(msg, method))

    # -- replies ----------------------------------------------------------------------

    def _reply(self, reply: SipMessage, source: Endpoint, out: List[Tuple[Endpoint, SipMessage]]) -> None:
        via_branch = reply.top_via_branch() or ""
        live = list(self.transactions.values()) + list(self.completed.values())
        found = [(t, b) for t in live for b in t.branches if b.via_branch == via_branch]
        if not found:
            self.events.append(Event("log", f"no transaction for reply {reply.first_line}"))
            return
        tx, branch = found[0]
        status = reply.status
        if reply.cseq_method != tx.method:
            return  # e.g. the 200 for a CANCEL tm sent: absorbed
        branch.heard = True
        if branch.status is not None and branch.status >= 200:
            return  # retransmission of a final reply: absorbed by tm
        ctx = Context(
            self,
            "reply",
            reply,
            source,
            tx.flags,
            set(branch.bflags),
            tx.avps if self.reply_sees_avps else {},
            tx=tx,
            dialog=tx.dialog,
            branch_index=branch.index,
        )
        if branch.reply_route is not None:
            outcome = self.run_route("onreply_route", branch.reply_route, ctx)
            if outcome == "drop" and status < 200:
                return  # tm drops a provisional reply the reply route dropped
        if status == 100:
            return
        reply.remove_first("via")
        if status >= 200:
            branch.reply = reply.copy()
        if tx.upstream_cseq is not None:
            dialog = tx.dialog
            if dialog is not None and dialog.cseq_enforced and tx.method == "INVITE" and 200 <= status < 300:
                dialog.callee_cseq = reply.cseq_number  # dlg_handlers.c: the callee leg's last_gen_cseq
            reply.set_header("CSeq", tx.upstream_cseq)
        if status < 200:
            branch.status = status
            self._send(tx.reply_to or tx.source, reply, out)
            return
        branch.status = status
        if tx.final is not None and tx.final < 300 and status < 300:
            self._send(tx.reply_to or tx.source, reply, out)  # a second 2xx from another fork goes up too
            return
        if status < 300:
            tx.final = status
            self._confirm_dialog(tx, reply, source)
            self._send(tx.reply_to or tx.source, reply, out)
            if tx.method == "INVITE":
                self._cancel_pending(tx, out)
            self._finish(tx)
            return
        if tx.final is not None:
            return  # a late negative reply on another fork: absorbed after the reply route ran
        tx.replies.append(reply)
        if all(b.status is not None and b.status >= 200 for b in tx.branches) and tx.final is None:
            if self._fail(tx, out):
                self._finish(tx)

    def timeout(self) -> List[Tuple[Endpoint, SipMessage]]:
        """tm's fr_timer/fr_inv_timer firing for every pending branch: a local 408, then the
        failure route (tm runs no reply route for a local timeout), then the best reply upstream."""
        out: List[Tuple[Endpoint, SipMessage]] = []
        self._pending_out = out
        for tx in list(self.transactions.values()):
            for branch in tx.branches:
                if branch.status is None or branch.status < 200:
                    heard = "provisional replies only" if branch.heard else "nothing heard from it"
                    self.events.append(Event("note", f"tm's timer: branch {branch.index} to {branch.endpoint} has no"
                                                     f" final reply ({heard}): tm's own 408"))  # fmt: skip
                    branch.status, branch.faked = 408, True
                    tx.local_replies.append(self._local_reply(tx.request, 408, "Request Timeout"))
                    tx.replies.append(tx.local_replies[-1])
            if tx.final is None and tx.replies and not self._fail(tx, out):
                continue  # the failure route sent a new branch: the transaction goes on
            self._finish(tx)
        return out

    def _fail(self, tx: Transaction, out: List[Tuple[Endpoint, SipMessage]]) -> bool:
        """Every branch failed: tm picks the best reply (a 6xx first, else the lowest), runs the failure
        route (once per arming: t_on_failure there arms it again), and sends that reply upstream; an
        unconfirmed dialog goes with the transaction.  False when the failure route sent a new branch
        instead: the transaction waits for it."""
        best = min(tx.replies, key=lambda r: (0 if r.status >= 600 else 1, r.status))
        tx.final = best.status
        failure_route = tx.routes.pop("failure", None)
        if failure_route is not None:
            # the failed branch's flags and destination, as tm's faked request has them (t_reply.c fake_req)
            picked = tx.picked = next((b for b in tx.branches[tx.first_branch :] if b.status == best.status), None)
            # its headers as the request route left them, but its request URI as it came: the request route's
            # rewrite ($rU, $rd, $rp) is not in it (seen on 3.6.8 and 4.0.1, docs/host-facts.md)
            faked = tx.request.copy()
            if faked.original_ruri is not None:
                faked.ruri = faked.original_ruri
            fctx = Context(self, "failure", faked, tx.source, tx.flags,
                           set(picked.bflags) if picked is not None else set(), tx.avps, tx=tx,
                           dialog=tx.dialog)  # fmt: skip
            branches = len(tx.branches)
            self.run_route("failure_route", failure_route, fctx)
            if len(tx.branches) > branches:
                # tm picks the final reply among the new branches only (t_reply.c t_pick_branch from first_branch)
                tx.final = None
                tx.replies.clear()
                tx.first_branch = branches
                return False
        if tx.dialog is not None and tx.method == "INVITE" and tx.dialog.state == "unconfirmed":
            self.dialogs.pop(tx.dialog.did, None)
            tx.dialog.state = "deleted"
        if tx.failure_reply is not None:
            best = tx.failure_reply  # t_reply() in the failure route: tm sends that one instead
            tx.final = best.status
        elif best.status == 503 and self.translates_503 and all(best is not r for r in tx.local_replies):
            best.first_line = "SIP/2.0 500 " + best.first_line.split(" ", 2)[2]  # the code only
        tx.sent_final = best.copy()
        self._send(tx.reply_to or tx.source, best, out)
        return True

    def retransmit(self) -> List[Tuple[Endpoint, SipMessage]]:
        """tm's timer G: a negative final reply to an INVITE whose ACK tm did not take (t_check_trans or
        t_relay of the ACK) is sent again, until timer H ends the transaction."""
        out: List[Tuple[Endpoint, SipMessage]] = []
        for tx in self.completed.values():
            if tx.method == "INVITE" and tx.sent_final is not None and not tx.acked:
                self._send(tx.reply_to or tx.source, tx.sent_final.copy(), out)
        return out

    def _confirm_dialog(self, tx: Transaction, reply: SipMessage, source: Endpoint) -> None:
        dialog = tx.dialog
        if dialog is None or tx.method != "INVITE" or dialog.state != "unconfirmed":
            return
        dialog.state = "confirmed"
        dialog.callee_tag = reply.to_tag
        if dialog.hidden:
            dialog.callee_contact = reply.address_uri("contact")
            reply.set_header("Contact", f"<sip:{self.address.host}:{self.address.port};thinfo={dialog.did}>")

    def _finish(self, tx: Transaction) -> None:
        """A completed transaction still absorbs the ACK of its negative reply (tm's wait timer)."""
        self.transactions.pop(tx.key, None)
        self.completed[tx.key] = tx

    # -- local replies (sl_send_reply) ---------------------------------------------------

    def _reply_to(self, ctx: Context, code: int, reason: str, out: List[Tuple[Endpoint, SipMessage]]) -> SipMessage:
        reply = self._local_reply(ctx.msg, code, reason)
        self._send(reply_address(ctx), reply, out)
        return reply

    def _local_reply(self, request: SipMessage, code: int, reason: str) -> SipMessage:
        to = request.header("to") or ""
        if code >= 200 and "tag=" not in to:
            to += f";tag=gw{self._new_id()}"
        headers = [("Via", v) for v in request.header_values("via")]
        headers += [("From", request.header("from") or ""), ("To", to), ("Call-ID", request.call_id)]
        headers += [("CSeq", request.header("cseq") or ""), ("Content-Length", "0")]
        return SipMessage(f"SIP/2.0 {code} {reason}", headers)

    # -- script functions (call_function targets) -----------------------------------------

    def _flag(self, name: str) -> str:
        if name not in self.flags_declared:
            message = f"flag {name!r} is not named in opensips.cfg: each process would allocate its own bit"
            if self.strict:
                raise HostFault(message)
            self.log_error(message)
        return name

    def fn_setflag(self, ctx: Context, name: str) -> int:
        ctx.flags.add(self._flag(name))
        return 1

    def fn_resetflag(self, ctx: Context, name: str) -> int:
        ctx.flags.discard(self._flag(name))
        return 1

    def fn_isflagset(self, ctx: Context, name: str) -> int:
        return 1 if self._flag(name) in ctx.flags else -1

    def fn_setbflag(self, ctx: Context, name: str, index: Optional[str] = None) -> int:
        ctx.bflags.add(self._flag(name))
        return 1

    def fn_resetbflag(self, ctx: Context, name: str, index: Optional[str] = None) -> int:
        ctx.bflags.discard(self._flag(name))
        return 1

    def fn_isbflagset(self, ctx: Context, name: str, index: Optional[str] = None) -> int:
        return 1 if self._flag(name) in ctx.bflags else -1

    def fn_force_rport(self, ctx: Context) -> int:
        ctx.rport = True
        return 1

    def fn_python_exec(self, ctx: Context, method: str, arg: Optional[str] = None) -> int:
        return self.python_exec(method, ctx, arg)

    def fn_xlog(self, ctx: Context, level: str, text: Optional[str] = None) -> int:
        if text is None:
            level, text = "L_ERR", level
        if level in ("L_ALERT", "L_CRIT", "L_ERR"):
            self.log_error(text)
        else:
            self.events.append(Event("log", text.rstrip("\n")))
        return 1

    def fn_mf_process_maxfwd_header(self, ctx: Context, limit: str) -> int:
        """maxfwd: -1 when Max-Forwards is 0 (or less); adds one of ``limit`` when missing (2); else decrements (1)."""
        value = ctx.msg.header("max-forwards")
        if value is None:
            ctx.msg.headers.append(("Max-Forwards", limit))
            return 2
        if not value.strip().isdigit():
            return -2
        hops = int(value)
        if hops <= 0:
            return -1
        ctx.msg.set_header("Max-Forwards", str(min(hops, 256) - 1))
        return 1

    def fn_has_totag(self, ctx: Context) -> int:
        return 1 if ctx.msg.to_tag else -1

    def fn_is_method(self, ctx: Context, methods: str) -> int:
        return 1 if ctx.msg.method in methods.split("|") else -1

    def fn_append_hf(self, ctx: Context, text: str, after: Optional[str] = None) -> int:
        """sipmsgops: the text goes in as it is, after the last header; it may hold several lines."""
        added = 0
        for line in text.split("\r\n"):
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise cfgscript.CfgError(f"append_hf: {line!r} is not a header line")
            ctx.msg.headers.append((name.strip(), value.strip()))
            added += 1
        return 1 if added else -1

    def fn_remove_hf(self, ctx: Context, name: str) -> int:
        return self.fn_remove_hf_re(ctx, "^" + re.escape(name) + "$")

    def fn_remove_hf_re(self, ctx: Context, pattern: str) -> int:
        """sipmsgops: every header whose name matches (regcomp, extended and case-insensitive)."""
        regex = re.compile(pattern, re.IGNORECASE)
        before = len(ctx.msg.headers)
        ctx.msg.headers[:] = [(k, v) for k, v in ctx.msg.headers if not regex.search(k)]
        removed = before - len(ctx.msg.headers)
        return removed if removed else -1

    def fn_has_body(self, ctx: Context, mime: Optional[str] = None) -> int:
        return 1 if ctx.msg.body else -1

    # nathelper

    NAT_TESTS = (
        "private-contact",
        "diff-ip-src-via",
        "private-via",
        "private-sdp",
        "diff-port-src-via",
        "diff-ip-src-contact",
        "diff-port-src-contact",
        "carrier-grade-nat",
    )

    def fn_nat_uac_test(self, ctx: Context, tests: str) -> int:
        names = [t.strip() for t in tests.split(",")]
        unknown = [t for t in names if t not in self.NAT_TESTS]
        if unknown:
            raise SystemError(f"nat_uac_test: fixup failed for {unknown}")
        msg, src = ctx.msg, ctx.source
        via = next(msg.vias(), "")
        via_host, via_port = _via_hostport(via)
        contact = msg.address_uri("contact")
        contact_ep = uri_endpoint(contact) if contact else None
        checks = {
            "private-contact": contact_ep is not None and is_private(contact_ep.host),
            "diff-ip-src-via": via_host != src.host,
            "private-via": is_private(via_host),
            "private-sdp": any(is_private(h) for h in re.findall(r"c=IN IP4 (\S+)", msg.body.decode("latin-1"))),
            "diff-port-src-via": via_port != src.port,
            "diff-ip-src-contact": contact_ep is not None and contact_ep.host != src.host,
            "diff-port-src-contact": contact_ep is not None and contact_ep.port != src.port,
            "carrier-grade-nat": False,
        }
        return 1 if any(checks[t] for t in names) else -1

    def fn_fix_nated_register(self, ctx: Context) -> int:
        src = ctx.source
        host = f"[{src.host}]" if ":" in src.host else src.host  # nathelper's create_rcv_uri brackets IPv6
        ctx.received = f"sip:{host}:{src.port}" + ("" if src.proto == "udp" else f";transport={src.proto}")
        return 1

    def fn_fix_nated_contact(self, ctx: Context, param: Optional[str] = None) -> int:
        value = ctx.msg.header("contact")
        if value is None or value.strip() == "*":
            return -1
        match = re.search(r"(sips?:)([^@;>]+@)?([^;>?]+)", value)
        if match is None:
            return -1
        src = ctx.source
        host = f"[{src.host}]" if ":" in src.host else src.host  # IPv6 in brackets, as nathelper writes it
        fixed = value[: match.start(3)] + f"{host}:{src.port}" + value[match.end(3) :]
        ctx.msg.set_header("Contact", fixed)
        return 1

    # registrar

    def fn_save(
        self,
        ctx: Context,
        domain: str,
        flags: Optional[str] = None,
        aor: Optional[str] = None,
        tag: Optional[str] = None,
    ) -> int:
        self._table(domain)
        msg = ctx.msg
        user = aor_user((msg.address_uri("to") or "").split(":", 1)[-1].split("@")[0])
        if user is None:  # lib/reg extract_aor(): save() answers the rerrno's reply itself and returns -2
            self._reply_to(ctx, 500, "Address Of Record too long", self._pending_out)
            return -2
        default_expires = int(msg.header("expires") or 3600)
        contacts = self.location.setdefault(user, [])
        for value in msg.header_values("contact"):
            if value.strip() == "*":
                contacts.clear()
                continue
            for part in value.split(","):
                uri = _address_uri(part)
                match = re.search(r";\s*expires=(\d+)", part.split(">")[-1])
                expires = int(match.group(1)) if match else default_expires
                if self.max_expires and expires > self.max_expires:
                    expires = self.max_expires  # registrar grants at most max_expires
                if expires > 0:
                    # +/- expires_max_deviation at random there, clamped to max_expires (lib/reg/common.h
                    # randomize_expires); here the most it may grant
                    expires += self.expires_deviation
                    if self.max_expires:
                        expires = min(expires, self.max_expires)
                contacts[:] = [c for c in contacts if c.uri != uri]
                if expires > 0:
                    contacts.append(Contact(uri, ctx.received, set(ctx.bflags), expires))
        reply = self._reply_to(ctx, 200, "OK", self._pending_out)
        for c in contacts:
            reply.headers.append(("Contact", f"<{c.uri}>;expires={c.expires}"))
        return 1

    def fn_remove_ip_port(self, ctx: Context, ip: str, port: str, domain: str, aor: Optional[str] = None) -> int:
        """registrar's remove_ip_port(): every contact (of ``aor``, else of every AOR) whose next hop, the
        received address or else the Contact's own host and port, is ``ip``:``port``."""
        self._table(domain)
        users = [aor.split(":", 1)[-1].split("@")[0]] if aor else list(self.location)
        for user in users:
            contacts = self.location.get(user, [])
            hop = [uri_endpoint(c.received or c.uri) for c in contacts]
            contacts[:] = [c for c, h in zip(contacts, hop) if (h.host, h.port) != (ip, int(port))]
            if user in self.location and not contacts:
                del self.location[user]
        return 1

    def _table(self, domain: str) -> None:
        if domain not in self.tables_declared:
            # the fixup fails; call_function surfaces it as SystemError, the reason lost
            raise SystemError(f"usrloc table {domain!r} not named in the cfg: can't register new domain during runtime")

    def fn_lookup(self, ctx: Context, domain: str, flags: Optional[str] = None, aor: Optional[str] = None) -> int:
        self._table(domain)
        user = aor_user(ctx.msg.ruri.split(":", 1)[-1].split(";")[0].rpartition("@")[0])
        if user is None:
            return -3  # lib/reg extract_aor(): "Address Of Record too long"
        contacts = self.location.get(user, [])
        if not contacts:
            return -1
        first, rest = contacts[0], contacts[1:]
        ctx.set_ruri(first.uri)
        ctx.dst_uri = first.received
        ctx.bflags = set(first.bflags)
        ctx.extra_branches = [Contact(c.uri, c.received, set(c.bflags), c.expires) for c in rest]
        return 1

    # dialog, rr, topology hiding

    def fn_create_dialog(self, ctx: Context, flags: Optional[str] = None) -> int:
        if ctx.dialog is None:
            did = self._new_id()
            ctx.dialog = Dialog(did, ctx.msg.call_id, ctx.msg.from_tag or "")
            self.dialogs[did] = ctx.dialog
        return 1

    def fn_record_route(self, ctx: Context, params: Optional[str] = None) -> int:
        ctx.record_route = True
        return 1

    def fn_loose_route(self, ctx: Context) -> int:
        routes = [r.strip() for v in ctx.msg.header_values("route") for r in v.split(",")]
        if not routes:
            return -1
        top = _address_uri(routes[0])
        endpoint = uri_endpoint(top)
        if (endpoint.host, endpoint.port) != (self.address.host, self.address.port):
            # rr's loose_route() follows a Route that is not ours too (seen on 3.6.8 and 4.0.1):
            # the request goes to it, matching no dialog.
            ctx.dst_uri = top
            return 1
        ctx.msg.remove_first("route")
        if len(routes) > 1:
            ctx.msg.add_header_first("Route", ", ".join(routes[1:]))
            ctx.dst_uri = _address_uri(routes[1])
        did = re.search(r";did=([^;>]+)", top)
        self._match_dialog(ctx, did.group(1) if did else None)
        return 1

    def _match_dialog(self, ctx: Context, did: Optional[str]) -> None:
        dialog = self.dialogs.get(did) if did else None
        if dialog is None:
            return
        ctx.dialog = dialog
        ctx.direction = "downstream" if ctx.msg.from_tag == dialog.caller_tag else "upstream"

    def fn_topology_hiding(self, ctx: Context, flags: Optional[str] = None, params: Optional[str] = None) -> int:
        if ctx.dialog is None:
            self.fn_create_dialog(ctx)
        assert ctx.dialog is not None
        ctx.dialog.hidden = True
        return 1

    def fn_topology_hiding_match(self, ctx: Context, mode: Optional[str] = None) -> int:
        match = re.search(r";thinfo=([^;>]+)", ctx.msg.ruri)
        dialog = self.dialogs.get(match.group(1)) if match else None
        if dialog is None:
            return -1
        self._match_dialog(ctx, dialog.did)
        target = dialog.callee_contact if ctx.direction == "downstream" else dialog.caller_contact
        if target:
            ctx.set_ruri(target)
        return 1

    # tm, sl

    def fn_t_check_trans(self, ctx: Context) -> int:
        if ctx.msg.method == "CANCEL":
            return 1 if self._find_tx(ctx.msg, "INVITE") is not None else -1
        if ctx.msg.method == "ACK":
            # tm takes the ACK of a negative reply it sent (hop by hop, the INVITE's Via branch) and
            # ends the script (0); any other ACK is no transaction of its own
            key = self._tx_key(ctx.msg, "INVITE")
            tx = self.transactions.get(key) or self.completed.get(key)
            if tx is None:
                return -1
            tx.acked = True
            return 0
        return 1 if self._find_tx(ctx.msg, ctx.msg.method) is not None else -1

    def fn_sl_send_reply(self, ctx: Context, code: str, reason: str) -> int:
        self._reply_to(ctx, int(code), reason, self._pending_out)
        return 1

    def fn_send_reply(self, ctx: Context, code: str, reason: str) -> int:
        """signaling's: tm's reply for a request with a transaction (in a failure route), else sl's."""
        if ctx.route == "failure":
            return self.fn_t_reply(ctx, code, reason)
        return self.fn_sl_send_reply(ctx, code, reason)

    def fn_t_reply(self, ctx: Context, code: str, reason: str) -> int:
        """In a failure route: the transaction's final reply, sent upstream when the route ends (instead of the
        one tm picked), with the CSeq the caller wrote."""
        tx = ctx.tx
        if ctx.route != "failure" or tx is None:
            return self.fn_sl_send_reply(ctx, code, reason)
        if tx.failure_reply is not None:
            return -1  # tm sends one final reply
        reply = self._local_reply(ctx.msg, int(code), reason)
        if tx.upstream_cseq is not None:
            reply.set_header("CSeq", tx.upstream_cseq)
        tx.failure_reply = reply
        return 1

    def _avp_param(self, module: str, param: str) -> str:
        """The name of the AVP a module's parameter names: "$avp(gw_auth_realm)" -> "gw_auth_realm"."""
        spec = str(next(iter(self.script.modparam(module, param)), ""))
        match = re.fullmatch(r"\$avp\((\w+)\)", spec)
        return match.group(1) if match else ""

    # uac, uac_auth: a trunk's challenge answered (modules/uac/auth.c uac_auth, modules/uac_auth/auth.c)

    def fn_uac_auth(self, ctx: Context, algorithms: Optional[str] = None) -> int:
        """The picked reply's challenge (401 WWW-Authenticate, 407 Proxy-Authenticate) answered with the credentials
        in uac_auth's AVPs (auth_realm_avp, ..., when the realm is the challenge's): the faked request gets the
        picked branch's request URI, the digest header (RFC 2617, MD5, qop=auth when offered) and its CSeq + 1,
        which every reply sent upstream has taken back, and the dialog keeps for the callee's leg."""
        tx = ctx.tx
        picked = tx.picked if tx is not None and ctx.route == "failure" else None
        reply = picked.reply if picked is not None else None
        if tx is None or picked is None or reply is None:
            self.log_error("ERROR:uac:uac_auth: no picked reply (or a FAKED one)")
            return -1
        header = {401: ("www-authenticate", "Authorization"), 407: ("proxy-authenticate", "Proxy-Authorization")}
        names = header.get(reply.status)
        challenge = reply.header(names[0]) if names is not None else None
        if names is None or challenge is None or not challenge.lower().startswith("digest "):
            self.log_error("ERROR:uac:uac_auth: Unable to extract a compatible authentication challenge")
            return -1
        fields = digest_fields(challenge)
        algorithm = fields.get("algorithm", "MD5").upper()
        if algorithm.removesuffix("-SESS") not in DIGEST_HASHES:
            self.log_error(f"ERROR:uac:uac_auth: Unable to extract a compatible authentication challenge ({algorithm})")
            return -1
        realm, user, password = (ctx.avps.get(self._avp_param("uac_auth", p))
                                 for p in ("auth_realm_avp", "auth_username_avp", "auth_password_avp"))  # fmt: skip
        if realm is None or str(realm) != fields.get("realm") or not user or not password:
            return -1  # "no credential for realm": uac_auth_api._lookup_realm
        request = ctx.msg
        uri = picked.message.ruri
        creds = {"username": str(user), "realm": str(realm), "nonce": fields.get("nonce", ""), "uri": uri}
        offered = [q.strip() for q in fields.get("qop", "").split(",")]
        if "auth" in offered or "auth-int" in offered:  # auth when offered (uac_auth/auth.c do_uac_auth)
            creds.update(qop="auth" if "auth" in offered else "auth-int", nc="00000001", cnonce=self._new_id())
        creds["algorithm"] = algorithm
        creds["response"] = digest_response(creds, str(password), request.method, request.body)
        if "opaque" in fields:
            creds["opaque"] = fields["opaque"]
        request.ruri = uri
        request.headers.insert(len(request.headers) - 1, (names[1], "Digest " + ", ".join(
            f"{k}={v}" if k in ("qop", "nc", "algorithm") else f'{k}="{v}"' for k, v in creds.items())))  # fmt: skip
        if tx.upstream_cseq is None:
            tx.upstream_cseq = request.header("cseq")
        request.set_header("CSeq", f"{request.cseq_number + 1} {request.method}")
        if tx.dialog is not None:
            tx.dialog.cseq_enforced = True
        return 1

    # auth, auth_db (digest, RFC 2617 with qop=auth), statistics

    def _credentials(self, ctx: Context, header: str) -> Optional[Dict[str, str]]:
        value = ctx.msg.header(header)
        if value is None or not value.lower().startswith("digest "):
            return None
        return digest_fields(value)

    def _authorize(self, ctx: Context, realm: str, header: str) -> int:
        creds = self._credentials(ctx, header)
        if creds is None or creds.get("realm") != realm:
            return -1  # no credentials for this realm
        if creds.get("nonce") not in self.nonces:
            return -3  # stale or forged nonce
        if self.loads_rpid:
            # auth_db's default load_credentials: "no such column: rpid" on 3.6.8/4.0.1, every check fails
            self.log_error("ERROR:auth_db:get_ha1: failed to query database (no such column: rpid)")
            return -1
        password = self.subscribers.get((creds.get("username", ""), realm))
        if password is None:
            return -1
        expected = digest_response(creds, password, ctx.msg.method)
        if creds.get("response") != expected:
            return -2
        ctx.vars["auth_user"] = creds.get("username", "")
        ctx.vars["auth_header"] = header
        return 1

    def fn_www_authorize(self, ctx: Context, realm: str, table: str) -> int:
        return self._authorize(ctx, realm, "authorization")

    def fn_proxy_authorize(self, ctx: Context, realm: str, table: str) -> int:
        return self._authorize(ctx, realm, "proxy-authorization")

    def _challenge(self, ctx: Context, realm: str, code: int, header: str) -> int:
        nonce = f"n{self._new_id()}x{len(self.nonces)}"
        self.nonces.add(nonce)
        reply = self._reply_to(
            ctx, code, "Unauthorized" if code == 401 else "Proxy Authentication Required", self._pending_out
        )
        reply.headers.append((header, f'Digest realm="{realm}", nonce="{nonce}", qop="auth", algorithm=MD5'))
        return 1

    def fn_www_challenge(self, ctx: Context, realm: str, qop: Optional[str], algorithms: Optional[str]) -> int:
        return self._challenge(ctx, realm, 401, "WWW-Authenticate")

    def fn_proxy_challenge(self, ctx: Context, realm: str, qop: Optional[str], algorithms: Optional[str]) -> int:
        return self._challenge(ctx, realm, 407, "Proxy-Authenticate")

    def fn_consume_credentials(self, ctx: Context) -> int:
        header = ctx.vars.get("auth_header")
        if header is None:
            return -1
        ctx.msg.remove_first(header)
        return 1

    def _identity(self, ctx: Context, header: str, table: str) -> int:
        if table != "uri":
            # auth_db looks (username, domain, uri_user) up in the table it is given: the subscriber
            # table has no uri_user (seen on 3.6.8 and 4.0.1), so the check always fails.
            self.log_error(f"ERROR:db_sqlite:db_sqlite_query: failed to prepare: (no such column: uri_user) [{table}]")
            return -1
        user = ctx.vars.get("auth_user")
        uri = ctx.msg.address_uri(header) or ""
        return 1 if user and uri.split(":", 1)[-1].split("@")[0] == user else -1

    def fn_db_is_to_authorized(self, ctx: Context, table: str) -> int:
        return self._identity(ctx, "to", table)

    def fn_db_is_from_authorized(self, ctx: Context, table: str) -> int:
        return self._identity(ctx, "from", table)

    def fn_update_stat(self, ctx: Context, name: str, value: str) -> int:
        if name not in self.statistics_declared:
            raise SystemError(f"update_stat: no statistic {name!r} (declare it in opensips.cfg)")
        self.statistics[name] += int(value)
        return 1

    # rtpengine

    def _rtpengine(self, op: str, ctx: Context, flags: Optional[str], extra: Optional[Dict[str, Any]] = None) -> int:
        try:
            ng = ng_command(op, flags, ctx.msg, ctx.source.host)
        except FlagError as exc:
            self.log_error(f"ERROR:rtpengine: {exc}")
            return -1
        ng.update(extra or {})
        answer = self.rtpengine.command(ng)
        shown = {k: v for k, v in ng.items() if k != "sdp"}
        self.events.append(Event("rtpengine", f"{op} {shown} -> {answer.get('result')}", (ng, answer)))
        if answer.get("result") != "ok":
            self.log_error(f"ERROR:rtpengine: {op}: {answer.get('error-reason')}")
            return -1
        if op in ("offer", "answer") and "sdp" in answer:
            ctx.msg.set_body(answer["sdp"].encode())
        return 1

    def fn_rtpengine_offer(
        self, ctx: Context, flags: Optional[str], sock: Optional[str], sdp: Optional[str], body: Optional[str]
    ) -> int:
        return self._rtpengine("offer", ctx, flags)

    def fn_rtpengine_answer(
        self, ctx: Context, flags: Optional[str], sock: Optional[str], sdp: Optional[str], body: Optional[str]
    ) -> int:
        return self._rtpengine("answer", ctx, flags)

    def fn_rtpengine_delete(self, ctx: Context, flags: Optional[str], sock: Optional[str]) -> int:
        return self._rtpengine("delete", ctx, flags)

    def fn_rtpengine_play_dtmf(self, ctx: Context, code: str, flags: Optional[str], sock: Optional[str]) -> int:
        return self._rtpengine("play DTMF", ctx, flags, {"code": code})

    def sessions(self) -> List[Any]:
        engine = self.rtpengine
        return list(getattr(engine, "sessions", {}).values())


def reply_address(ctx: Context) -> Endpoint:
    """Where OpenSIPS sends a reply to the request in ``ctx`` (forward.h update_sock_struct_from_ip, for sl
    and tm alike): over a TCP/TLS/WS connection, back over it; over UDP to the packet's source address,
    at its source port only when the top Via has rport or the script called force_rport(), else at the
    Via's sent-by port (5060 without one).  So a phone behind NAT whose Via has no rport gets no reply
    unless the cfg forces rport: the NAT has no binding for the port its Via names."""
    source = ctx.source
    if source.proto != "udp" or ctx.rport:
        return source
    via = next(ctx.msg.vias(), "")
    params = via.split(";")[1:]
    if any(p.strip().split("=", 1)[0].lower() == "rport" for p in params):
        return source
    _host, port = _via_hostport(via)
    return Endpoint(source.proto, source.host, port)


def _raw_address(msg: SipMessage, header: str) -> Optional[str]:
    """The URI of a To or From header as its bytes came: parse_to/parse_from keep escapes (%2A) and
    bytes that are not UTF-8 as they are, where sipmessage's URI would decode them."""
    value = msg.header(header)
    if not value:
        return None
    return _address_uri(value.split(",")[0])


def _uri_user(uri: Optional[str]) -> Optional[str]:
    """$tU/$fU: the user part of a URI, None without one."""
    if not uri or "@" not in uri:
        return None
    return uri.split(":", 1)[-1].split("@", 1)[0].split(";", 1)[0] or None


def _address_uri(value: str) -> str:
    value = value.strip()
    if "<" in value:
        return value.split("<", 1)[1].split(">", 1)[0]
    return value.split(";", 1)[0]


def _via_hostport(via: str) -> Tuple[str, int]:
    parts = via.split(None, 1)
    return split_hostport(parts[1].split(";", 1)[0].strip() if len(parts) > 1 else "")
