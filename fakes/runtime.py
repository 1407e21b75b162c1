"""A small OpenSIPS: our opensips.cfg's routes, run around the real ``pyscripts`` code.

``Gateway`` loads ``pyscripts/opensips_entry.py`` the way the python module
does (its folder first on ``sys.path``, ``mod_init()`` once, ``child_init``),
and keeps the script state OpenSIPS would: message, branch and dialog flags,
AVPs, dialog values, the location table, transactions with branches, and an
rtpengine backend.  ``receive()`` takes one SIP message from the network and
returns what OpenSIPS would send, after running the same routes as
``opensips/opensips.cfg`` (kept in step by tests/test_cfg.py).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import itertools
import locale
import os
import re
import sys
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple, Union

from . import opensips_module
from .msgobj import FakeMsg, HostCrash, format_pvs
from .rtpengine import Backend, FlagError, MemoryEngine, ng_command
from .sipmsg import SipMessage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYSCRIPTS = os.path.join(REPO, "pyscripts")
CFG = os.path.join(REPO, "opensips", "opensips.cfg")

# The codes opensips.cfg acts on: verdicts in the low three bits (gateway.model.Verdict), the
# actions above them (gateway.model.Do); tests/test_cfg.py keeps all three in step.
RELAY, HANDLED, RELAY_INITIAL, DROP, RELAY_TRACKED = 1, 2, 3, 4, 5
REPLY, RELAY_IF_TRANSACTION = 4, 7
DO_SRC_WS, DO_SRC_NAT, DO_FORCE_RPORT, DO_FIX_CONTACT, DO_FIX_REGISTER = 8, 16, 32, 64, 128
DO_BFLAG_WEBRTC, DO_BFLAG_NATED, DO_SAVE, DO_LOOKUP = 256, 512, 1024, 2048
DO_CREATE_DIALOG, DO_RECORD_ROUTE, DO_TOPOLOGY_HIDING, DO_STORE_RECORD, DO_PLAIN_CONTACT = (
    4096,
    8192,
    16384,
    32768,
    65536,
)
DO_RTP_OFFER, DO_RTP_ANSWER, DO_RTP_DELETE, DO_ARM_REPLY = 131072, 262144, 524288, 1048576
DO_QUIET_REPLIES = 4194304
DO_TRACK_DIALOG, DO_AUTH_WWW, DO_AUTH_PROXY = 2097152, 8388608, 16777216
DO_STAT_WEB_TO_WEB, DO_STAT_WEB_TO_SIP, DO_STAT_SIP_TO_WEB = 33554432, 67108864, 134217728
DO_STAT_SIP_TO_SIP, DO_STAT_MEDIA_PROXY = 268435456, 536870912
DO_QUIET_ACK = 1073741824
DO_QUIET_BYE = DO_QUIET_REPLIES  # in the reply route (the branch route reads it as QUIET_REPLIES)


def script_int(value: Optional[str]) -> int:
    """``{s.int}`` of a $var: its number, 0 for anything else (unset, empty, not digits)."""
    text = (value or "").strip()
    return int(text) if text.lstrip("-").isdigit() else 0


STATS_BY_BIT = (
    (DO_STAT_WEB_TO_WEB, "calls_web_to_web"),
    (DO_STAT_WEB_TO_SIP, "calls_web_to_sip"),
    (DO_STAT_SIP_TO_WEB, "calls_sip_to_web"),
    (DO_STAT_SIP_TO_SIP, "calls_sip_to_sip"),
    (DO_STAT_MEDIA_PROXY, "media_proxy_calls"),
)
NAT_TESTS = "private-contact,diff-ip-src-via,diff-port-src-via"

# nathelper's "private" networks (ip_addr_is_1918 in OpenSIPS 3.6/4.0): RFC 1918,
# RFC 6598 and loopback 127.0.0.0/8 too, so a 127.x Contact is "behind NAT".
_PRIVATE = re.compile(r"^(10\.|127\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.)")


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
    """Where a SIP URI leads: transport parameter, host and port (5060 by default)."""
    body = uri.split(":", 1)[1] if ":" in uri else uri
    params = body.split(";")[1:]
    hostport = body.split(";", 1)[0].split("?", 1)[0].rpartition("@")[2]
    proto = "udp"
    for param in params:
        key, _, value = param.partition("=")
        if key.lower() == "transport":
            proto = value.lower()
    host, _, port = hostport.partition(":")
    return Endpoint(proto, host, int(port) if port.isdigit() else 5060)


def is_private(host: str) -> bool:
    return bool(_PRIVATE.match(host))


def exec_arguments(cfg_path: str = CFG) -> Dict[str, str]:
    """The argument (facts format) the cfg passes to each python_exec, by method, with the cfg
    string's escapes (\\n) read as OpenSIPS reads them."""
    with open(cfg_path, encoding="utf-8") as handle:
        found = re.findall(r'python_exec\("(\w+)", "([^"]*)"\)', handle.read())
    return {name: text.replace("\\n", "\n").replace("\\t", "\t") for name, text in found}


