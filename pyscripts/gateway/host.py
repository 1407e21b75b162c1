"""The thin adapter between OpenSIPS's python module and the decision core.

Each ``on_*`` method is one OpenSIPS route.  The cfg formats the facts a route
needs into python_exec's argument (``python_exec("on_request", REQUEST_FACTS)``:
one string, one fact a line), so reading them costs no host call; the router
asks ``core`` what to do and answers with one int: the verdict in the low three
bits (``model.Verdict``) and the actions for the cfg to take above them
(``model.Do``: setflag, force_rport, fix_nated_*, digest auth, save, lookup,
create_dialog, record_route, rtpengine_*, t_on_reply, update_stat).  Values the
cfg needs for those actions (the rtpengine flags, the call record, a reply's
code, the auth realm) go in ``$var``s with set_pseudoVar, written only when
they change: a worker's ``$var`` keeps its value from one message to the next
(``HELD_VARS``).  Host calls from Python are dear (FACTS.md: call_function
about 4.2 us, get_pseudoVar about 1.8 us) and the cfg's own calls are not, so
the router makes no call_function and no get_pseudoVar: the cfg even tests the
SDP for private addresses itself (sdp.PRIVATE_SDP).  Reading nothing but the facts, each route's answer is a
pure function of them, kept and replayed (``Router._answer``).

The facts hold nothing a sender can fill with bytes that are not UTF-8: the
python module turns the argument into a str with PyUnicode_FromString, and
when that fails it returns -1 and leaves the UnicodeDecodeError pending in the
worker, where it breaks the next python_exec (python_exec.c, 3.6.8 and 4.0.1).
So the cfg passes lengths instead of the To-tag and R-URI user, and the
domains and Content-Type hex-encoded (``{s.encode.hexa}``); the rest are
numbers, tokens the parser checked ($rm) or values we wrote ourselves.

Host rules this file keeps (FACTS.md):
- every route returns a non-zero int (0 would end the script like ``exit``) and
  never lets an exception escape or stay pending;
- no ``msg`` (and never ``msg.copy()``) is kept past the call;
- ``call_function`` gets only str or None, integers as decimal strings, and
  every optional parameter of integer or variable type explicitly as None:
  leaving one out segfaults the worker.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, NamedTuple, Optional, Protocol, Tuple, TypeVar, cast

from . import core
from .model import CallRecord, Do, Exchange, MediaAction, Registration, Source, Step, Verdict, flow_of
from .profiles import Profiles
from .sdp import is_sdp
from .settings import Settings


class Msg(Protocol):
    """The ``msg`` object OpenSIPS's python module passes (python_msgobj.c; not importable).

    Typed so that mypy refuses what the host refuses: ``call_function`` takes str or None only.
    """

    @property
    def Type(self) -> str: ...  # noqa: N802
    @property
    def src_address(self) -> Tuple[str, int]: ...
    def getHeader(self, name: str) -> Optional[str]: ...  # noqa: N802
    def call_function(self, name: str, *args: Optional[str]) -> int: ...
    def get_pseudoVar(self, fmt: str) -> Optional[str]: ...  # noqa: N802
    def set_pseudoVar(self, name: str, value: str) -> None: ...  # noqa: N802
    def set_dst_uri(self, uri: str) -> None: ...


NULL = "<null>"  # what OpenSIPS prints for an unset variable
# Between the facts: a line break, which none of them can hold (see the module's docstring).
SEP = "\n"
DIALOG_RECORD = "$dlg_val(gw)"
EXCHANGE_AVP = "$avp(gw_tx)"
RECORD_VAR = "$var(gw_record)"
#: The rtpengine flags of each step, one $var a step (HELD_VARS: each keeps its last flags).
MEDIA_FLAGS_VARS = {
    Step.OFFER: "$var(gw_rtp_offer)",
    Step.REOFFER: "$var(gw_rtp_offer)",
    Step.ANSWER: "$var(gw_rtp_answer)",
    Step.DELETE: "$var(gw_rtp_delete)",
}
REPLY_CODE_VAR = "$var(gw_code)"
REPLY_REASON_VAR = "$var(gw_reason)"
REALM_VAR = "$var(gw_realm)"
NAT_VAR = "$var(gw_nat)"  # the cfg stores nat_uac_test(core.NAT_TESTS) here: 1 or 0
PRIVATE_VAR = "$var(gw_private)"  # and its own test of the SDP (sdp.PRIVATE_SDP) here: 1 or 0
BODY_VAR = "$var(gw_body)"  # 1 when $cl > 0 (not $cl itself: the facts of two calls differ less)
CONTENT_TYPE = "$(hdr(Content-Type){s.encode.hexa})"

# What the cfg passes to each route (opensips.cfg; tests/test_cfg.py keeps them equal).
REQUEST_FACTS = SEP.join(
    ("$rm", "$socket_in(proto)", NAT_VAR, PRIVATE_VAR, BODY_VAR, "$hdrcnt(Contact)", "$si", "$sp", "$(rU{s.len})",
     "$(rd{s.encode.hexa})", "$(td{s.encode.hexa})", "$(fd{s.encode.hexa})", CONTENT_TYPE)
)  # fmt: skip
IN_DIALOG_FACTS = SEP.join(
    ("$rm", "$socket_in(proto)", NAT_VAR, "$hdrcnt(Contact)", BODY_VAR, "$DLG_dir", DIALOG_RECORD, CONTENT_TYPE)
)
TRUSTED_VAR = "$var(gw_trusted)"
# A plain SIP contact's branch, planned with the initial INVITE (Do.PLAIN_CONTACT, Router._plain_plan):
PLAIN_DO_VAR = "$var(gw_plain_do)"  # the branch route's code
PLAIN_BRANCH_VAR = "$var(gw_plain_branch)"  # the branch's part of the call record, b<index>=<this>
PLAIN_OFFER_VAR = "$var(gw_plain_offer)"  # the offer's flags but the index, which the cfg adds
#: The $vars the router writes and the cfg only reads.  A worker's $var keeps its value from one message to
#: the next (opensips.cfg), and each worker has its own router (forked after mod_init) as it has its own
#: $vars: so a value the router wrote there last is not written again (Router._answer).
HELD_VARS = frozenset(
    (RECORD_VAR, REALM_VAR, REPLY_REASON_VAR, PLAIN_DO_VAR, PLAIN_BRANCH_VAR, PLAIN_OFFER_VAR)
) | frozenset(MEDIA_FLAGS_VARS.values())
BRANCH_FACTS = SEP.join(("$T_branch_idx", "$bf", DIALOG_RECORD))
REPLY_FACTS = SEP.join(
    ("$rs", "$socket_in(proto)", "$T_branch_idx", BODY_VAR, "$rm", "$hdrcnt(Contact)", "$si", "$sp", EXCHANGE_AVP,
     DIALOG_RECORD, CONTENT_TYPE)
)  # fmt: skip
FAILURE_FACTS = DIALOG_RECORD
LOOKUP_FAILURE_FACTS = "$var(gw_found)"
TRUSTED_FACTS = "$si"

#: The cfg's bit for each flag name core uses (SOURCE_FLAGS, NAT_FLAG, REGISTRATION_BFLAGS).
FLAG_BITS = {"SRC_WS": Do.SRC_WS, "SRC_NAT": Do.SRC_NAT, "WEBRTC": Do.BFLAG_WEBRTC, "NATED": Do.BFLAG_NATED}
#: The cfg's bit for each statistic core names (core.STATISTICS).
STAT_BITS = {
    "calls_web_to_web": Do.STAT_WEB_TO_WEB,
    "calls_web_to_sip": Do.STAT_WEB_TO_SIP,
    "calls_sip_to_web": Do.STAT_SIP_TO_WEB,
    "calls_sip_to_sip": Do.STAT_SIP_TO_SIP,
    "media_proxy_calls": Do.STAT_MEDIA_PROXY,
}
AUTH_BITS = {core.Challenge.WWW: Do.AUTH_WWW, core.Challenge.PROXY: Do.AUTH_PROXY}

_MEDIA_BITS = {
    Step.OFFER: Do.RTP_OFFER,
    Step.REOFFER: Do.RTP_OFFER,
    Step.ANSWER: Do.RTP_ANSWER,
    Step.DELETE: Do.RTP_DELETE,
}

DECISIONS_KEPT = 4096
_UNDECIDED = object()
T = TypeVar("T")


class Effects(NamedTuple):
    """What a route does for a decision: the code it returns, the variables it sets for the cfg,
    the destination it sets; for an initial INVITE, whether the call record is still to store."""

    code: int
    sets: Tuple[Tuple[str, str], ...] = ()
    dst_uri: Optional[str] = None
    needs_record: bool = False


def _bits(table: Dict[str, int], names: Tuple[str, ...]) -> int:
    bits = 0
    for name in names:
        bits |= table[name]
    return bits


def split_facts(text: Optional[str], count: int) -> list[str]:
    """Split the cfg's facts into ``count`` fields; the last one keeps any separators."""
    fields = (text or "").split(SEP, count - 1)
    return fields + [NULL] * (count - len(fields))


