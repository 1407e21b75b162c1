"""The thin adapter between OpenSIPS's python module and the decision core.

Each ``on_*`` method is one OpenSIPS route (``python_exec("on_request")`` and so
on).  It reads the facts it needs in as few host calls as it can (one
``get_pseudoVar`` formats several variables at once: about 1.8 us, against
about 4 us for each ``call_function``), asks ``core`` what to do, and does it.

Host rules this file keeps (FACTS.md):
- every route returns a non-zero int (0 would end the script like ``exit``) and
  never lets an exception escape or stay pending;
- no ``msg`` (and never ``msg.copy()``) is kept past the call;
- ``call_function`` gets only str or None, integers as decimal strings, and
  every optional parameter of integer or variable type explicitly as None:
  leaving one out segfaults the worker.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Tuple

from . import core
from .model import CallRecord, Exchange, MediaAction, Source, Step, Verdict, flow_of
from .profiles import Profiles
from .sdp import has_private_address, is_sdp
from .settings import Settings


class Msg(Protocol):
    """The ``msg`` object OpenSIPS's python module passes (python_msgobj.c; not importable).

    Typed so that mypy refuses what the host refuses: ``call_function`` takes str or None only.
    """

    @property
    def Type(self) -> str: ...  # noqa: N802
    @property
    def Method(self) -> Optional[str]: ...  # noqa: N802
    @property
    def RURI(self) -> Optional[str]: ...  # noqa: N802
    @property
    def Status(self) -> Optional[str]: ...  # noqa: N802
    @property
    def src_address(self) -> Tuple[str, int]: ...
    def getHeader(self, name: str) -> Optional[str]: ...  # noqa: N802
    def call_function(self, name: str, *args: Optional[str]) -> int: ...
    def get_pseudoVar(self, fmt: str) -> Optional[str]: ...  # noqa: N802
    def set_pseudoVar(self, name: str, value: str) -> None: ...  # noqa: N802
    def set_dst_uri(self, uri: str) -> None: ...


NULL = "<null>"  # what get_pseudoVar returns for an unset variable
SEP = "|"  # not allowed unescaped in SIP URIs, tags or our own records
DIALOG_RECORD = "$dlg_val(gw)"
EXCHANGE_AVP = "$avp(gw_tx)"
ROUTED_VAR = "$var(gw_lr)"

REQUEST_FACTS = "$socket_in(proto)|$cl|$tt"
BRANCH_FACTS = "$T_branch_idx|$bf|" + DIALOG_RECORD
REPLY_FACTS = "$socket_in(proto)|$T_branch_idx|$cl|$rm|" + EXCHANGE_AVP + "|" + DIALOG_RECORD
SEQUENTIAL_FACTS = "$DLG_status|$DLG_dir|" + DIALOG_RECORD


def split_facts(text: Optional[str], count: int) -> list[str]:
    """Split a get_pseudoVar result into ``count`` fields; the last one keeps any separators."""
    fields = (text or "").split(SEP, count - 1)
    return fields + [NULL] * (count - len(fields))


def as_int(text: str, default: int = 0) -> int:
    return int(text) if text.isdigit() else default


def optional(text: str) -> Optional[str]:
    return None if text in (NULL, "") else text


class Router:
    """The handler object ``mod_init`` returns: one method per OpenSIPS route."""

    def __init__(self, settings: Settings, log: Callable[[str], Any]) -> None:
        self.settings = settings
        self.profiles: Profiles = settings.profiles
        self.log = log

    # -- entry points -----------------------------------------------------------------

    def child_init(self, rank: int) -> int:
        return 0  # unlike routes, child_init reports success with 0

    def on_request(self, msg: Msg) -> int:
        return self._guard("request", self._request, msg)

    def on_branch(self, msg: Msg) -> int:
        return self._guard("branch", self._branch, msg)

    def on_reply(self, msg: Msg) -> int:
        return self._guard("reply", self._reply, msg)

    def on_failure(self, msg: Msg) -> int:
        return self._guard("failure", self._failure, msg)

    def is_trusted(self, msg: Msg) -> int:
        """pike's check route: 1 exempts a trusted source (gateway.ini trusted_sources) from flood counting."""
        try:
            return 1 if msg.src_address[0] in self.settings.trusted_sources else -1
        except Exception:  # noqa: BLE001
            return -1

    def _guard(self, route: str, handler: Callable[[Msg], int], msg: Msg) -> int:
        try:
            result = int(handler(msg))
            return result if result else int(Verdict.FAILED)
        except UnicodeDecodeError as exc:
            # The module decodes every str as strict UTF-8: such a message is the sender's fault.
            return self._undecodable(route, msg, exc)
        except Exception as exc:  # noqa: BLE001 - nothing may escape into OpenSIPS
            self._log_failure(route, msg, exc)
            return int(Verdict.FAILED)

    def _undecodable(self, route: str, msg: Msg, exc: UnicodeDecodeError) -> int:
        try:
            if route != "request" or msg.call_function("has_totag") > 0:
                return int(Verdict.FAILED) if route == "request" else 1  # in-dialog: the fail-safe routes it
            self.log(f"gateway: refusing a request that is not UTF-8 from {msg.src_address}: {exc.reason}\n")
            msg.call_function("sl_send_reply", "400", "Bad Request - Not UTF-8")
            return int(Verdict.HANDLED)
        except Exception as inner:  # noqa: BLE001
            self._log_failure(route, msg, inner)
            return int(Verdict.FAILED)

    def _log_failure(self, route: str, msg: Msg, exc: BaseException) -> None:
        try:
            call_id = msg.getHeader("Call-ID") or msg.getHeader("i")
        except Exception:  # noqa: BLE001
            call_id = None
        try:
            self.log(f"gateway: {route} route failed for Call-ID {call_id}: {type(exc).__name__}: {exc}\n")
        except Exception:  # noqa: BLE001
            pass

    # -- requests ---------------------------------------------------------------------

    def _request(self, msg: Msg) -> int:
        method = msg.Method or ""
        proto, length, to_tag = split_facts(msg.get_pseudoVar(REQUEST_FACTS), 3)
        source = core.source_of(proto)
        if source is Source.WEBSOCKET:
            behind_nat = True
        else:
            behind_nat = msg.call_function("nat_uac_test", core.NAT_TESTS) == 1
        for flag in core.SOURCE_FLAGS.get(source, (core.NAT_FLAG,) if behind_nat else ()):
            msg.call_function("setflag", flag)
        if behind_nat:
            if source is Source.SIP:
                msg.call_function("force_rport")
            fix = core.contact_fix(method, behind_nat)
            if fix and _has_contact(msg):
                msg.call_function(fix)
        has_sdp = as_int(length) > 0 and is_sdp(_content_type(msg))
        if optional(to_tag) is not None:
            return self._sequential(msg, method, has_sdp)
        if method == "CANCEL" or method == "ACK":
            # Only for a transaction we know; anything else is absorbed.
            return int(Verdict.RELAY if msg.call_function("t_check_trans") > 0 else Verdict.HANDLED)
        flow = flow_of(proto, *msg.src_address) if source is Source.WEBSOCKET else None
        return self._initial(msg, method, source, behind_nat, has_sdp, flow)

    def _initial(
        self, msg: Msg, method: str, source: Source, behind_nat: bool, has_sdp: bool, flow: Optional[str]
    ) -> int:
        ruri_user, ruri_domain = _user_domain(msg.RURI)
        _to_user, to_domain = _user_domain(_header_uri(msg, "To", "t"))
        _, from_domain = _user_domain(_header_uri(msg, "From", "f"))
        domain = to_domain if method == "REGISTER" else ruri_domain
        routing = core.route_initial(method, ruri_user, domain, from_domain, msg.src_address[0], self.settings)
        if routing.reply is not None:
            return self._reply_locally(msg, *routing.reply)
        challenge = core.challenge_for(method, from_domain, msg.src_address[0], self.settings)
        if challenge is not None and not self._authenticated(msg, challenge):
            return int(Verdict.HANDLED)
        if method == "REGISTER":
            for flag in core.REGISTRATION_BFLAGS[core.registration_of(source, behind_nat)]:
                msg.call_function("setbflag", flag, None)
            msg.call_function("save", "location")  # replies to the REGISTER itself
            return int(Verdict.HANDLED)
        if routing.target is core.Target.LOCATION:
            found = msg.call_function("lookup", "location")
            if found < 0:
                return self._reply_locally(msg, *core.lookup_failure(found))
        elif self.settings.sip_destination is not None:  # route_initial chose it only when set
            msg.set_dst_uri(self.settings.sip_destination)
        if method != "INVITE":
            return int(Verdict.RELAY)
        private_sdp = False
        if has_sdp and source is Source.SIP:
            try:
                private_sdp = has_private_address(msg.get_pseudoVar("$rb") or "")
            except UnicodeDecodeError:  # e.g. a Latin-1 session name: let nathelper look
                private_sdp = msg.call_function("nat_uac_test", "private-sdp") == 1
        msg.call_function("create_dialog")
        if self.settings.topology_hiding:
            msg.call_function("topology_hiding")
        else:
            msg.call_function("record_route")
        record = CallRecord(core.party_of(source, behind_nat, flow), has_sdp, private_sdp)
        msg.set_pseudoVar(DIALOG_RECORD, str(record))
        return int(Verdict.RELAY_INITIAL)

    def _authenticated(self, msg: Msg, challenge: core.Challenge) -> bool:
        """Digest check against the subscriber table; answers the request itself when it fails."""
        realm = self.settings.auth_realm
        if msg.call_function(challenge.authorize, realm, core.SUBSCRIBERS) < 0:
            msg.call_function(challenge.challenge, realm, "auth", None)
            return False
        auth_user, address_user = split_facts(msg.get_pseudoVar("$au|" + challenge.address_user), 2)
        if not core.owns_address(auth_user, address_user):
            # Someone else's address: a valid user may not register or call as another.
            self._reply_locally(msg, 403, "Forbidden - Not Your Address")
            return False
        msg.call_function("consume_credentials")  # our users' passwords' hashes go no further
        return True

    def _sequential(self, msg: Msg, method: str, has_sdp: bool) -> int:
        matched = msg.call_function("topology_hiding_match" if self.settings.topology_hiding else "loose_route")
        facts = msg.get_pseudoVar(SEQUENTIAL_FACTS) if matched > 0 else None
        status, direction, text = split_facts(facts, 3)
        if optional(status) is None:
            # loose_route() follows any Route, ours or not: a request of none of our dialogs
            # (a forged To-tag and Route) would make us an open relay.
            if method == "ACK":
                return int(Verdict.RELAY if msg.call_function("t_check_trans") > 0 else Verdict.HANDLED)
            return self._reply_locally(msg, 404, "Not Here")
        msg.set_pseudoVar(ROUTED_VAR, "1")  # the cfg's fail-safe must not loose_route twice
        record = self._record(text)
        plan = core.plan_sequential(record, direction != "upstream", method, has_sdp, self.profiles)
        if plan.dst_uri is not None:
            msg.set_dst_uri(plan.dst_uri)
        if plan.action is not None:
            self._media(msg, plan.action)
        if plan.exchange is not None:
            msg.set_pseudoVar(EXCHANGE_AVP, str(plan.exchange))
            return int(Verdict.RELAY_TRACKED)
        return int(Verdict.RELAY)

    # -- branches, replies, failures --------------------------------------------------

    def _branch(self, msg: Msg) -> int:
        index, bflags, text = split_facts(msg.get_pseudoVar(BRANCH_FACTS), 3)
        record = self._record(text)
        if record is None:
            return 1
        plan = core.plan_branch(record, as_int(index), core.registration_from_bflags(bflags), self.profiles)
        msg.set_pseudoVar(DIALOG_RECORD, str(plan.record))
        if plan.action is not None and self._media(msg, plan.action) < 0:
            # No media proxy for a leg that needs one: the branch cannot work.
            return int(Verdict.DROP)
        return 1

    def _reply(self, msg: Msg) -> int:
        status = as_int(msg.Status or "")
        proto, index, length, method, exchange_text, record_text = split_facts(msg.get_pseudoVar(REPLY_FACTS), 6)
        has_sdp = as_int(length) > 0 and is_sdp(_content_type(msg))
        exchange = optional(exchange_text)
        if exchange is not None:
            sequential = Exchange.parse(exchange)
            action = core.plan_sequential_reply(sequential, status, has_sdp, self.profiles)
            if sequential.receiver.behind_nat and 100 < status < 300 and _has_contact(msg):
                msg.call_function("fix_nated_contact")
            if action is not None:
                self._media(msg, action)
            return 1
        record = self._record(record_text)
        if method != "INVITE" or record is None:
            return 1
        flow = flow_of(proto, *msg.src_address) if core.source_of(proto) is Source.WEBSOCKET else None
        plan = core.plan_initial_reply(record, as_int(index), status, has_sdp, self.profiles, flow)
        if plan.fix_contact and _has_contact(msg):
            msg.call_function("fix_nated_contact")
        if plan.record is not None:
            msg.set_pseudoVar(DIALOG_RECORD, str(plan.record))
        for name in plan.stats:
            msg.call_function("update_stat", name, "1")
        if plan.action is not None:
            self._media(msg, plan.action)
        return 1

    def _failure(self, msg: Msg) -> int:
        action = core.plan_failure(self._record(msg.get_pseudoVar(DIALOG_RECORD)), self.profiles)
        if action is not None:
            self._media(msg, action)
        return 1

    # -- host calls -------------------------------------------------------------------

    def _media(self, msg: Msg, action: MediaAction) -> int:
        flags = action.flags or None
        if action.step is Step.DELETE:
            result: int = msg.call_function("rtpengine_delete", flags, None)
        else:
            result = msg.call_function(action.function, flags, None, None, None)
        if result < 0:
            self.log(f"gateway: {action.function} failed ({result}) for Call-ID {_call_id(msg)}\n")
        return result

    def _reply_locally(self, msg: Msg, code: int, reason: str) -> int:
        msg.call_function("sl_send_reply", str(code), reason)
        return int(Verdict.HANDLED)

    def _record(self, text: Optional[str]) -> Optional[CallRecord]:
        if text is None or optional(text) is None:
            return None
        try:
            return CallRecord.parse(text)
        except ValueError as exc:
            self.log(f"gateway: ignoring unreadable dialog record: {exc}\n")
            return None


# -- message helpers (cheap attribute reads; compact header forms are not expanded by getHeader) --


def _header(msg: Msg, name: str, compact: str) -> Optional[str]:
    value: Optional[str] = msg.getHeader(name)
    return value if value is not None else msg.getHeader(compact)


def _has_contact(msg: Msg) -> bool:
    return _header(msg, "Contact", "m") is not None


def _content_type(msg: Msg) -> Optional[str]:
    return _header(msg, "Content-Type", "c")


def _call_id(msg: Msg) -> Optional[str]:
    return _header(msg, "Call-ID", "i")


def _header_uri(msg: Msg, name: str, compact: str) -> str:
    value = _header(msg, name, compact) or ""
    if "<" in value:
        return value.split("<", 1)[1].split(">", 1)[0]
    return value.split(";", 1)[0].strip()


def _user_domain(uri: Optional[str]) -> Tuple[str, str]:
    """(user, host) of a SIP URI, lower-cased host, without port or parameters; ('', '') for junk."""
    if not uri:
        return "", ""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    user, _, host = rest.rpartition("@")
    if host.startswith("["):
        host = host.split("]", 1)[0] + "]"
    else:
        host = host.split(":", 1)[0]
    return user, host.lower()