def private_sdp_test(cfg_path: str = CFG) -> Optional[re.Pattern[str]]:
    """The request route's ``$rb =~ "..."`` (the SDP's private addresses) as OpenSIPS runs it:
    the cfg string's escapes read as cfg.lex reads them (a backslash before anything else stays),
    compiled case-insensitive like route.c's REG_ICASE; None when the cfg has no such test."""
    with open(cfg_path, encoding="utf-8") as handle:
        found = re.search(r'\$rb =~ "((?:[^"\\]|\\.)*)"', handle.read())
    if found is None:
        return None
    escapes = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}
    text = re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(0)), found.group(1))
    return re.compile(text, re.IGNORECASE | re.ASCII)


def declared_flags(cfg_path: str = CFG) -> Set[str]:
    """Flag names the cfg mentions, so OpenSIPS allocates them at startup in every process."""
    with open(cfg_path, encoding="utf-8") as handle:
        text = handle.read()
    names = set(re.findall(r'\b(?:set|reset|is)b?flag\(\s*"(\w+)"', text))
    names |= set(re.findall(r'modparam\(\s*"\w+"\s*,\s*"\w*b?flag\w*"\s*,\s*"(\w+)"\s*\)', text))
    return names


def declared_statistics(cfg_path: str = CFG) -> Set[str]:
    with open(cfg_path, encoding="utf-8") as handle:
        return set(re.findall(r'modparam\(\s*"statistics"\s*,\s*"variable"\s*,\s*"(\w+)"\s*\)', handle.read()))


def digest_response(creds: Dict[str, str], password: str, method: str) -> str:
    """RFC 2617 response, MD5, with or without qop=auth."""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # SIP digest is MD5 (RFC 2617)

    ha1 = md5(f"{creds.get('username')}:{creds.get('realm')}:{password}")
    ha2 = md5(f"{method}:{creds.get('uri')}")
    if creds.get("qop") == "auth":
        return md5(f"{ha1}:{creds.get('nonce')}:{creds.get('nc')}:{creds.get('cnonce')}:auth:{ha2}")
    return md5(f"{ha1}:{creds.get('nonce')}:{ha2}")


def declared_tables(cfg_path: str = CFG) -> Set[str]:
    """usrloc tables the cfg names in save()/lookup(): only those exist at run time.

    usrloc creates a table while the script is fixed up at start-up; one first named
    from Python's call_function fails ("cannot register new domain during runtime").
    """
    with open(cfg_path, encoding="utf-8") as handle:
        return set(re.findall(r'\b(?:save|lookup)\(\s*"(\w+)"', handle.read()))


def onreply_avps(cfg_path: str = CFG) -> bool:
    """Whether onreply routes see the transaction's AVPs (tm's onreply_avp_mode, default 0)."""
    with open(cfg_path, encoding="utf-8") as handle:
        return re.search(r'modparam\(\s*"tm"\s*,\s*"onreply_avp_mode"\s*,\s*1\s*\)', handle.read()) is not None


def relay_replies_itself(cfg_path: str = CFG) -> bool:
    """Whether route[relay]'s t_relay() answers a failure itself (tm's 500) before the cfg's 503 can."""
    with open(cfg_path, encoding="utf-8") as handle:
        relay = re.search(r"route\[relay\]\s*\{(.*?)\n\}", handle.read(), re.S)
    return relay is None or "no-auto-477" not in relay.group(1)


def loads_rpid(cfg_path: str = CFG) -> bool:
    """Whether auth_db loads its default extra credential, the rpid column our subscriber table lacks."""
    with open(cfg_path, encoding="utf-8") as handle:
        return re.search(r'modparam\(\s*"auth_db"\s*,\s*"load_credentials"\s*,\s*""\s*\)', handle.read()) is None


def clears_routed_var(cfg_path: str = CFG) -> bool:
    """Whether the request route clears $var(gw_lr) before Python runs ($var outlives the message)."""
    with open(cfg_path, encoding="utf-8") as handle:
        route = re.search(r"\nroute \{(.*?)\n\}", handle.read(), re.S)
    if route is None:
        return False
    body = route.group(1)
    return "\n\t$var(gw_lr) = 0;" in body and body.index("$var(gw_lr) = 0;") < body.find('python_exec("on_request"')


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


@dataclass
class Branch:
    index: int
    endpoint: Endpoint
    via_branch: str
    message: SipMessage
    bflags: Set[str]
    status: Optional[int] = None
    reply_route: Optional[str] = None
    """The onreply route the branch route armed for this branch (t_on_reply), if any."""


@dataclass
class Transaction:
    key: str
    request: SipMessage
    source: Endpoint
    flags: Set[str]
    avps: Dict[str, str]
    armed: Set[str]
    dialog: Optional[Dialog]
    branches: List[Branch] = field(default_factory=list)
    final: Optional[int] = None
    replies: List[SipMessage] = field(default_factory=list)
    serial: str = ""

    @property
    def method(self) -> str:
        return self.request.method