def as_int(text: str, default: int = 0) -> int:
    return int(text) if text.isdigit() else default


def optional(text: str) -> Optional[str]:
    return None if text in (NULL, "") else text


def trusted_list(sources: FrozenSet[str]) -> str:
    """The trusted sources as the cfg searches them: " a b c " (each between spaces)."""
    return " " + " ".join(sorted(sources)) + " "


def unhex(text: str) -> str:
    """A fact the cfg hex-encoded, as text; UnicodeDecodeError when the sender's bytes are not UTF-8."""
    if text == NULL:
        return ""
    return bytes.fromhex(text).decode("utf-8")


def sdp_type(text: str) -> bool:
    """Whether the hex-encoded Content-Type names SDP (bytes that are not UTF-8 name nothing we know)."""
    return text != NULL and is_sdp(bytes.fromhex(text).decode("utf-8", "replace"))


class Router:
    """The handler object ``mod_init`` returns: one method per OpenSIPS route."""

    def __init__(self, settings: Settings, log: Callable[[str], Any]) -> None:
        self.settings = settings
        self.profiles: Profiles = settings.profiles
        self.log = log
        self._decisions: Dict[Tuple[object, ...], object] = {}
        # Each route's answers by the very facts string (_answer).
        self._requests: Dict[str, Effects] = {}
        self._in_dialogs: Dict[str, Effects] = {}
        self._lookup_failures: Dict[str, Effects] = {}
        self._branches: Dict[str, Effects] = {}
        self._replies: Dict[str, Effects] = {}
        self._failures: Dict[str, Effects] = {}
        # What this worker's HELD_VARS hold, as the router last wrote them (it is their only writer).
        self.held: Dict[str, str] = {}

    # -- entry points -----------------------------------------------------------------

    def child_init(self, rank: int) -> int:
        return 0  # unlike routes, child_init reports success with 0

    def on_request(self, msg: Msg, facts: str = "") -> int:
        return self._answer(self._requests, "request", self._request, msg, facts)

    def on_in_dialog(self, msg: Msg, facts: str = "") -> int:
        return self._answer(self._in_dialogs, "in-dialog", self._in_dialog, msg, facts)

    def on_lookup_failure(self, msg: Msg, facts: str = "") -> int:
        return self._answer(self._lookup_failures, "lookup-failure", self._lookup_failure, msg, facts)

    def on_branch(self, msg: Msg, facts: str = "") -> int:
        return self._answer(self._branches, "branch", self._plan_branch, msg, facts)

    def on_reply(self, msg: Msg, facts: str = "") -> int:
        return self._answer(self._replies, "reply", self._reply, msg, facts)

    def on_failure(self, msg: Msg, facts: str = "") -> int:
        return self._answer(self._failures, "failure", self._plan_failure, msg, facts)

    def is_trusted(self, msg: Msg, facts: str = "") -> int:
        """pike's check route, the first time a worker runs it: the trusted sources (gateway.ini) go into
        this worker's $var(gw_trusted), " a b c ", which the cfg searches for " $si " natively from then
        on ($var values outlive the message).  1 when this source is one of them, -1 else."""
        try:
            msg.set_pseudoVar(TRUSTED_VAR, trusted_list(self.settings.trusted_sources))
        except Exception as exc:  # noqa: BLE001 - the cfg asks again next time
            self._log_failure("pike check", msg, exc)
        return 1 if facts in self.settings.trusted_sources else -1

    def _answer(
        self, answers: Dict[str, Effects], route: str, plan: Callable[[str], Effects], msg: Msg, facts: str
    ) -> int:
        """What the route does for these facts.  The router reads nothing but them (the cfg passes
        every fact a decision needs, the SDP's private addresses included), so a decision is a pure
        function of the facts string: taken once, kept (bounded; cleared when full) and replayed,
        which for a repeated kind of message is one dict lookup and the writes of what changed."""
        held = self.held
        try:
            effects = answers.get(facts)
            if effects is None:
                if not facts:
                    raise ValueError("no facts: the cfg must pass them as python_exec's second argument")
                effects = plan(facts)
                if not effects.code:
                    raise ValueError("no verdict: 0 would end the script like exit")
                if len(answers) >= DECISIONS_KEPT:
                    answers.clear()
                answers[facts] = effects = effects._replace(code=int(effects.code))
            for name, value in effects.sets:
                if name not in HELD_VARS:
                    msg.set_pseudoVar(name, value)
                elif held.get(name) != value:
                    held.pop(name, None)  # unknown until the write is done
                    msg.set_pseudoVar(name, value)
                    held[name] = value
            if effects.dst_uri is not None:
                msg.set_dst_uri(effects.dst_uri)
            return effects.code
        except Exception as exc:  # noqa: BLE001 - nothing may escape into OpenSIPS
            self._log_failure(route, msg, exc)
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

    def _request(self, facts: str) -> Effects:
        """An out-of-dialog request (the cfg matches in-dialog ones itself, then asks on_in_dialog)."""
        (method, proto, nat, private, body, contacts, src_ip, src_port, ruri_user, ruri_domain, to_domain,
         from_domain, content_type) = split_facts(facts, 13)  # fmt: skip
        has_contact = contacts not in ("0", NULL)
        # route_initial and challenge_for look at the source address only to trust it or not, and
        # at the user only for whether there is one: the decision is keyed on those, not on them.
        trusted = src_ip if src_ip in self.settings.trusted_sources else ""
        no_user = ruri_user in ("0", NULL, "")
        key: Tuple[object, ...] = (
            "initial", method, proto, nat, has_contact, no_user, ruri_domain, to_domain, from_domain, trusted
        )  # fmt: skip
        plan = self._decided(key, lambda: self._plan_initial(method, proto, nat, has_contact, no_user, ruri_domain,
                                                             to_domain, from_domain, trusted))  # fmt: skip
        if not plan.needs_record:
            return plan
        has_sdp = body == "1" and sdp_type(content_type)
        source = core.source_of(proto)
        # The cfg tests the SDP only where it matters (core.sdp_privacy_matters), natively.
        private_sdp = has_sdp and private == "1" and core.sdp_privacy_matters(source, nat == "1")
        flow = flow_of(proto, src_ip, as_int(src_port)) if source is Source.WEBSOCKET else None
        caller = core.party_of(source, nat == "1", flow)
        record = CallRecord(caller, has_sdp, private_sdp)
        key = ("plain", caller.leg, caller.behind_nat, has_sdp, private_sdp)  # not a browser's flow
        plain = self._decided(key, lambda: self._plain_plan(record))
        return Effects(plan.code | Do.PLAIN_CONTACT, ((RECORD_VAR, str(record)), *plain, *plan.sets), plan.dst_uri)

    def _plain_plan(self, record: CallRecord) -> Tuple[Tuple[str, str], ...]:
        """What a branch of this call to a plain SIP contact gets, for the cfg's branch route to do
        without asking (Do.PLAIN_CONTACT): the code, the branch's part of the record and the offer's
        flags but the index.  A branch without the media proxy stays off the record: only the count
        of its answer (plan_initial_reply knows a branch it has no record of)."""
        index = 0  # any index: the cfg puts the branch's own where the plan has this one
        plan = core.plan_branch(record, index, Registration.PLAIN_SIP, self.profiles)
        code = (PLAIN_DO_VAR, str(self._branch_effects(plan, index).code))
        branch = plan.record.branch(index)
        if branch is None or not branch.media_proxy:
            return (code,)  # Do.STAT_SIP_TO_SIP: the cfg counts its answer, nothing more
        if plan.action is None:  # a late offer: the callee's answer brings it
            return code, (PLAIN_BRANCH_VAR, branch.code)
        return code, (PLAIN_BRANCH_VAR, branch.code), (PLAIN_OFFER_VAR, core.unindexed(plan.action.flags, index))

    def _source_bits(self, method: str, proto: str, nat: str, has_contact: bool) -> Tuple[Source, bool, int]:
        """(source, behind NAT, the flags and NAT fixes to do) of any request."""
        source = core.source_of(proto)
        behind_nat = source is Source.WEBSOCKET or nat == "1"
        do = _bits(FLAG_BITS, core.SOURCE_FLAGS.get(source, (core.NAT_FLAG,) if behind_nat else ()))
        if behind_nat and source is Source.SIP:
            do |= Do.FORCE_RPORT
        fix = core.contact_fix(method, behind_nat) if has_contact else None
        if fix is not None:
            do |= Do.FIX_REGISTER if fix == "fix_nated_register" else Do.FIX_CONTACT
        return source, behind_nat, do

    def _plan_initial(
        self,
        method: str,
        proto: str,
        nat: str,
        has_contact: bool,
        no_user: bool,
        ruri_hex: str,
        to_hex: str,
        from_hex: str,
        trusted: str,
    ) -> Effects:
        """An out-of-dialog request, all but its call record (which needs the SDP and the flow)."""
        source, behind_nat, do = self._source_bits(method, proto, nat, has_contact)
        if method == "CANCEL" or method == "ACK":
            # Only for a transaction we know; anything else is absorbed.
            return Effects(Verdict.RELAY_IF_TRANSACTION | do)
        try:
            ruri_domain, to_domain, from_domain = unhex(ruri_hex), unhex(to_hex), unhex(from_hex)
        except UnicodeDecodeError:
            # The python module decodes every str as strict UTF-8: such a message is the sender's fault.
            return self._local_reply(400, "Bad Request - Not UTF-8", do=do)
        domain = to_domain if method == "REGISTER" else ruri_domain
        user = "" if no_user else "user"  # route_initial asks only whether there is one
        routing = core.route_initial(method, user, domain.lower(), from_domain.lower(), trusted, self.settings)
        if routing.reply is not None:
            return self._local_reply(*routing.reply, do=do)
        sets: Tuple[Tuple[str, str], ...] = ()
        challenge = core.challenge_for(method, from_domain.lower(), trusted, self.settings)
        if challenge is not None and self.settings.auth_realm is not None:
            do |= AUTH_BITS[challenge]
            sets = ((REALM_VAR, self.settings.auth_realm),)
        if method == "REGISTER":
            do |= _bits(FLAG_BITS, core.REGISTRATION_BFLAGS[core.registration_of(source, behind_nat)])
            return Effects(Verdict.HANDLED | do | Do.SAVE, sets)  # save() replies to the REGISTER itself
        dst_uri = None
        if routing.target is core.Target.LOCATION:
            do |= Do.LOOKUP
        else:
            dst_uri = self.settings.sip_destination
        if method != "INVITE":
            return Effects(Verdict.RELAY | do, sets, dst_uri)
        do |= Do.CREATE_DIALOG | Do.STORE_RECORD
        do |= Do.TOPOLOGY_HIDING if self.settings.topology_hiding else Do.RECORD_ROUTE
        return Effects(Verdict.RELAY_INITIAL | do, sets, dst_uri, needs_record=True)

    def _lookup_failure(self, facts: str) -> Effects:
        return self._local_reply(*core.lookup_failure(int(facts)))

    def _in_dialog(self, facts: str) -> Effects:
        """An in-dialog request of one of our dialogs, which the cfg matched (loose_route or
        topology_hiding_match, and $DLG_status).  The cfg relays without asking when the dialog has
        no branch through the media proxy (no $dlg_val(gw_track): see _plan_branch) and the sender is
        a SIP peer not behind NAT: for such a request there is nothing to do (tests/test_router.py)."""
        method, proto, nat, contacts, body, direction, text, content_type = split_facts(facts, 8)
        has_sdp = body == "1" and sdp_type(content_type)
        _source, _nat, flags = self._source_bits(method, proto, nat, contacts not in ("0", NULL))
        if core.ack_is_quiet(method, has_sdp):
            flags = 0
        plan = core.plan_sequential(self._record(text), direction != "upstream", method, has_sdp, self.profiles)
        sets, do = self._media(plan.action)
        do |= flags
        if plan.exchange is not None:
            sets += ((EXCHANGE_AVP, str(plan.exchange)),)
            return Effects(Verdict.RELAY_TRACKED | do, sets, plan.dst_uri)
        return Effects(Verdict.RELAY | do, sets, plan.dst_uri)

    # -- branches, replies, failures --------------------------------------------------

    def _plan_branch(self, facts: str) -> Effects:
        index, bflags, text = split_facts(facts, 3)
        record = self._record(text)
        if record is None:
            return Effects(1)
        plan = core.plan_branch(record, as_int(index), core.registration_from_bflags(bflags), self.profiles)
        return self._branch_effects(plan, as_int(index))

    def _branch_effects(self, plan: core.BranchPlan, index: int) -> Effects:
        """What branch ``index`` does for its plan: the code, the record with the branch, the offer's flags."""
        branch = plan.record.branch(index)
        # Replies and in-dialog requests of a branch without the media proxy need nothing from us
        # but the count of its answered call: only a branch with rtpengine, a NATed callee or a
        # browser on either side (all of which need the media proxy) has its replies brought to
        # on_reply and its dialog tracked.  The cfg's own reply route counts the others.
        if branch is not None and branch.media_proxy:
            do = Do.ARM_REPLY | Do.TRACK_DIALOG
            if not branch.callee.behind_nat:
                do |= Do.QUIET_REPLIES  # core.plan_initial_reply: nothing to fix, media only with an SDP
        else:
            do = _bits(STAT_BITS, core.answered_call_stats(plan.record, index))
        sets, media = self._media(plan.action)  # a failed offer drops the branch: the leg cannot work
        return Effects(1 | do | media, ((DIALOG_RECORD, str(plan.record)), *sets))

    def _reply(self, facts: str) -> Effects:
        (status_text, proto, index, body, method, contacts, src_ip, src_port, exchange_text, record_text,
         content_type) = split_facts(facts, 11)  # fmt: skip
        has_sdp = body == "1" and sdp_type(content_type)
        flow = flow_of(proto, src_ip, as_int(src_port)) if core.source_of(proto) is Source.WEBSOCKET else None
        has_contact = contacts not in ("0", NULL)
        key = ("reply", status_text, index, has_sdp, method, has_contact, flow, exchange_text, record_text)
        return self._decided(key, lambda: self._plan_reply(as_int(status_text), index, has_sdp, method, has_contact,
                                                           flow, exchange_text, record_text))  # fmt: skip

    def _plan_reply(
        self,
        status: int,
        index: str,
        has_sdp: bool,
        method: str,
        has_contact: bool,
        flow: Optional[str],
        exchange_text: str,
        record_text: str,
    ) -> Effects:
        exchange = optional(exchange_text)
        if exchange is not None:
            sequential = Exchange.parse(exchange)
            action = core.plan_sequential_reply(sequential, status, has_sdp, self.profiles)
            do = Do.FIX_CONTACT if sequential.receiver.behind_nat and 100 < status < 300 and has_contact else 0
            sets, media = self._media(action)
            return Effects(1 | do | media, sets)
        record = self._record(record_text)
        if method != "INVITE" or record is None:
            return Effects(1)
        plan = core.plan_initial_reply(record, as_int(index), status, has_sdp, self.profiles, flow)
        do = Do.FIX_CONTACT if plan.fix_contact and has_contact else 0
        do |= _bits(STAT_BITS, plan.stats)
        if plan.stats and plan.record is not None and core.acks_are_quiet(plan.record):
            do |= Do.QUIET_ACK  # the cfg relays this dialog's ACKs without a body itself
            if core.byes_are_quiet(plan.record, self.profiles):
                do |= Do.QUIET_BYE  # and its SIP peers' BYEs, with rtpengine's delete
        sets, media = self._media(plan.action)
        if plan.record is not None:
            sets = ((DIALOG_RECORD, str(plan.record)), *sets)
        return Effects(1 | do | media, sets)

    def _plan_failure(self, text: str) -> Effects:
        sets, media = self._media(core.plan_failure(self._record(text), self.profiles))
        return Effects(1 | media, sets)

    # -- decisions and what the cfg needs for them -------------------------------------

    def _decided(self, key: Tuple[object, ...], decide: Callable[[], T]) -> T:
        """The decision for the facts it depends on, taken once: below _answer's keeping by the whole
        facts string, for facts that differ where the decision does not look (the source address and
        port of a request or a reply, the R-URI user's length).  Bounded; cleared when full."""
        found = self._decisions.get(key, _UNDECIDED)
        if found is _UNDECIDED:
            if len(self._decisions) >= DECISIONS_KEPT:
                self._decisions.clear()
            found = self._decisions[key] = decide()
        return cast(T, found)

    def _media(self, action: Optional[MediaAction]) -> Tuple[Tuple[Tuple[str, str], ...], int]:
        """The rtpengine call's bit, its flags to leave in the step's $var for the cfg (MEDIA_FLAGS_VARS)."""
        if action is None:
            return (), 0
        return ((MEDIA_FLAGS_VARS[action.step], action.flags),), _MEDIA_BITS[action.step]

    def _local_reply(self, code: int, reason: str, do: int = 0) -> Effects:
        """The cfg sends it, after the flags (force_rport decides where a reply to a NATed sender goes)."""
        return Effects(Verdict.REPLY | do, ((REPLY_CODE_VAR, str(code)), (REPLY_REASON_VAR, reason)))

    def _record(self, text: Optional[str]) -> Optional[CallRecord]:
        if text is None or optional(text) is None:
            return None
        try:
            return CallRecord.parse(text)
        except ValueError as exc:
            self.log(f"gateway: ignoring unreadable dialog record: {exc}\n")
            return None