@dataclass
class Event:
    """One line of what OpenSIPS did, for the tracer and for tests."""

    kind: str  # route, call, exec, send, rtpengine, log
    text: str
    data: Any = None


@dataclass
class Context:
    """One run of a route over one message."""

    runtime: Gateway
    route: str
    msg: SipMessage
    source: Endpoint
    flags: Set[str] = field(default_factory=set)
    bflags: Set[str] = field(default_factory=set)
    avps: Dict[str, str] = field(default_factory=dict)
    vars: Dict[str, str] = field(default_factory=dict)
    dst_uri: Optional[str] = None
    extra_branches: List[Contact] = field(default_factory=list)
    tx: Optional[Transaction] = None
    dialog: Optional[Dialog] = None
    branch_index: int = 0
    record_route: bool = False
    received: Optional[str] = None
    direction: Optional[str] = None

    def set_ruri(self, uri: str) -> None:
        self.msg.ruri = uri

    # -- pseudo-variables ------------------------------------------------------------

    def pv_get(self, name: str, arg: Optional[str]) -> Any:
        """Value of $name(arg); None for null, ... for an unknown variable."""
        m = self.msg
        simple: Dict[str, Any] = {
            "si": self.source.host,
            "sp": self.source.port,
            "ci": m.call_id,
            "tt": m.to_tag,
            "ft": m.from_tag,
            "au": self.vars.get("auth_user"),
            "tU": _uri_user(m.address_uri("to")),
            "fU": _uri_user(m.address_uri("from")),
            "rm": m.method,
            "rb": m.body.decode("utf-8", errors="replace") if m.body else None,
            "T_branch_idx": self.branch_index,
            "bf": " ".join(sorted(self.bflags)),
            "mf": " ".join(sorted(self.flags)),
        }
        if name in simple:
            return simple[name]
        if name == "cl":
            value = m.header("content-length")
            return value.strip() if value is not None else None
        if name == "rs":
            return None if m.is_request else m.status
        if name in ("ru", "rU", "rd"):
            if not m.is_request:
                return None
            if name == "ru":
                return m.ruri
            uri = m.ruri.split(":", 1)[-1].split(";")[0]
            user, _, host = uri.rpartition("@")
            return (user or None) if name == "rU" else host.split(":")[0]
        if name in ("td", "fd"):
            # parse_to/parse_from keep the URI's bytes as they came: read the raw header, not sipmessage's URI
            value = m.header("to" if name == "td" else "from")
            if not value:
                return None
            address = _address_uri(value.split(",")[0])
            return address.split(":", 1)[-1].split(";", 1)[0].split("?", 1)[0].rpartition("@")[2].split(":", 1)[0]
        if name == "hdrcnt" and arg:
            return len(m.header_values(arg))
        if name == "du":
            return self.dst_uri
        if name == "socket_in" and arg == "proto":
            return self.source.proto
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
            return None if self.dialog is None else self.dialog.state
        return ...

    def pv_set(self, name: str, arg: Optional[str], value: str) -> None:
        if name == "avp" and arg:
            self.avps[arg] = value
        elif name == "var" and arg:
            self.runtime.script_vars[arg] = value
        elif name == "dlg_val" and arg:
            if self.dialog is None:
                self.runtime.log_error("ERROR:dialog: no dialog to store a value in")
            else:
                self.dialog.vals[arg] = value
        elif name == "ru" and self.msg.is_request:
            self.set_ruri(value)
        elif name == "du" and self.msg.is_request:
            self.dst_uri = value
        # anything else is read-only or unknown: ignored silently, as OpenSIPS does


class Gateway:
    """The fake OpenSIPS host with our cfg's routes."""

    def __init__(
        self,
        settings: Any = None,
        rtpengine: Optional[Backend] = None,
        address: Endpoint = Endpoint("udp", "127.0.0.1", 5060),
        strict: bool = True,
        cfg_path: str = CFG,
    ) -> None:
        self.address = address
        self.strict = strict
        self.rtpengine: Backend = rtpengine if rtpengine is not None else MemoryEngine()
        self.flags_declared = declared_flags(cfg_path)
        self.tables_declared = declared_tables(cfg_path)
        self.reply_sees_avps = onreply_avps(cfg_path)
        self.relay_replies_itself = relay_replies_itself(cfg_path)
        self.clears_routed_var = clears_routed_var(cfg_path)
        self.facts = exec_arguments(cfg_path)
        self.private_sdp = private_sdp_test(cfg_path)
        self.loads_rpid = loads_rpid(cfg_path)
        #: $var(...): one process's, kept from one message to the next (as OpenSIPS keeps them).
        self.script_vars: Dict[str, str] = {}
        self.location: Dict[str, List[Contact]] = {}
        self.dialogs: Dict[str, Dialog] = {}
        self.transactions: Dict[str, Transaction] = {}
        self.completed: Dict[str, Transaction] = {}
        self.events: List[Event] = []
        self.errors: List[str] = []
        self.counts: Counter[str] = Counter()
        self.omitted: List[Tuple[str, int, str]] = []
        self.copies = 0
        self.pending_error: Optional[str] = None
        self.poisoned: Optional[str] = None
        self.python_failures = 0
        self.current: Optional[Context] = None
        self._ids = itertools.count(1)
        self.subscribers: Dict[Tuple[str, str], str] = {}
        self.nonces: Set[str] = set()
        self.statistics: Counter[str] = Counter()
        self.statistics_declared = declared_statistics(cfg_path)
        self._pending_out: List[Tuple[Endpoint, SipMessage]] = []
        self.router = self._load(settings)

    # -- loading, as modules/python does ---------------------------------------------

    def _load(self, settings: Any) -> Any:
        opensips_module.install(self.log_error)
        if PYSCRIPTS not in sys.path:
            sys.path.insert(0, PYSCRIPTS)
        entry = importlib.import_module("opensips_entry")
        if settings is None:
            # mod_init gives the C library the "C" LC_CTYPE OpenSIPS runs in (Py_Initialize set the
            # environment's); this test process keeps its own.
            kept = locale.setlocale(locale.LC_CTYPE)
            try:
                router = entry.mod_init()
            finally:
                locale.setlocale(locale.LC_CTYPE, kept)
        else:
            from gateway.host import Router

            router = Router(settings, opensips_module.LM_ERR)
        if router.child_init(1) != 0:
            raise HostFault("child_init did not return 0")
        return router

    # -- bookkeeping -----------------------------------------------------------------

    def log_error(self, text: str) -> None:
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
        """modules/python's python_exec(method [, arg]): ``arg`` is the cfg's format string, printed first."""
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
        text = None if arg is None else format_pvs(ctx, arg)
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
        if msg.is_request:
            self._request_route(msg, source, out)
        else:
            self._reply(msg, source, out)
        return out

    # -- request route (opensips.cfg: route) --------------------------------------------

    def _request_route(self, msg: SipMessage, source: Endpoint, out: List[Tuple[Endpoint, SipMessage]]) -> None:
        ctx = Context(self, "request", msg, source)
        max_forwards = msg.header("max-forwards")
        if max_forwards is not None and max_forwards.strip() == "0":
            self._reply_to(ctx, 483, "Too Many Hops", out)
            return
        if self.clears_routed_var:
            self.script_vars["gw_lr"] = "0"
        self.script_vars["gw_nat"] = "1" if self.cfg_call(ctx, "nat_uac_test", NAT_TESTS) > 0 else "0"
        self._body_fact(ctx)
        if msg.to_tag:
            self._in_dialog(ctx, out)
            self._drop_unattached_dialog(ctx)
            return
        # The SDP's private addresses, natively, for an INVITE of a SIP caller not behind NAT.
        self.script_vars["gw_private"] = "0"
        if self.script_vars["gw_nat"] == "0" and msg.method == "INVITE" and source.proto not in ("ws", "wss"):
            # route.c's make_nt_copy + regexec: the body as bytes, up to the first NUL.
            body = msg.body.decode("latin-1").split("\0", 1)[0]
            if self.private_sdp is not None and self.private_sdp.search(body):
                self.script_vars["gw_private"] = "1"
        do = self.python_exec("on_request", ctx, self.facts.get("on_request"))
        if do < 0:
            self._python_failed(ctx, out)
        elif self._act(ctx, do, out):
            self._verdict(ctx, do, out)
        self._drop_unattached_dialog(ctx)

    @staticmethod
    def _has_body(ctx: Context) -> bool:
        """The cfg's ``$cl > 0`` (false for a missing Content-Length)."""
        length = ctx.pv_get("cl", None)
        return length is not None and length.isdigit() and int(length) > 0

    def _body_fact(self, ctx: Context) -> None:
        """The cfg's ``$var(gw_body) = 0; if ($cl > 0) $var(gw_body) = 1;``"""
        self.script_vars["gw_body"] = "1" if self._has_body(ctx) else "0"

    def cfg_call(self, ctx: Context, name: str, *args: Optional[str]) -> int:
        """A function the cfg calls itself (no host call from Python): shown in traces as ``cfg name(...)``."""
        event = Event("call", f"cfg {name}({', '.join('None' if a is None else repr(a) for a in args)})")
        self.events.append(event)
        result = int(getattr(self, "fn_" + name)(ctx, *args))
        event.text += f" -> {result}"
        event.data = (name, args, result)
        return result

    def _act(self, ctx: Context, do: int, out: List[Tuple[Endpoint, SipMessage]]) -> bool:
        """opensips.cfg route[gw_act]: what the router asked for; False when the script ended there."""
        for bit, name, arg in (
            (DO_SRC_WS, "setflag", "SRC_WS"),
            (DO_SRC_NAT, "setflag", "SRC_NAT"),
            (DO_FORCE_RPORT, "force_rport", None),
            (DO_FIX_CONTACT, "fix_nated_contact", None),
            (DO_FIX_REGISTER, "fix_nated_register", None),
        ):
            if do & bit:
                self.cfg_call(ctx, name, *(() if arg is None else (arg,)))
        if do & (DO_AUTH_WWW | DO_AUTH_PROXY) and not self._auth(ctx, do):
            return False
        for bit, name, arg in ((DO_BFLAG_WEBRTC, "setbflag", "WEBRTC"), (DO_BFLAG_NATED, "setbflag", "NATED")):
            if do & bit:
                self.cfg_call(ctx, name, arg)
        if do & DO_SAVE:
            self.cfg_call(ctx, "save", "location")
            return False
        if do & DO_LOOKUP:
            found = self.cfg_call(ctx, "lookup", "location")
            if found < 0:
                self.script_vars["gw_found"] = str(found)
                self._verdict(ctx, self.python_exec("on_lookup_failure", ctx, self.facts.get("on_lookup_failure")), out)
                return False
        for bit, name in (
            (DO_CREATE_DIALOG, "create_dialog"),
            (DO_RECORD_ROUTE, "record_route"),
            (DO_TOPOLOGY_HIDING, "topology_hiding"),
        ):
            if do & bit:
                self.cfg_call(ctx, name)
        if do & DO_STORE_RECORD:
            ctx.pv_set("dlg_val", "gw", self.script_vars.get("gw_record", ""))
        self._media(ctx, do)
        return True

    def _auth(self, ctx: Context, do: int) -> bool:
        """opensips.cfg route[gw_auth]: digest check in $var(gw_realm); False when it answered the request."""
        realm = self.script_vars.get("gw_realm", "")
        www = bool(do & DO_AUTH_WWW)
        kind = "www" if www else "proxy"
        if self.cfg_call(ctx, f"{kind}_authorize", realm, "subscriber") < 0:
            self.cfg_call(ctx, f"{kind}_challenge", realm, "auth", None)
            return False
        address_user = ctx.pv_get("tU" if www else "fU", None)
        if ctx.pv_get("au", None) != address_user or address_user is None:
            self.cfg_call(ctx, "sl_send_reply", "403", "Forbidden - Not Your Address")
            return False
        self.cfg_call(ctx, "consume_credentials")
        return True

    def _media(self, ctx: Context, do: int) -> int:
        """opensips.cfg route[gw_media]: rtpengine with the flags in the step's $var; 0 when not asked for."""
        if do & DO_RTP_OFFER:
            return self.cfg_call(ctx, "rtpengine_offer", self.script_vars.get("gw_rtp_offer", ""), None, None, None)
        if do & DO_RTP_ANSWER:
            return self.cfg_call(ctx, "rtpengine_answer", self.script_vars.get("gw_rtp_answer", ""), None, None, None)
        if do & DO_RTP_DELETE:
            return self.cfg_call(ctx, "rtpengine_delete", self.script_vars.get("gw_rtp_delete", ""), None)
        return 0

    def _offer(self, ctx: Context, planned: bool) -> int:
        """opensips.cfg branch_route[gw_branch]'s offer: the router's flags, or the plan's and the branch's index."""
        if planned:
            flags = f"{self.script_vars.get('gw_plain_offer', '')}{ctx.branch_index}"
        else:
            flags = self.script_vars.get("gw_rtp_offer", "")
        return self.cfg_call(ctx, "rtpengine_offer", flags, None, None, None)

    def _count(self, ctx: Context, do: int) -> None:
        """opensips.cfg route[gw_count]."""
        for bit, name in STATS_BY_BIT:
            if do & bit:
                self.cfg_call(ctx, "update_stat", name, "1")

    def _verdict(self, ctx: Context, do: int, out: List[Tuple[Endpoint, SipMessage]]) -> None:
        """opensips.cfg route[gw_verdict]."""
        verdict = do & 7 if do > 0 else do
        if verdict == RELAY:
            self._relay(ctx, set(), out)
        elif verdict == HANDLED:
            pass
        elif verdict == RELAY_INITIAL:
            self.script_vars["gw_call"] = str(do)
            self._relay(ctx, {"branch", "failure"}, out)
        elif verdict == REPLY:
            code = self.script_vars.get("gw_code", "")
            if not code.isdigit():
                raise HostFault(f"REPLY with $var(gw_code) = {code!r}: sl_send_reply needs an integer")
            self.cfg_call(ctx, "sl_send_reply", code, self.script_vars.get("gw_reason", ""))
        elif verdict == RELAY_TRACKED:
            self._relay(ctx, {"reply"}, out)
        elif verdict == RELAY_IF_TRANSACTION:
            if self.cfg_call(ctx, "t_check_trans") > 0:
                self._relay(ctx, set(), out)
        else:
            self._python_failed(ctx, out)

    def _in_dialog(self, ctx: Context, out: List[Tuple[Endpoint, SipMessage]]) -> None:
        """opensips.cfg route[gw_in_dialog]: match the dialog (ours only), then ask the router if needed."""
        if self.cfg_call(ctx, "loose_route") < 0 and self.cfg_call(ctx, "topology_hiding_match") < 0:
            self._unmatched(ctx, out)
            return
        if ctx.dialog is None:
            self._unmatched(ctx, out)
            return
        self.script_vars["gw_lr"] = "1"
        untracked = ctx.pv_get("dlg_val", "gw_track") is None
        if untracked and self.script_vars.get("gw_nat") == "0" and ctx.source.proto not in ("ws", "wss"):
            self._relay(ctx, set(), out)
            return
        quiet = ctx.pv_get("dlg_val", "gw_quiet")
        if self.script_vars.get("gw_body") == "0" and ctx.msg.method == "ACK" and quiet is not None:
            self._relay(ctx, set(), out)  # Do.QUIET_ACK: an ACK without a body of a dialog without browsers
            return
        if ctx.msg.method == "BYE" and quiet == "bye" and ctx.source.proto not in ("ws", "wss"):
            # Do.QUIET_BYE: a SIP peer's BYE of such a dialog whose answer took rtpengine
            if self.script_vars.get("gw_nat") == "1":
                self.cfg_call(ctx, "setflag", "SRC_NAT")
                self.cfg_call(ctx, "force_rport")
            self.cfg_call(ctx, "rtpengine_delete", None, None)
            self._relay(ctx, set(), out)
            return
        rc = self.python_exec("on_in_dialog", ctx, self.facts.get("on_in_dialog"))
        if rc < 0:
            self._python_failed(ctx, out)
            return
        if self._act(ctx, rc, out):
            self._verdict(ctx, rc, out)

    def pike_exempt(self, ctx: Context) -> bool:
        """opensips.cfg route[pike_exempt]: whether pike leaves this source uncounted (drop).  The answer
        for the last source is kept, once the router has written the trusted sources."""
        source = ctx.source.host
        if self.script_vars.get("gw_pike_source") != source:
            if "gw_trusted" not in self.script_vars:
                self.python_exec("is_trusted", ctx, self.facts.get("is_trusted"))
            trusted = self.script_vars.get("gw_trusted")
            self.script_vars["gw_pike_drop"] = "1" if trusted is not None and f" {source} " in trusted else "0"
            if trusted is not None:
                self.script_vars["gw_pike_source"] = source
        return self.script_vars.get("gw_pike_drop") == "1"

    def _unmatched(self, ctx: Context, out: List[Tuple[Endpoint, SipMessage]]) -> None:
        """opensips.cfg route[gw_unmatched]: none of our dialogs; an ACK is absorbed unless tm knows it."""
        if ctx.msg.method == "ACK":
            if self.cfg_call(ctx, "t_check_trans") > 0:
                self._relay(ctx, set(), out)
            return
        self.cfg_call(ctx, "sl_send_reply", "404", "Not Here")

    def _python_failed(self, ctx: Context, out: List[Tuple[Endpoint, SipMessage]]) -> None:
        """opensips.cfg route[python_failed]: count, log, and still serve in-dialog requests."""
        self.python_failures += 1
        self.events.append(Event("log", f"python routing failed for {ctx.msg.method} {ctx.msg.call_id}"))
        if ctx.msg.to_tag:
            routed = (
                self.script_vars.get("gw_lr") == "1"
                or self.fn_loose_route(ctx) > 0
                or self.fn_topology_hiding_match(ctx) > 0
            ) and ctx.dialog is not None
            if routed:
                if ctx.msg.method == "BYE":
                    self.fn_rtpengine_delete(ctx, None, None)
                self._relay(ctx, set(), out)
            elif ctx.msg.method != "ACK":
                self._reply_to(ctx, 404, "Not Here", out)
        elif ctx.msg.method != "ACK":
            self._reply_to(ctx, 500, "Server Error - Routing Failed", out)

    def _drop_unattached_dialog(self, ctx: Context) -> None:
        dialog = ctx.dialog
        if (
            dialog is not None
            and dialog.state == "unconfirmed"
            and not any(t.dialog is dialog for t in self.transactions.values())
        ):
            self.dialogs.pop(dialog.did, None)

    # -- t_relay --------------------------------------------------------------------

    def _relay(self, ctx: Context, armed: Set[str], out: List[Tuple[Endpoint, SipMessage]]) -> None:
        msg = ctx.msg
        if msg.method == "ACK":
            self._forward(ctx, msg.copy(), out)
            return
        if msg.method == "CANCEL":
            tx = self._find_tx(msg, "INVITE")
            if tx is None:
                return
            self._reply_to(ctx, 200, "OK", out)
            self._cancel_pending(tx, out)
            return
        key = self._tx_key(msg, msg.method)
        if key in self.transactions or key in self.completed:
            self.events.append(Event("log", f"retransmission of {msg.method} absorbed by tm"))
            return
        tx = Transaction(key, msg.copy(), ctx.source, set(ctx.flags), ctx.avps, armed, ctx.dialog)
        tx.serial = self._new_id()
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
            reply_route = None
            plain = not ({"WEBRTC", "NATED"} & bctx.bflags)
            planned = False
            if "branch" in armed and plain and int(self.script_vars.get("gw_call", "0")) & DO_PLAIN_CONTACT:
                # opensips.cfg branch_route[gw_branch]: a plain contact's branch, planned with the request
                do = script_int(self.script_vars.get("gw_plain_do"))
                if do & DO_STAT_SIP_TO_SIP:
                    self._send_branch(tx, bctx, index, out, "gw_answered_sip_to_sip")
                    continue
                planned = True
                part = self.script_vars.get("gw_plain_branch", "")
                bctx.pv_set("dlg_val", "gw", f"{bctx.pv_get('dlg_val', 'gw') or ''};b{index}={part}")
            if "branch" in armed:
                if not planned:
                    do = self.python_exec("on_branch", bctx, self.facts.get("on_branch"))
                if do > 0 and do & DO_ARM_REPLY:
                    reply_route = "gw_reply_quiet" if do & DO_QUIET_REPLIES else "gw_reply"
                if do > 0 and do & DO_STAT_SIP_TO_SIP:
                    reply_route = "gw_answered_sip_to_sip"
                if do > 0 and do & DO_TRACK_DIALOG:
                    bctx.pv_set("dlg_val", "gw_track", "1")
                dropped = do < 0 or do & 7 == DROP or (bool(do & DO_RTP_OFFER) and self._offer(bctx, planned) < 0)
                if dropped:
                    self.events.append(Event("log", f"branch {index} dropped"))
                    continue
            self._send_branch(tx, bctx, index, out, reply_route)
        if not tx.branches:
            del self.transactions[key]
            if self.relay_replies_itself:
                self._reply_to(ctx, 500, "Server error occurred (1/TM)", out)
            else:
                self._reply_to(ctx, 503, "Service Unavailable", out)
            return
        if msg.method == "BYE" and ctx.dialog is not None:
            ctx.dialog.state = "deleted"
            self.dialogs.pop(ctx.dialog.did, None)

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
        tx.branches.append(Branch(index, endpoint, via_branch, message, bctx.bflags, reply_route=reply_route))
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
        route = "gw_reply" if "reply" in tx.armed else branch.reply_route
        if route == "gw_answered_sip_to_sip" and 200 <= status < 300 and ctx.pv_get("dlg_val", "gw_track"):
            route = "gw_reply"  # another branch took the media proxy: the router releases its session
        body = self._has_body(ctx)
        if route == "gw_reply" and status == 100 and not body:
            route = None  # onreply_route[gw_reply]: a 100 without a body needs nothing
        if route == "gw_reply_quiet":
            # onreply_route[gw_reply_quiet]: only 2xx and replies with a body go to the router
            route = "gw_reply" if 200 <= status < 300 or body else None
        if route == "gw_reply":
            self._body_fact(ctx)
            do = self.python_exec("on_reply", ctx, self.facts.get("on_reply"))
            if do > 0:
                if do & DO_FIX_CONTACT:
                    self.cfg_call(ctx, "fix_nated_contact")
                self._count(ctx, do)
                if do & DO_QUIET_ACK:
                    ctx.pv_set("dlg_val", "gw_quiet", "bye" if do & DO_QUIET_BYE else "ack")
                self._media(ctx, do)
        elif route == "gw_answered_sip_to_sip":
            # opensips.cfg onreply_route[gw_answered_sip_to_sip]: counted once per call.
            if 200 <= status < 300 and ctx.pv_get("dlg_val", "gw_counted") is None:
                ctx.pv_set("dlg_val", "gw_counted", "1")
                self.cfg_call(ctx, "update_stat", "calls_sip_to_sip", "1")
        if status == 100:
            return
        reply.remove_first("via")
        if status < 200:
            branch.status = status
            self._send(tx.source, reply, out)
            return
        branch.status = status
        if tx.final is not None and tx.final < 300 and status < 300:
            self._send(tx.source, reply, out)  # a second 2xx from another fork goes up too
            return
        if status < 300:
            tx.final = status
            self._confirm_dialog(tx, reply, source)
            self._send(tx.source, reply, out)
            if tx.method == "INVITE":
                self._cancel_pending(tx, out)
            self._finish(tx)
            return
        if tx.final is not None:
            return  # a late negative reply on another fork: absorbed after the reply route ran
        tx.replies.append(reply)
        if all(b.status is not None and b.status >= 200 for b in tx.branches) and tx.final is None:
            self._fail(tx, out)
            self._finish(tx)

    def timeout(self) -> List[Tuple[Endpoint, SipMessage]]:
        """tm's fr_timer/fr_inv_timer firing for every pending branch: a local 408, then the
        failure route (tm runs no reply route for a local timeout), then the best reply upstream."""
        out: List[Tuple[Endpoint, SipMessage]] = []
        self._pending_out = out
        for tx in list(self.transactions.values()):
            for branch in tx.branches:
                if branch.status is None or branch.status < 200:
                    branch.status = 408
                    tx.replies.append(self._local_reply(tx.request, 408, "Request Timeout"))
            if tx.final is None and tx.replies:
                self._fail(tx, out)
            self._finish(tx)
        return out

    def _fail(self, tx: Transaction, out: List[Tuple[Endpoint, SipMessage]]) -> None:
        """Every branch failed: tm picks the best reply (a 6xx first, else the lowest), runs the failure
        route, and sends that reply upstream; an unconfirmed dialog goes with the transaction."""
        best = min(tx.replies, key=lambda r: (0 if r.status >= 600 else 1, r.status))
        tx.final = best.status
        if "failure" in tx.armed:
            fctx = Context(
                self, "failure", tx.request.copy(), tx.source, tx.flags, set(), tx.avps, tx=tx, dialog=tx.dialog
            )
            do = self.python_exec("on_failure", fctx, self.facts.get("on_failure"))
            if do > 0:
                self._media(fctx, do)
        if tx.dialog is not None and tx.method == "INVITE" and tx.dialog.state == "unconfirmed":
            self.dialogs.pop(tx.dialog.did, None)
            tx.dialog.state = "deleted"
        self._send(tx.source, best, out)

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
        self._send(ctx.source, reply, out)
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
        return 1

    def fn_has_totag(self, ctx: Context) -> int:
        return 1 if ctx.msg.to_tag else -1

    def fn_is_method(self, ctx: Context, methods: str) -> int:
        return 1 if ctx.msg.method in methods.split("|") else -1

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
        ctx.received = f"sip:{src.host}:{src.port}" + ("" if src.proto == "udp" else f";transport={src.proto}")
        return 1

    def fn_fix_nated_contact(self, ctx: Context, param: Optional[str] = None) -> int:
        value = ctx.msg.header("contact")
        if value is None or value.strip() == "*":
            return -1
        match = re.search(r"(sips?:)([^@;>]+@)?([^;>?]+)", value)
        if match is None:
            return -1
        src = ctx.source
        fixed = value[: match.start(3)] + f"{src.host}:{src.port}" + value[match.end(3) :]
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
        user = (msg.address_uri("to") or "").split(":", 1)[-1].split("@")[0]
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
                contacts[:] = [c for c in contacts if c.uri != uri]
                if expires > 0:
                    contacts.append(Contact(uri, ctx.received, set(ctx.bflags), expires))
        reply = self._reply_to(ctx, 200, "OK", self._pending_out)
        for c in contacts:
            reply.headers.append(("Contact", f"<{c.uri}>;expires={c.expires}"))
        return 1

    def _table(self, domain: str) -> None:
        if domain not in self.tables_declared:
            # the fixup fails; call_function surfaces it as SystemError, the reason lost
            raise SystemError(f"usrloc table {domain!r} not named in the cfg: can't register new domain during runtime")

    def fn_lookup(self, ctx: Context, domain: str, flags: Optional[str] = None, aor: Optional[str] = None) -> int:
        self._table(domain)
        user = ctx.msg.ruri.split(":", 1)[-1].split(";")[0].rpartition("@")[0]
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
            key = self._tx_key(ctx.msg, "INVITE")
            return 0 if key in self.transactions or key in self.completed else -1
        return 1 if self._find_tx(ctx.msg, ctx.msg.method) is not None else -1

    def fn_sl_send_reply(self, ctx: Context, code: str, reason: str) -> int:
        self._reply_to(ctx, int(code), reason, self._pending_out)
        return 1

    fn_send_reply = fn_sl_send_reply

    # auth, auth_db (digest, RFC 2617 with qop=auth), statistics

    def _credentials(self, ctx: Context, header: str) -> Optional[Dict[str, str]]:
        value = ctx.msg.header(header)
        if value is None or not value.lower().startswith("digest "):
            return None
        return {k.lower(): a or b for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value[7:])}

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

    def _rtpengine(self, op: str, ctx: Context, flags: Optional[str]) -> int:
        try:
            ng = ng_command(op, flags, ctx.msg, ctx.source.host)
        except FlagError as exc:
            self.log_error(f"ERROR:rtpengine: {exc}")
            return -1
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

    def sessions(self) -> List[Any]:
        engine = self.rtpengine
        return list(getattr(engine, "sessions", {}).values())


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
    sent_by = parts[1].split(";", 1)[0].strip() if len(parts) > 1 else ""
    host, _, port = sent_by.partition(":")
    return host, int(port) if port.isdigit() else 5060
