"""The thin adapter between OpenSIPS's python module and the decisions.

Each ``on_*`` method answers one place of opensips.cfg.  The cfg passes the facts a
route needs as python_exec's argument, one per line (``REQUEST_FACTS`` and the others
below; a new request's head on lines, its other facts after tabs), so reading them costs
no host call.  The router decides (``core`` for the
gateway's own rules, the operator's rules through ``loader``) and answers with
*actions*: names of what the cfg should do, in order, separated by commas, left in a
``$var`` of that route (``REQUEST_VAR`` and the others).  The cfg runs them one by one,
each a route of its own, ``route[do_<name>]`` (``Act`` lists them all, with what each
does): the cfg's instruction set is fixed, and no rule an operator writes changes it.
Values an action needs wait in ``$var``s too (the rtpengine flags, a reply's code, the
call record, the headers to add).  A route method returns 1, or -2 when the Python
side failed (the cfg's fail-safe answers then): never 0, which would end the script
like ``exit``.

Every ``$var`` the router writes is one the cfg only reads, and a worker's ``$var``
keeps its value from one message to the next (each worker has its own router after
fork as it has its own ``$var``s): a value already there is not written again
(``Router.held``), and a kept answer given again with no such value written since finds all of
its own in place (``Router._give``).  The operator's rules run for every new request, with the
rules as they are now on disk (``loader.Watcher``).  Decisions of the gateway's own that are pure
functions of a key and the rules (no msg) keep their answers by that key, their complete
inputs (``Router._kept``): failures by their facts string, replies and in-dialog requests
by the facts as their decision reads them (``reply_key``, ``in_dialog_key``; the decision is
made from that key), what a new request gets before the rules by its head (``Head``, made from
that key too), a request's outcome by ``Outcome``, branch plans by theirs, the rules' decisions found
sound by the decision (``check_decision``).
The cfg itself keeps the worker's last answer to a REGISTER and to a reply, beside the facts it read
(REGISTER_KEYS, REPLY_KEYS), and takes it again for the same facts within the second; the router says
which answers hold so (REGISTER_KEPT_VAR, REPLY_KEPT_VAR) and takes the flag back when another answer
changes a $var such an answer reads, or the rules change.

The facts hold nothing a sender wrote as it is: the python module turns the argument
into a str with PyUnicode_FromString, and when that fails it returns -1 and leaves the
UnicodeDecodeError pending in the worker, where it breaks the next python_exec
(docs/host-facts.md).  So the cfg hex-encodes users, domains and Content-Type
(``{s.encode.hexa}``), and the router decodes them: users as UTF-8 with U+FFFD for
bytes that are not (what a rule sees), domains strictly (a request whose domains are
not UTF-8 gets 400).  The rest are numbers, tokens the parser checked ($rm) or values
we wrote ourselves.

Host rules this file keeps (docs/host-facts.md):
- every route returns a non-zero int and never lets an exception escape or stay pending;
- no ``msg`` (and never ``msg.copy()``) is kept past the call;
- the router makes no ``call_function``: the cfg makes every script function call.
"""

from __future__ import annotations

import functools
import urllib.parse
from typing import Any, Callable, Dict, FrozenSet, Hashable, List, NamedTuple, Optional, Protocol, Tuple, TypeVar

from . import core
from .loader import (
    REGISTERED,
    CalleeRule,
    RegisterRule,
    RouteRule,
    Rules,
    Watcher,
    check_answer,
    check_register_answer,
    fixed_rules,
    keep_default,
    load_rules,
    warn_doubts,
    where,
)
from .model import CallRecord, Exchange, Leg, MediaAction, Party, Registration, Source, Step, flow_of
from .policy import BLOCKED, Decision, Kind, MediaProxy, Request, reply, to_user
from .sdp import is_sdp
from .settings import Settings, split_domain, uri_host


class Msg(Protocol):
    """The ``msg`` object OpenSIPS's python module passes (python_msgobj.c; not importable)."""

    @property
    def Type(self) -> str: ...  # noqa: N802
    def getHeader(self, name: str) -> Optional[str]: ...  # noqa: N802
    def get_pseudoVar(self, fmt: str) -> Optional[str]: ...  # noqa: N802
    def set_pseudoVar(self, name: str, value: str) -> None: ...  # noqa: N802
    def set_dst_uri(self, uri: str) -> None: ...
    def rewrite_ruri(self, uri: str) -> None: ...


class Act:
    """The actions the cfg can do: each a case of the switch of its kind of route in opensips.cfg
    (route[request_actions], branch_actions, reply_actions, failure_actions; tests/test_cfg.py holds
    the two to each other).  A list of them answers each python_exec."""

    # where the request came from (every route that reads a request)
    WS = "ws"  # setflag("SRC_WS")
    NAT = "nat"  # setflag("SRC_NAT")
    RPORT = "rport"  # force_rport(): replies go to the NAT binding
    FIX_CONTACT = "fix_contact"  # fix_nated_contact()
    FIX_REGISTER = "fix_register"  # fix_nated_register(): the source is kept with the contact
    # digest authentication in $var(gw_realm); the digest user must own the address
    WWW_AUTH = "www_auth"  # 401; the To user (a REGISTER: its next actions follow)
    PROXY_AUTH = "proxy_auth"  # 407; the From user; then on_authorized
    # registrations
    WEBRTC_CONTACT = "webrtc_contact"  # setbflag("WEBRTC"): a browser's; over its connection only (also in-dialog)
    NATED_CONTACT = "nated_contact"  # setbflag("NATED")
    IPV6_CONTACT = "ipv6_contact"  # setbflag("IPV6"): registered over IPv6 (or a trunk's IPv6 address)
    SAVE = "save"  # save("location"): replies and ends
    LOOKUP = "lookup"  # lookup("location"); on failure on_lookup_failure answers
    REGISTER_RULE = "register_rule"  # the rules' register() answers (on_register_rule): save, or a reply
    # calls
    DIALOG = "dialog"  # create_dialog()
    RECORD_ROUTE = "record_route"
    HIDE_TOPOLOGY = "hide_topology"  # topology_hiding()
    KEEP_RECORD = "keep_record"  # $dlg_val(gw) = $var(gw_record)
    ADD_HEADERS = "add_headers"  # append_hf("$var(gw_add_headers)")
    REMOVE_HEADERS = "remove_headers"  # remove_hf() of each name in $var(gw_remove_headers), "a|b"
    OFFER = "offer"  # rtpengine_offer("$var(gw_rtp_offer)")
    ANSWER = "answer"  # rtpengine_answer("$var(gw_rtp_answer)")
    DELETE = "delete"  # rtpengine_delete("$var(gw_rtp_delete)")
    # the end of a request's list
    RELAY = "relay"  # t_relay() (503 when no branch could be sent); ends
    RELAY_CALL = "relay_call"  # t_on_branch("gw_branch"), t_on_failure("gw_failure"), relay
    RELAY_TRACKED = "relay_tracked"  # t_on_reply("gw_reply"), relay (a re-INVITE or UPDATE)
    RELAY_KNOWN = "relay_known"  # relay only for a transaction tm knows (CANCEL, a stray ACK); ends
    REPLY = "reply"  # sl_send_reply($var(gw_code), $var(gw_reason)); ends
    PLAY_DTMF = "play_dtmf"  # rtpengine_play_dtmf("$var(gw_dtmf)"): a DTMF digit into the call's media
    # a branch (branch_route[gw_branch] runs the plan of its contact's kind)
    TRACK = "track"  # $dlg_val(gw_track) = 1: its in-dialog requests come to on_in_dialog
    ON_REPLY = "on_reply"  # t_on_reply("gw_reply") for this branch
    ON_REPLY_QUIET = "on_reply_quiet"  # t_on_reply("gw_reply_quiet"): only its 2xx and replies with a body
    ON_ANSWER = "on_answer"  # t_on_reply("gw_answered_sip_to_sip"): only its answer is counted
    RECORD_BRANCH = "record_branch"  # the branch's part of the call record, under its index
    OFFER_BRANCH = "offer_branch"  # rtpengine_offer with the plan's flags and the branch index; failing drops
    DROP = "drop"  # no branch to this contact
    # a reply
    COUNT_WEB_TO_WEB = "count_web_to_web"  # update_stat("calls_web_to_web", 1)
    COUNT_WEB_TO_SIP = "count_web_to_sip"
    COUNT_SIP_TO_WEB = "count_sip_to_web"
    COUNT_SIP_TO_SIP = "count_sip_to_sip"
    COUNT_MEDIA_PROXY = "count_media_proxy"
    QUIET_ACK = "quiet_ack"  # $dlg_val(gw_quiet) = "ack": the cfg relays the dialog's ACKs without a body
    QUIET_BYE = "quiet_bye"  # $dlg_val(gw_quiet) = "bye": and serves a SIP peer's BYE with rtpengine_delete
    NEW_RECORD = "new_record"  # $dlg_val(gw) = $var(gw_reply_record): the call record after this reply
    # a failed call
    FAILOVER = "failover"  # unless the caller cancelled: a new branch to $du (the next trunk), relay_call's routes
    AUTHENTICATE = "authenticate"  # unless cancelled: uac_auth() with $avp(gw_auth_*), then as FAILOVER to $du
    NONE = "none"  # nothing to do (no line of the cfg names it)


ACTIONS: FrozenSet[str] = frozenset(v for k, v in vars(Act).items() if k.isupper())
MEDIA_ACTS = frozenset({Act.OFFER, Act.ANSWER, Act.DELETE})
#: The actions each kind of route of the cfg does: OpenSIPS allows some functions in some routes only.
BRANCH_ACTIONS = frozenset(
    {Act.TRACK, Act.ON_REPLY, Act.ON_REPLY_QUIET, Act.ON_ANSWER, Act.RECORD_BRANCH, Act.OFFER_BRANCH, Act.DROP}
)
REPLY_ACTIONS = frozenset(
    {Act.FIX_CONTACT, Act.COUNT_WEB_TO_WEB, Act.COUNT_WEB_TO_SIP, Act.COUNT_SIP_TO_WEB, Act.COUNT_SIP_TO_SIP,
     Act.COUNT_MEDIA_PROXY, Act.QUIET_ACK, Act.QUIET_BYE, Act.NEW_RECORD, Act.NONE} | MEDIA_ACTS
)  # fmt: skip
FAILURE_ACTIONS = frozenset({Act.DELETE, Act.FAILOVER, Act.AUTHENTICATE, Act.REPLY, Act.NONE})
REQUEST_ACTIONS = (
    ACTIONS - BRANCH_ACTIONS - (REPLY_ACTIONS - MEDIA_ACTS - {Act.FIX_CONTACT}) - {Act.FAILOVER, Act.AUTHENTICATE}
)
_COUNT = {f"calls_{a.value}_to_{b.value}": f"count_{a.value}_to_{b.value}" for a in Leg for b in Leg}
_COUNT["media_proxy_calls"] = Act.COUNT_MEDIA_PROXY
#: A registration's branch flag by its kind, and the save.
_SAVE = {
    Registration.WEBRTC: (Act.WEBRTC_CONTACT, Act.SAVE),
    Registration.NATED_SIP: (Act.NATED_CONTACT, Act.SAVE),
    Registration.PLAIN_SIP: (Act.SAVE,),
}
_MEDIA_ACTS = {Step.OFFER: Act.OFFER, Step.REOFFER: Act.OFFER, Step.ANSWER: Act.ANSWER, Step.DELETE: Act.DELETE}

NULL = "<null>"  # what OpenSIPS prints for an unset variable
SEP = "\n"  # between the facts: none of them can hold a line break (see the module's docstring)
DIALOG_RECORD = "$dlg_val(gw)"
EXCHANGE_AVP = "$avp(gw_tx)"
#: A call to a trunk that fails over: the request URI's user a rule gave ("" for none), then the trunks still to try
#: (Decision.failover), each URI followed by its branch's plan and its request URI's domain ([trunks] domain=, "" for
#: none), all tab-separated.  An AVP lives with the transaction, so the failure route reads it in any worker; its
#: faked request has the request URI as it came (docs/host-facts.md), so the failure route writes the user again.
FAILOVER_AVP = "$avp(gw_failover)"
#: A call's branch to a trunk with credentials ([trunks] auth_user=): "its name<tab>its branch's plan" until the
#: gateway answered a challenge of that trunk, then its name alone (once per trunk and call: a second uac_auth()
#: in one transaction sends the CSeq of the first again, docs/host-facts.md); "" after a failover to a trunk
#: without them.
TRUNK_AVP = "$avp(gw_trunk)"
#: What uac_auth() answers a trunk's challenge with (the cfg's modparams of uac_auth name them).
AUTH_REALM_AVP, AUTH_USER_AVP, AUTH_PASSWORD_AVP = "$avp(gw_auth_realm)", "$avp(gw_auth_user)", "$avp(gw_auth_password)"
NAT_VAR = "$var(gw_nat)"  # the cfg stores nat_uac_test(core.NAT_TESTS) here: 1 or 0
PRIVATE_VAR = "$var(gw_private)"  # and its own test of the SDP (sdp.PRIVATE_SDP) here: 1 or 0
CONTENT_TYPE = "$(hdr(Content-Type){s.encode.hexa})"

# The actions of each route, one $var each (so a worker's next message of a kind finds them there).
REQUEST_VAR = "$var(gw_do)"
REGISTER_VAR = "$var(gw_register)"
AUTHORIZED_VAR = "$var(gw_authorized)"
LOOKUP_FAILURE_VAR = "$var(gw_not_found)"
IN_DIALOG_VAR = "$var(gw_in_dialog)"
REPLY_VAR = "$var(gw_reply)"
FAILURE_VAR = "$var(gw_failure)"
RULED_VAR = "$var(gw_ruled)"  # a REGISTER's after the rules' register()
#: Which actions each $var may hold (the route that reads it).
ACTIONS_OF = {
    REQUEST_VAR: REQUEST_ACTIONS,
    REGISTER_VAR: REQUEST_ACTIONS,
    AUTHORIZED_VAR: REQUEST_ACTIONS,
    LOOKUP_FAILURE_VAR: REQUEST_ACTIONS,
    IN_DIALOG_VAR: REQUEST_ACTIONS,
    REPLY_VAR: REPLY_ACTIONS,
    FAILURE_VAR: FAILURE_ACTIONS,
    RULED_VAR: REQUEST_ACTIONS,
}
#: What ends a request's actions: the script ends there (relays, replies, saves), or asks the router again.
_LAST = frozenset({Act.RELAY, Act.RELAY_CALL, Act.RELAY_TRACKED, Act.RELAY_KNOWN, Act.REPLY, Act.SAVE})
ENDING = {
    REQUEST_VAR: _LAST | {Act.PROXY_AUTH},
    REGISTER_VAR: frozenset({Act.SAVE, Act.REPLY, Act.REGISTER_RULE}),
    RULED_VAR: frozenset({Act.SAVE, Act.REPLY}),
    AUTHORIZED_VAR: _LAST,
    LOOKUP_FAILURE_VAR: _LAST,
    IN_DIALOG_VAR: _LAST,
}
#: A branch's plan by its contact's kind and whether it registered over IPv6 (branch flag IPV6):
#: "actions|its part of the call record|its offer's flags but the index".
BRANCH_VARS = {
    (Registration.WEBRTC, False): "$var(gw_to_webrtc)",
    (Registration.NATED_SIP, False): "$var(gw_to_nated)",
    (Registration.PLAIN_SIP, False): "$var(gw_to_plain)",
    (Registration.WEBRTC, True): "$var(gw_to_webrtc6)",
    (Registration.NATED_SIP, True): "$var(gw_to_nated6)",
    (Registration.PLAIN_SIP, True): "$var(gw_to_plain6)",
}
# What actions need.
RECORD_VAR = "$var(gw_record)"
REALM_VAR = "$var(gw_realm)"
REPLY_CODE_VAR = "$var(gw_code)"
REPLY_REASON_VAR = "$var(gw_reason)"
ADD_HEADERS_VAR = "$var(gw_add_headers)"
REMOVE_HEADERS_VAR = "$var(gw_remove_headers)"
DTMF_VAR = "$var(gw_dtmf)"
BODY = "$(rb{s.encode.hexa})"  # the body, hex-encoded: bytes that are not UTF-8 reach Python as text too
MEDIA_FLAGS_VARS = {
    Step.OFFER: "$var(gw_rtp_offer)",
    Step.REOFFER: "$var(gw_rtp_offer)",
    Step.ANSWER: "$var(gw_rtp_answer)",
    Step.DELETE: "$var(gw_rtp_delete)",
}
TRUSTED_VAR = "$var(gw_trusted)"
PIKE_SOURCE_VAR = "$var(gw_pike_source)"  # the cfg keeps its last answer here; cleared when the rules change
PIKE_DROP_VAR = "$var(gw_pike_drop)"  # and the answer: 1 for a trusted source (a REGISTER's fact)
#: "1" when a REGISTER's answer holds for every REGISTER with the same facts ("" else): the cfg keeps the facts
#: (REGISTER_KEYS) and takes the answer again without asking for the rest of that second (route[gw_register]).
REGISTER_KEPT_VAR = "$var(gw_register_kept)"
REPLY_RECORD_VAR = "$var(gw_reply_record)"  # the call record after a reply (Act.NEW_RECORD)
BODY_VAR = "$var(gw_body)"  # the cfg's 1 when a reply has a body ($cl > 0), else 0: a reply's fact
#: "1" when a reply's answer holds for every reply with the same facts (REPLY_KEYS) within the second, as a
#: REGISTER's (REGISTER_KEPT_VAR; route[gw_python_reply]): an initial INVITE's reply with a body, not over a
#: WebSocket (the router reads a browser's source), while no other answer writes a value it reads.
REPLY_KEPT_VAR = "$var(gw_reply_kept)"

#: The $vars the router writes and the cfg only reads: each is written only when its value changes.
HELD_VARS = frozenset(
    (REQUEST_VAR, REGISTER_VAR, REGISTER_KEPT_VAR, AUTHORIZED_VAR, LOOKUP_FAILURE_VAR, IN_DIALOG_VAR, REPLY_VAR,
     REPLY_KEPT_VAR, REPLY_RECORD_VAR, FAILURE_VAR, RULED_VAR, RECORD_VAR, REALM_VAR,
     REPLY_CODE_VAR, REPLY_REASON_VAR, ADD_HEADERS_VAR, REMOVE_HEADERS_VAR, TRUSTED_VAR, *BRANCH_VARS.values(),
     *MEDIA_FLAGS_VARS.values())
)  # fmt: skip


def request_facts(method: str, proto: str, nat: str, private: str, length: str, contacts: str, source_ip: str,
                  source_port: str, ruser: str, rdomain: str, fuser: str, fdomain: str, tuser: str, tdomain: str,
                  content_type: str) -> str:  # fmt: skip
    """A new request's facts as the cfg passes them (``REQUEST_FACTS`` is this of the cfg's variables): its
    head first, the facts ``Router._head`` reads, one per line, which the router takes as one string; then
    each of the others after a tab (HEAD_END)."""
    head = SEP.join((method, proto, nat, contacts, rdomain, fdomain, tdomain))
    return HEAD_END.join((head, source_ip, source_port, private, length, ruser, fuser, tuser, content_type))


HEAD_END = "\t"  # after a new request's head, and between its other facts (none of them can hold a tab either)
# What the cfg passes to each route (opensips.cfg; tests/test_cfg.py keeps them equal).
REQUEST_FACTS = request_facts(
    "$rm", "$socket_in(proto)", NAT_VAR, PRIVATE_VAR, "$cl", "$hdrcnt(Contact)", "$si", "$sp",
    "$(rU{s.encode.hexa})", "$(rd{s.encode.hexa})", "$(fU{s.encode.hexa})", "$(fd{s.encode.hexa})",
    "$(tU{s.encode.hexa})", "$(td{s.encode.hexa})", CONTENT_TYPE,
)  # fmt: skip
#: A REGISTER's for the rules' register(): a new request's, and its Expires and first Contact (a de-registration
#: is no rule's business: ``Router._register_ruled``).
REGISTER_RULE_FACTS = HEAD_END.join((REQUEST_FACTS, "$(hdr(Expires){s.encode.hexa})", "$(hdr(Contact){s.encode.hexa})"))
#: A REGISTER's: where it came from, whether the source is trusted (pike's check route), its domains.
REGISTER_FACTS = SEP.join(
    ("$socket_in(proto)", NAT_VAR, "$hdrcnt(Contact)", "$socket_in(af)", PIKE_DROP_VAR, "$(rd{s.encode.hexa})",
     "$(fd{s.encode.hexa})", "$(td{s.encode.hexa})")
)  # fmt: skip
#: The same facts as the cfg keeps them beside a kept answer and compares them with the next REGISTER's, each
#: in its $var (route[gw_register_keep]): the domains as they are (nothing reaches Python on a match).
REGISTER_KEYS = (
    ("$socket_in(proto)", "$var(gw_rk_proto)"), (NAT_VAR, "$var(gw_rk_nat)"),
    ("$hdrcnt(Contact)", "$var(gw_rk_contacts)"), ("$socket_in(af)", "$var(gw_rk_af)"),
    (PIKE_DROP_VAR, "$var(gw_rk_trusted)"), ("$rd", "$var(gw_rk_rd)"), ("$fd", "$var(gw_rk_fd)"),
    ("$td", "$var(gw_rk_td)"),
)  # fmt: skip
IN_DIALOG_FACTS = SEP.join(
    ("$rm", "$socket_in(proto)", NAT_VAR, "$hdrcnt(Contact)", "$cl", "$DLG_dir", DIALOG_RECORD, CONTENT_TYPE)
)
REPLY_FACTS = SEP.join(
    ("$rs", "$socket_in(proto)", "$T_branch_idx", BODY_VAR, "$rm", "$hdrcnt(Contact)", "$si", "$sp", EXCHANGE_AVP,
     DIALOG_RECORD, CONTENT_TYPE)
)  # fmt: skip
#: A reply's facts as the cfg keeps them beside a kept answer (route[gw_reply_keep]) and compares them with
#: the next reply's: REPLY_FACTS but the source (the router reads it of a browser's reply only, and keeps no
#: such answer) and the exchange (a kept answer has none: the cfg tests it is NULL); the Content-Type as it is.
REPLY_KEYS = (
    ("$rs", "$var(gw_pk_rs)"), ("$socket_in(proto)", "$var(gw_pk_proto)"), ("$T_branch_idx", "$var(gw_pk_branch)"),
    (BODY_VAR, "$var(gw_pk_body)"), ("$rm", "$var(gw_pk_rm)"), ("$hdrcnt(Contact)", "$var(gw_pk_contacts)"),
    (DIALOG_RECORD, "$var(gw_pk_record)"), ("$hdr(Content-Type)", "$var(gw_pk_type)"),
)  # fmt: skip
#: A failed call's: its record, the final reply tm picked, whether that is tm's own from a callee who sent nothing
#: at all (1, else 0: t_local_replied("branch")), the trunks still to try, the trunk with credentials it went to,
#: and the picked reply's digest challenge (a 401's, a 407's; hex: a header may hold any bytes).
SILENT_VAR = "$var(gw_silent)"
REPLY_CHALLENGES = (
    "$(<reply>hdr(WWW-Authenticate){s.encode.hexa})", "$(<reply>hdr(Proxy-Authenticate){s.encode.hexa})"
)  # fmt: skip
FAILURE_FACTS = SEP.join((DIALOG_RECORD, "$T_reply_code", SILENT_VAR, FAILOVER_AVP, TRUNK_AVP, *REPLY_CHALLENGES))
#: A trunk's digest challenge, which the gateway answers when it has the trunk's credentials.
CHALLENGES = frozenset({"401", "407"})
#: What the caller gets when a trunk challenges the credentials the gateway answered its challenge with.
REFUSED_CREDENTIALS = (503, "Service Unavailable - Trunk Refused Credentials")
LOOKUP_FAILURE_FACTS = "$rc"
TRUSTED_FACTS = "$si"

_KEPT, _NOT_KEPT = (REPLY_KEPT_VAR, "1"), (REPLY_KEPT_VAR, "")  # a reply answer's word to the cfg
_TO_USER = to_user()  # the built-in routing's two decisions (immutable values)
#: What a rule's decision for a caller who may not relay becomes when it would send the call on (``_RELAYS``).
NO_RELAY = reply(*core.NO_RELAY_REPLY)
#: What a call to a user longer than any the registrar keeps becomes (lookup() would fail with 500).
NOBODY = reply(*core.lookup_failure(-1))
_RELAYS = frozenset({"trunk", "uri"})
# Enum members the code of every new request compares with, as module constants: on Python 3.11 (Debian's,
# OpenSIPS's) an enum's every attribute goes through EnumType.__getattr__'s hook, ~700 instructions each.
_LOCATION, _BROWSER = core.Target.LOCATION, Kind.BROWSER
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
KEPT = 4096  # answers a worker keeps of each pure decision (Router._kept), by its complete inputs
FAILED = -2  # python_exec's result when the Python side failed: the cfg's fail-safe answers
Sets = Tuple[Tuple[str, str], ...]


class Answer(NamedTuple):
    """What a route leaves for the cfg: its actions, the $vars to write, the destination to set, and a new
    request URI (``ruri``) or parts of it: its user (``ruri_user``), its host[:port] (``ruri_domain``: a trunk's
    ``domain=``; no port removes the caller's)."""

    actions: Tuple[str, ...]
    sets: Sets = ()
    dst_uri: Optional[str] = None
    ruri_user: Optional[str] = None
    ruri: Optional[str] = None
    ruri_domain: Optional[str] = None


_SAVED = Answer((Act.SAVE,))  # a REGISTER the rules' register() keeps


#: An answer checked for a route's $var (``Router._prepare``): the answer, the $var, its values of HELD_VARS and
#: last its actions as the cfg reads them (in that $var), its other values, and the $vars the cfg reads when it
#: takes it again itself.
Prepared = Tuple[Answer, str, Sets, Sets, FrozenSet[str]]
_NO_READS: FrozenSet[str] = frozenset()


class Outcome(NamedTuple):
    """What makes the answer to a decision (``Router._carry_out``): the decision and all it reads of the request."""

    decision: Decision
    before: Tuple[str, ...]
    """The actions before the decision's (where the request came from)."""
    method: str
    rewrite: Optional[str]
    """The new R-URI user of a decision to another user's contacts."""
    transport: str
    flow: Optional[str]
    """A browser's connection: its in-dialog requests go back over it."""
    has_sdp: bool
    private: bool
    caller_behind_nat: bool
    caller_side: str
    """rtpengine's interface facing the caller (Settings.side_of its source; "" with one interface)."""
    caller_ipv6: bool
    """The request came over IPv6."""


class Incoming(NamedTuple):
    """A new request between on_request and on_authorized: as the rules will see it, and what else the
    router decided of it before the digest check."""

    request: Request
    private: bool
    """The cfg's test of the SDP found a private address (where it matters)."""
    target: core.Target
    may_relay: bool
    """Our user or a trusted source: may reach other domains and the dial plan's trunks."""
    raw_user: int
    """The R-URI user's length as written (%-escapes and all): what the registrar's lookup measures."""


class Head(NamedTuple):
    """What the gateway makes of a new request before any rule sees it, from its head (``Router._head``): where
    it came from, its domains, and whether it must authenticate; or the answer, when no rule sees it."""

    acts: Tuple[str, ...]
    """The flags and NAT fixes of where it came from."""
    answer: Optional[Answer] = None
    """CANCEL and ACK, domains that are not UTF-8, and the refusals of ``core.route_initial``."""
    method: str = ""
    ruri_domain: str = ""
    from_domain: str = ""
    to_domain: str = ""
    target: core.Target = core.Target.LOCATION
    challenge: Optional[Answer] = None
    """The digest challenge it must pass before the rules answer (``core.challenge_for``)."""
    caller: Kind = Kind.SIP
    behind_nat: bool = False
    transport: str = ""
    """$socket_in(proto), lower-case."""
    may_relay: bool = False
    """Our user or a trusted source: may reach other domains and the dial plan's trunks."""


def split_facts(text: Optional[str], count: int, sep: str = SEP) -> List[str]:
    """Split the cfg's facts into ``count`` fields; ValueError when there are fewer."""
    fields = (text or "").split(sep, count - 1)
    if len(fields) != count:
        raise ValueError(f"{len(fields)} facts where the cfg passes {count}: is python_exec's argument the one "
                         "gateway.host lists?")  # fmt: skip
    return fields


def as_int(text: str, default: int = 0) -> int:
    return int(text) if text.isdigit() else default


def optional(text: str) -> Optional[str]:
    return None if text in (NULL, "") else text


def trusted_list(sources: FrozenSet[str]) -> str:
    """The trusted sources as the cfg searches them: " a b c " (each between spaces)."""
    return " " + " ".join(sorted(sources)) + " "


@functools.lru_cache(maxsize=4096)
def unhex(text: str) -> str:
    """A fact the cfg hex-encoded, as strict UTF-8 text (UnicodeDecodeError for bytes that are not): domains.
    A pure function of its argument, so its answers are kept by it (a few domains recur)."""
    return "" if text == NULL else bytes.fromhex(text).decode("utf-8")


def decoded(text: str) -> str:
    """A fact the cfg hex-encoded, as text with U+FFFD for bytes that are not UTF-8: what a rule sees of users,
    headers and Content-Type, and a trunk's challenge; "" for NULL."""
    return "" if text == NULL else bytes.fromhex(text).decode("utf-8", "replace")


#: ``decoded``, kept by its argument, as ``unhex`` (a few users recur; not a challenge's nonce).
text_of = functools.lru_cache(maxsize=4096)(decoded)


@functools.lru_cache(maxsize=4096)
def user_of(text: str) -> str:
    """A user part the cfg hex-encoded (R-URI, From, To), as a rule sees it: %-escapes undone (RFC 3261 19.1.4
    compares users unescaped, and so does a carrier: "%30900" is 0900 to it and to the blocked prefixes), then
    decoded as ``decoded`` does; "" for NULL."""
    if text == NULL:
        return ""
    raw = bytes.fromhex(text)
    return (urllib.parse.unquote_to_bytes(raw) if b"%" in raw else raw).decode("utf-8", "replace")


@functools.lru_cache(maxsize=64)
def sdp_type(text: str) -> bool:
    """Whether the hex-encoded Content-Type names SDP (bytes that are not UTF-8 name nothing we know)."""
    return text != NULL and is_sdp(text_of(text))


def header_format(names: Tuple[str, ...]) -> str:
    """One get_pseudoVar format for the headers the rules read, each hex-encoded (the sender's bytes)."""
    return SEP.join(f"$(hdr({name}){{s.encode.hexa}})" for name in names)


class Router:
    """The handler object ``mod_init`` returns: one method per place of the cfg that asks."""

    def __init__(self, rules: Rules, log: Callable[[str], Any], watcher: Optional[Watcher] = None) -> None:
        """``rules`` as loaded from the files (``from_files``), watched for changes; a ``watcher`` of one's
        own for rules given as values (``fixed``) or files of one's choice."""
        self.watcher = watcher or Watcher(rules, log)
        self.log = log
        self.held: Dict[str, str] = {}
        """What this worker's HELD_VARS hold, as the router last wrote them (it is their only writer)."""
        self._pending: Optional[Incoming] = None
        self._generation = -1  # the rules' generation whose trusted sources this worker's $var holds
        # Answers of pure decisions, each kept by its complete inputs (``_kept``), for the rules of
        # ``_kept_generation``: the facts of a reply, an in-dialog request, a failure; what a new request's
        # decision makes of it (``_carry_out``); a branch's plan.
        self._registers: Dict[str, Answer] = {}
        self._replies: Dict[str, Answer] = {}
        self._in_dialogs: Dict[str, Answer] = {}
        self._failures: Dict[str, Answer] = {}
        self._outcomes: Dict[Tuple[Any, ...], Tuple[Decision, Answer]] = {}
        """The answers of _by_value by the decision's identity and the rest of the Outcome (``_route``)."""
        self._by_value: Dict[Outcome, Answer] = {}
        self._plans: Dict[Tuple[Any, ...], List[Tuple[str, str]]] = {}
        self._heads: Dict[Tuple[str, str, str], Head] = {}
        self._checked: Dict[Decision, bool] = {}
        """The rules' decisions check_decision found sound (``_check``)."""
        self._kept_generation = 0
        self._writes = 0
        """Counts the writes of HELD_VARS: an answer given again finds its $vars as it left them while this holds."""
        self._given: Dict[str, Tuple[Answer, int, Sets]] = {}
        """The last answer of each route's $var, the writes count after it, and its sets of no HELD_VARS."""
        self._prepared: Dict[int, Prepared] = {}
        """Answers given, checked and parted for the $var they were given in (``_prepare``), by their id."""
        self._reply_reads = _NO_READS
        """The $vars the cfg reads when it takes the worker's last reply answer again itself (REPLY_KEPT_VAR)."""
        self.explain_refusals = False
        """A refused answer's log line names the rule's line that returned it, by asking the rule again
        (loader.returned_at): the fake host's tests and tracer do; in OpenSIPS, where a rule that keeps state (a
        round robin) would see each refused call twice, the load's sample calls do (loader.doubts)."""

    @classmethod
    def from_files(cls, log: Callable[[str], Any], settings_file: Optional[str] = None,
                   policy_file: Optional[str] = None) -> Router:  # fmt: skip
        rules = load_rules(settings_file, policy_file)
        warn_doubts(rules, log)
        return cls(rules, log, Watcher(rules, log, settings_file, policy_file))

    @classmethod
    def fixed(cls, settings: Settings, log: Callable[[str], Any], route: Optional[RouteRule] = None,
              callee: Optional[CalleeRule] = None, register: Optional[RegisterRule] = None) -> Router:  # fmt: skip
        """A router with rules given as values (tests, tools): nothing is read from disk."""
        rules = fixed_rules(settings, route or keep_default, callee, register)
        return cls(rules, log, Watcher(rules, log, watch=False))

    @property
    def rules(self) -> Rules:
        return self.watcher.rules

    @property
    def settings(self) -> Any:
        return self.watcher.rules.settings

    # -- entry points -----------------------------------------------------------------

    def child_init(self, rank: int) -> int:
        return 0  # unlike routes, child_init reports success with 0

    def on_request(self, msg: Msg, facts: str = "") -> int:
        return self._answer(msg, REQUEST_VAR, "request", self._request, msg, facts)

    def on_register(self, msg: Msg, facts: str = "") -> int:
        return self._answer(
            msg, REGISTER_VAR, "register", lambda rules: self._kept(self._registers, facts, self._register, rules)
        )

    def on_register_rule(self, msg: Msg, facts: str = "") -> int:
        return self._answer(msg, RULED_VAR, "register rule", self._register_ruled, msg, facts)

    def on_authorized(self, msg: Msg) -> int:
        return self._answer(msg, AUTHORIZED_VAR, "authorized", self._authorized, msg)

    def on_lookup_failure(self, msg: Msg, facts: str = "") -> int:
        return self._answer(
            msg, LOOKUP_FAILURE_VAR, "lookup-failure", lambda rules: reply_answer(*core.lookup_failure(int(facts)))
        )

    def on_in_dialog(self, msg: Msg, facts: str = "") -> int:
        if facts.startswith("INFO\n"):  # a DTMF digit in it reads the body: not a function of the facts
            return self._answer(msg, IN_DIALOG_VAR, "in-dialog", lambda rules: self._info(rules, msg, facts))
        return self._answer(
            msg, IN_DIALOG_VAR, "in-dialog",
            lambda rules: self._kept(self._in_dialogs, in_dialog_key(facts), self._in_dialog, rules),
        )  # fmt: skip

    def on_reply(self, msg: Msg, facts: str = "") -> int:
        return self._answer(msg, REPLY_VAR, "reply", self._kept_reply, facts)

    def _kept_reply(self, rules: Rules, facts: str) -> Answer:
        key = reply_key(facts)
        answer = self._replies.get(key)
        return answer if answer is not None else self._kept(self._replies, key, self._reply, rules)

    def on_failure(self, msg: Msg, facts: str = "") -> int:
        return self._answer(msg, FAILURE_VAR, "failure", self._failed, msg, facts)

    def _failed(self, rules: Rules, msg: Msg, facts: str) -> Answer:
        if facts.split(SEP, 2)[1] in CHALLENGES:  # a trunk's challenge: decided each time (it may be logged)
            return self._failure(rules, facts, msg)
        return self._kept(self._failures, facts, self._failure, rules)

    def is_trusted(self, msg: Msg, facts: str = "") -> int:
        """pike's check route, the first time a worker runs it: the trusted sources (gateway.ini) go into
        this worker's $var(gw_trusted), " a b c ", which the cfg searches for " $si " natively from then
        on.  1 when this source is one of them, -1 else."""
        try:
            rules = self.watcher.current()
            self._write(msg, TRUSTED_VAR, trusted_list(rules.settings.trusted_sources))
            self._generation = self.watcher.generation
            return 1 if facts in rules.settings.trusted_sources else -1
        except Exception as exc:  # noqa: BLE001 - the cfg asks again next time
            self._log_failure("pike check", msg, exc)
            return -1

    def _answer(self, msg: Msg, var: str, route: str, decide: Callable[..., Answer], *args: Any) -> int:
        """Decide (``decide(rules, *args)``) with the rules as they are now, then leave the actions and their
        values for the cfg."""
        try:
            watcher = self.watcher
            # the files are looked at once a second at most (Watcher.current): until then, the rules in hand
            rules = watcher.rules if watcher.clock() < watcher.next_check else self._current(msg)
            self._give(msg, var, decide(rules, *args))
            return 1
        except Exception as exc:  # noqa: BLE001 - nothing may escape into OpenSIPS
            self._log_failure(route, msg, exc)
            return FAILED

    def _current(self, msg: Msg) -> Rules:
        """The rules as they are on disk now; when they are new, what this worker keeps for the rules before
        them goes: the answers kept, the cfg's kept answer of a REGISTER, its copy of the trusted sources."""
        watcher = self.watcher
        rules = watcher.current()
        if self._kept_generation != watcher.generation:
            self._forget()  # answers of other rules
            for kept in (REGISTER_KEPT_VAR, REPLY_KEPT_VAR):  # and the cfg's, of a REGISTER and a reply
                if self.held.get(kept):
                    self._write(msg, kept, "")
        if self._generation != watcher.generation and self._generation >= 0:
            self._write(msg, TRUSTED_VAR, trusted_list(rules.settings.trusted_sources))
            msg.set_pseudoVar(PIKE_SOURCE_VAR, "")
            self._generation = watcher.generation
        return rules

    def _give(self, msg: Msg, var: str, answer: Answer) -> None:
        """Leave ``answer`` for the cfg: its actions in ``var``, its values in theirs.  The same answer as
        this route's last (kept answers are shared values), with no HELD_VARS written since, finds its
        actions and HELD_VARS values in place: only its other values are written, and what the message
        itself gets (R-URI, destination)."""
        given = self._given.get(var)
        if given is not None and given[0] is answer and given[1] == self._writes:
            loose = given[2]
        else:
            prepared = self._prepared.get(id(answer))
            if prepared is None or prepared[1] != var:
                prepared = self._prepare(var, answer)
            _, _, writes, loose, reads = prepared
            held = self.held
            if var == REPLY_VAR:
                self._reply_reads = _NO_READS  # its own writes do not take back what the cfg keeps
            taken_back = self._reply_reads
            for name, value in writes:  # _write, inline: the values of HELD_VARS, then the actions
                if held.get(name) != value:  # a $var the worker holds already is not written again
                    if name in taken_back:
                        self._write(msg, name, value)
                        taken_back = self._reply_reads
                        continue
                    held.pop(name, None)  # unknown until the write is done
                    self._writes += 1
                    msg.set_pseudoVar(name, value)
                    held[name] = value
            if var == REPLY_VAR:
                self._reply_reads = reads
            self._given[var] = (answer, self._writes, loose)
        for name, value in loose:
            msg.set_pseudoVar(name, value)
        if answer.ruri_user is not None:
            msg.set_pseudoVar("$rU", answer.ruri_user)
        if answer.ruri_domain is not None:
            host, port = split_domain(answer.ruri_domain)
            msg.set_pseudoVar("$rd", host)
            msg.set_pseudoVar("$rp", port)  # "" takes the caller's port away
        if answer.ruri is not None:
            msg.rewrite_ruri(answer.ruri)
        if answer.dst_uri is not None:
            msg.set_dst_uri(answer.dst_uri)

    def _prepare(self, var: str, answer: Answer) -> Prepared:
        """``answer`` checked for ``var``'s route (ValueError when the cfg cannot do it there), with its actions
        as the cfg reads them and its values parted into HELD_VARS and the rest.  Kept by the answer's id: the
        entry holds the answer, so no other object has that id while it is kept."""
        if not answer.actions or not ACTIONS_OF[var].issuperset(answer.actions):
            raise ValueError(f"not actions the cfg does there: {answer.actions!r}")
        if var in ENDING and answer.actions[-1] not in ENDING[var]:
            raise ValueError(f"a request's actions must end it, not with {answer.actions[-1]!r}")
        held_sets = tuple((name, value) for name, value in answer.sets if name in HELD_VARS)
        loose = tuple((name, value) for name, value in answer.sets if name not in HELD_VARS)
        # what the cfg reads when it takes this answer again itself (REPLY_KEPT_VAR)
        reads = _NO_READS
        if _KEPT in held_sets:
            reads = frozenset((var, *(name for name, _ in held_sets))) - {REPLY_KEPT_VAR}
        prepared = (answer, var, (*held_sets, (var, ",".join(answer.actions))), loose, reads)
        if len(self._prepared) >= KEPT:
            self._prepared.clear()
        self._prepared[id(answer)] = prepared
        return prepared

    def _kept(self, table: Dict[K, V], key: K, decide: Callable[[Rules, K], V], rules: Rules) -> V:
        """``decide(rules, key)``, kept in ``table`` by ``key``.  Only for a decision that is a function of
        ``key`` and the rules alone (no msg, nothing else of the router's): then ``key`` is its complete
        inputs, and a kept answer is the answer.  Up to KEPT answers a table; all go when the rules change."""
        answer = table.get(key)
        if answer is None:
            answer = decide(rules, key)
            if len(table) >= KEPT:
                table.clear()
            table[key] = answer
        return answer

    def _forget(self) -> None:
        tables = (self._registers, self._replies, self._in_dialogs, self._failures, self._outcomes, self._by_value)
        for table in (*tables, self._plans, self._heads, self._checked):
            table.clear()
        self._kept_generation = self.watcher.generation

    def forget_writes(self) -> None:
        """As a worker's first message of each kind: the next answers write every $var they need (tools, tests)."""
        self.held.clear()
        self._given.clear()

    def _write(self, msg: Msg, name: str, value: str) -> None:
        if name not in HELD_VARS:
            msg.set_pseudoVar(name, value)
        elif self.held.get(name) != value:
            if name in self._reply_reads:  # another answer changes what the cfg's kept reply answer reads
                self._reply_reads = _NO_READS
                self._write(msg, REPLY_KEPT_VAR, "")
            self.held.pop(name, None)  # unknown until the write is done
            self._writes += 1
            msg.set_pseudoVar(name, value)
            self.held[name] = value

    def _log_failure(self, route: str, msg: Msg, exc: BaseException) -> None:
        try:
            call_id = msg.getHeader("Call-ID") or msg.getHeader("i")
        except Exception:  # noqa: BLE001
            call_id = None
        try:
            self.log(f"gateway: {route} route failed for Call-ID {call_id}: {type(exc).__name__}: {exc}{where(exc)}\n")
        except Exception:  # noqa: BLE001
            pass

    # -- out-of-dialog requests -------------------------------------------------------

    def _request(self, rules: Rules, msg: Msg, facts: str) -> Answer:
        """What every new request but a REGISTER gets from where it came (flags, NAT fixes), then either a
        refusal, a digest challenge (the rules answer in on_authorized, after it), or the rules' answer now.
        What it makes of the request before the rules is kept by its complete inputs (``_head``)."""
        try:
            head_text, src_ip, src_port, private, length, ruser, fuser, tuser, content_type = facts.split(HEAD_END)
        except ValueError:
            split_facts(facts, 9, HEAD_END)  # says what is wrong
            raise
        trusted = src_ip if src_ip in rules.settings.trusted_sources else ""
        key = (head_text, trusted, "" if ruser in (NULL, "") else "1")
        head = self._heads.get(key)
        if head is None:
            head = self._kept(self._heads, key, self._head, rules)
        (acts, answer, method, ruri_domain, from_domain, to_domain, target, challenge, caller, behind_nat, transport,
         may_relay) = head  # fmt: skip
        if answer is not None:
            return answer
        request = tuple.__new__(Request, (
            method, user_of(ruser), ruri_domain, user_of(fuser), from_domain, user_of(tuser), to_domain, src_ip,
            int(src_port) if src_port.isdigit() else 0, transport, caller, behind_nat,
            length.isdigit() and length != "0" and sdp_type(content_type), (),  # $cl: a number, no leading 0
        ))  # fmt: skip
        if challenge is not None:
            self._pending = Incoming(request, private == "1", target, may_relay, len(ruser) // 2)
            return challenge
        return self._route(rules, msg, request, private == "1", target, may_relay, len(ruser) // 2, acts)

    def _head(self, rules: Rules, key: Tuple[str, str, str]) -> Head:
        """A new request's head: a function of ``key`` (``_request``: the head of its facts, with method,
        transport, NAT, Contacts and the three domains as the cfg encoded them; the trusted source it came
        from or ""; whether the R-URI names a user) and the rules, which makes it the key's complete inputs."""
        head, trusted, named = key
        method, proto, nat, contacts, rdomain, fdomain, tdomain = split_facts(head, 7)
        if method == "REGISTER":
            raise ValueError("a REGISTER comes to on_register (route[gw_register]), not to on_request")
        settings = rules.settings
        source = core.source_of(proto)
        behind_nat = source is Source.WEBSOCKET or nat == "1"
        acts = source_actions(method, source, behind_nat, contacts not in ("0", NULL))
        if method in ("CANCEL", "ACK"):
            return Head(acts, Answer((*acts, Act.RELAY_KNOWN)), method)  # only for a transaction we know
        try:
            ruri_domain, from_domain, to_domain = unhex(rdomain).lower(), unhex(fdomain).lower(), unhex(tdomain).lower()
        except UnicodeDecodeError:
            # The python module decodes every str as strict UTF-8: such a message is the sender's fault.
            return Head(acts, reply_answer(400, "Bad Request - Not UTF-8", acts), method)
        routing = core.route_initial(method, named, ruri_domain, from_domain, trusted, settings)
        if routing.reply is not None:
            return Head(acts, reply_answer(*routing.reply, acts), method)
        challenge = None
        realm = settings.auth_realm
        if core.challenge_for(method, from_domain, bool(trusted), settings) is not None and realm is not None:
            challenge = Answer((*acts, Act.PROXY_AUTH), ((REALM_VAR, realm),))
        caller = Kind.BROWSER if source is Source.WEBSOCKET else Kind.SIP
        may_relay = settings.is_local(from_domain) or bool(trusted)
        return Head(acts, None, method, ruri_domain, from_domain, to_domain, routing.target, challenge, caller,
                    behind_nat, proto.lower(), may_relay)  # fmt: skip

    def _register(self, rules: Rules, facts: str) -> Answer:
        """A REGISTER: its contact's flags and save() (the rules' register() in its place), after a digest check
        in the realm unless it comes from a trusted source; or a refusal.  A function of REGISTER_FACTS alone: an answer
        that is not a reply says so in REGISTER_KEPT_VAR, and the cfg keeps the facts (REGISTER_KEYS) and
        takes it again for REGISTERs with the same facts."""
        proto, nat, contacts, family, trusted, rdomain, fdomain, tdomain = split_facts(facts, 8)
        source = core.source_of(proto)
        behind_nat = source is Source.WEBSOCKET or nat == "1"
        acts = source_actions("REGISTER", source, behind_nat, contacts not in ("0", NULL))
        try:
            unhex(rdomain)
            from_domain, to_domain = unhex(fdomain).lower(), unhex(tdomain).lower()
        except UnicodeDecodeError:
            return reply_answer(400, "Bad Request - Not UTF-8", acts, ((REGISTER_KEPT_VAR, ""),))
        settings = rules.settings
        routing = core.route_initial("REGISTER", "", to_domain, from_domain, "", settings)
        if routing.reply is not None:
            return reply_answer(*routing.reply, acts, ((REGISTER_KEPT_VAR, ""),))
        sets: Sets = ((REGISTER_KEPT_VAR, "1"),)
        if settings.auth_realm is not None and core.challenge_for("REGISTER", from_domain, trusted == "1", settings):
            acts += (Act.WWW_AUTH,)
            sets = ((REALM_VAR, settings.auth_realm), *sets)
        if family == "INET6":
            acts += (Act.IPV6_CONTACT,)
        *flags, save = _SAVE[core.registration_of(source, behind_nat)]
        # with a register() of the operator's, it answers in place of the save, after the digest check
        return Answer((*acts, *flags, save if rules.register is None else Act.REGISTER_RULE), sets)

    def _register_ruled(self, rules: Rules, msg: Msg, facts: str) -> Answer:
        """The operator's register() of a REGISTER that passed the digest check (REGISTER_RULE_FACTS): default saves
        it, a reply answers it.  Asked for each REGISTER (a rule may keep state), but a de-registration (every
        binding it names expires now): removing a binding is always allowed.  Nothing of it is kept."""
        register = rules.register
        if register is None:  # the rules changed between this REGISTER's first answer and now: as without it
            return _SAVED
        (head, src_ip, src_port, _private, _length, ruser, fuser, tuser, _type, expires,
         contact) = split_facts(facts, 11, HEAD_END)  # fmt: skip
        if core.unregisters(decoded(expires), decoded(contact)):
            return _SAVED
        _method, proto, nat, _contacts, rdomain, fdomain, tdomain = split_facts(head, 7)
        websocket = core.source_of(proto) is Source.WEBSOCKET
        request = self._with_headers(rules.settings, msg, Request(
            "REGISTER", user_of(ruser), unhex(rdomain).lower(), user_of(fuser), unhex(fdomain).lower(),
            user_of(tuser), unhex(tdomain).lower(), src_ip, int(src_port) if src_port.isdigit() else 0, proto.lower(),
            _BROWSER if websocket else Kind.SIP, websocket or nat == "1", False, (),
        ))  # fmt: skip
        decision = register(request, REGISTERED)
        if decision is REGISTERED:
            return _SAVED
        # Refused: logged (where the rule returned it, explain_refusals), and the REGISTER gets 500
        check_register_answer(decision, register, request, explain=self.explain_refusals)
        return _SAVED if decision.target != "reply" else reply_answer(decision.code or 500, decision.reason or "")

    @staticmethod
    def _with_headers(settings: Settings, msg: Msg, request: Request) -> Request:
        """``request`` with the headers gateway.ini [policy] headers names, for the rules (one host call)."""
        names = settings.tables.headers
        if not names:
            return request
        values = split_facts(msg.get_pseudoVar(header_format(names)), len(names))
        return request._replace(headers=tuple((n, None if v == NULL else text_of(v)) for n, v in zip(names, values)))

    def _check(self, rules: Rules, decision: Decision) -> bool:
        core.check_decision(decision, rules.settings)  # ValueError when the gateway cannot do it
        return True

    def _authorized(self, rules: Rules, msg: Msg) -> Answer:
        incoming, self._pending = self._pending, None
        if incoming is None:
            raise ValueError("on_authorized without a request: the cfg asks it after on_request's www/proxy_auth")
        return self._route(rules, msg, *incoming)

    def _route(self, rules: Rules, msg: Msg, request: Request, private: bool, target: core.Target, may_relay: bool,
               raw_user: int, before: Tuple[str, ...] = ()) -> Answer:  # fmt: skip
        """An authenticated (or exempt) new request other than a REGISTER (``_register``): where the
        gateway.ini tables and the operator's rules send it.  ``private``: the cfg's test of the SDP found a
        private address (where it matters); ``may_relay``: our user or a trusted source (other domains, the
        dial plan's trunks)."""
        settings = rules.settings
        request = self._with_headers(settings, msg, request)
        tables = settings.tables
        default = tables.apply(request, _TO_USER if target is _LOCATION else settings.destination, may_relay)
        # A blocked number is answered before any rule; [media] always_proxy holds whatever a rule returns.
        decision = default if default is BLOCKED else rules.route(request, default)
        if decision is not default:
            if not isinstance(decision, Decision):
                check_answer(decision, settings, rules.route, request, default, explain=self.explain_refusals)
            if not may_relay and decision.target in _RELAYS:
                # A caller of another domain (no password here, so none asked) reaches our users only: no rule
                # sends its call on to a trunk or a URI (the refusal is another decision: kept answers differ).
                decision = NO_RELAY
            elif tables.always_proxy:
                decision = tables.proxied(request, decision)
        if decision.target == "user":
            # The registrar saves and finds no user longer than core.MAX_USER (as written): its lookup() would
            # answer 500 and log two errors a request, for anyone to send.  Nobody is registered so: 404.
            user = decision.user
            if (raw_user if user is None or user == request.ruri_user else len(user.encode())) > core.MAX_USER:
                decision = NOBODY
        # What the decision makes of the request reads only these of it (``Outcome``); the operator's
        # callee() reads all of it, so with such a rule nothing is kept.
        method, ruri_user, _, _, _, _, _, source, port, transport, caller, behind_nat, has_sdp, _ = request
        user = decision.user
        rewrite = user if user is not None and user != ruri_user else None
        # a browser's in-dialog requests come back over its connection
        flow = flow_of(transport, source, port) if caller is _BROWSER and method == "INVITE" else None
        side = settings.side_of(source) if len(settings.interfaces) > 1 else ""  # "" with one interface
        # The answer is kept by the decision's identity and the rest of the Outcome: rules return the same few
        # shared decisions (the tables', the policy module's constructors and changes keep theirs), and hashing
        # a decision's every field costs more than the look-up.  The entry holds the decision (no other object
        # has its id while it is there).  (":" in source: core.is_ipv6, inline as it runs on every call)
        key = (id(decision), before, method, rewrite, transport, flow, has_sdp, private, behind_nat, side,
               ":" in source)  # fmt: skip
        if rules.callee is None:
            kept = self._outcomes.get(key)
            if kept is not None:
                return kept[1]
        # the gateway's own is sound; the rules' is checked once for each equal decision
        if decision is not default and decision not in self._checked:
            try:
                self._kept(self._checked, decision, self._check, rules)  # a function of the decision and the rules
            except core.Refused:
                if self.explain_refusals:  # says where the rule returned it: the rule is asked again, to see it
                    check_answer(decision, settings, rules.route, request, default)
                raise
        outcome = tuple.__new__(Outcome, (decision, *key[1:]))
        if rules.callee is not None:
            return self._carry_out(rules, outcome, request)
        # a decision made anew (equal to one kept, another object) finds its answer by value
        answer = self._kept(self._by_value, outcome, self._carry_out, rules)
        if len(self._outcomes) >= KEPT:
            self._outcomes.clear()
        self._outcomes[key] = (decision, answer)
        return answer

    def _carry_out(self, rules: Rules, outcome: Outcome, request: Optional[Request] = None) -> Answer:
        """The actions and values for a decision: headers, where the request goes, and for an INVITE the
        dialog, the call record and the plan of each kind of branch.  A function of ``outcome`` and the
        rules, and of ``request`` for the operator's callee() when there is one."""
        decision, before = outcome.decision, outcome.before
        if decision.target == "reply":
            return reply_answer(decision.code, decision.reason, before)
        acts: List[str] = list(before)
        sets: List[Tuple[str, str]] = []
        if decision.remove_headers:
            # names are tokens (policy.Decision.without_header): no "|" in them
            sets.append((REMOVE_HEADERS_VAR, "|".join(sorted({h.lower() for h in decision.remove_headers}))))
            acts.append(Act.REMOVE_HEADERS)
        if decision.add_headers:
            sets.append((ADD_HEADERS_VAR, "".join(f"{name}: {value}\r\n" for name, value in decision.add_headers)))
            acts.append(Act.ADD_HEADERS)
        dst_uri = ruri = domain = None
        if decision.target == "user":
            acts.append(Act.LOOKUP)
        elif decision.target == "trunk":
            dst_uri = rules.settings.trunk_uri(decision.trunk or "default")
            domain = rules.settings.trunk_domain(decision.trunk or "default")
        else:
            ruri = decision.uri or ""
        if outcome.method != "INVITE":
            return Answer((*acts, Act.RELAY), tuple(sets), dst_uri, outcome.rewrite, ruri, domain)
        settings = rules.settings
        source = core.source_of(outcome.transport)
        # The cfg tests the SDP itself, only where it matters (core.sdp_privacy_matters).
        nat = outcome.caller_behind_nat
        private_sdp = outcome.has_sdp and outcome.private and core.sdp_privacy_matters(source, nat)
        caller = core.party_of(source, nat, outcome.flow, outcome.caller_ipv6)
        extra = (decision.extra_flags(Kind.BROWSER), decision.extra_flags(Kind.SIP))
        base = CallRecord(caller, outcome.has_sdp, private_sdp, extra=extra)
        record = self._callee_side(base, outcome.caller_side, dst_uri or ruri, settings)
        sets.append((RECORD_VAR, str(record)))
        plans = self._branch_plans(rules, request, decision, record)
        ipv6 = core.is_ipv6(uri_host(dst_uri or ruri or ""))
        if ipv6:
            acts.append(Act.IPV6_CONTACT)  # a trunk's (or a URI's) IPv6 address: the branch's plan of IPv6
        plain = BRANCH_VARS[(Registration.PLAIN_SIP, ipv6)]
        if decision.target != "user":
            # One branch, to a trunk or a URI: no lookup() gave it a contact's flags, so it takes the plan of a
            # plain SIP contact (of IPv6 with IPV6_CONTACT), and only that plan is written: the other kinds' keep
            # what the worker's last call to users left (rewriting them costs a set_pseudoVar each, twice).
            plans = [(name, plan) for name, plan in plans if name == plain]
        sets += plans
        if decision.failover:
            # each next trunk with its branch's plan: the failure route may run in another worker, whose
            # $var(gw_to_plain) holds its own last call's
            later = [outcome.rewrite or ""]
            # each trunk once, whatever its name ("default" is sip_destination's): its address, domain and account
            credentials = settings.credentials
            tried = {(dst_uri, domain, credentials.get(decision.trunk or "default"))}
            for name in decision.failover:
                uri, their_domain = settings.trunk_uri(name), settings.trunk_domain(name)
                key = (uri, their_domain, credentials.get(name))
                if key in tried:
                    continue
                tried.add(key)
                their = self._branch_plans(rules, request, decision,
                                           self._callee_side(base, outcome.caller_side, uri, settings))  # fmt: skip
                plan = dict(their)[plain]
                later += [uri, plan, their_domain or "", name]
            if len(later) > 1:
                sets.append((FAILOVER_AVP, HEAD_END.join(later)))
        trunk = (decision.trunk or "default") if decision.target == "trunk" else ""
        if trunk in settings.credentials:
            # the failure route answers its challenge, maybe in another worker: the branch's plan goes along
            sets.append((TRUNK_AVP, trunk + HEAD_END + dict(plans)[plain]))
        acts += [Act.DIALOG, Act.HIDE_TOPOLOGY if settings.topology_hiding else Act.RECORD_ROUTE, Act.KEEP_RECORD]
        return Answer((*acts, Act.RELAY_CALL), tuple(sets), dst_uri, outcome.rewrite, ruri, domain)

    @staticmethod
    def _callee_side(record: CallRecord, caller_side: str, uri: Optional[str], settings: Settings) -> CallRecord:
        """``record`` with the interfaces facing its parties (gateway.ini [interfaces]), the callee's by the host
        of its trunk or URI; registered users face the default one."""
        if not caller_side:
            return record
        return CallRecord(record.caller, record.early_offer, record.private_sdp, extra=record.extra,
                          sides=(caller_side, settings.side_of(uri_host(uri or ""))))  # fmt: skip

    def _branch_plans(
        self, rules: Rules, request: Optional[Request], decision: Decision, record: CallRecord
    ) -> List[Tuple[str, str]]:
        """What a branch of this call to each kind of contact does: "actions|part|offer flags" (BRANCH_VARS).
        The operator's callee() rule is asked each time, once per kind; the six plans then are a function
        of what they read of the record (the caller's kind, NAT and family, the offer, its privacy, the added
        flags, the interfaces: not a browser's connection) and the media decision of each kind, made once
        for each of those inputs."""
        caller = record.caller
        medias: Tuple[Tuple[MediaProxy, bool], ...]
        if rules.callee is None:
            medias = ((decision.media, False),) * len(Registration)
        else:
            assert request is not None, "callee() reads the request: _route passes it"
            chosen_for = []
            for registration in Registration:  # asked once per kind: a Callee has no address family
                callee = core.callee_of(registration)
                chosen = rules.callee(request, callee, decision)
                check_answer(chosen, rules.settings, rules.callee, request, callee, decision, callee=callee,
                             explain=self.explain_refusals)  # fmt: skip
                if chosen._replace(media=decision.media, dropped=False) != decision:
                    raise ValueError("callee() may change only the media proxy of a branch (or drop it)")
                chosen_for.append((chosen.media, chosen.dropped))
            medias = tuple(chosen_for)
        key = (caller.leg, caller.behind_nat, caller.ipv6, record.early_offer, record.private_sdp, record.extra,
               record.sides, medias)  # fmt: skip
        plans = self._plans.get(key)  # all six by their complete inputs: one look-up a call
        if plans is None:
            if len(self._plans) >= KEPT:
                self._plans.clear()
            plain = CallRecord(Party(caller.leg, caller.behind_nat, None, caller.ipv6), record.early_offer,
                               record.private_sdp, extra=record.extra, sides=record.sides)  # fmt: skip
            media_of = dict(zip(Registration, medias))
            plans = []
            for (registration, ipv6), var in BRANCH_VARS.items():
                media, dropped = media_of[registration]
                plans.append(
                    (var, f"{Act.DROP}||" if dropped else branch_plan(plain, registration, media, rules, ipv6))
                )
            self._plans[key] = plans
        return plans

    # -- in-dialog requests, replies, failures ----------------------------------------

    def _in_dialog(self, rules: Rules, facts: str) -> Answer:
        """An in-dialog request of one of our dialogs, which the cfg matched (loose_route or
        topology_hiding_match, and $DLG_status).  The cfg relays without asking when the dialog has no
        branch through the media proxy (no $dlg_val(gw_track)) and the sender is a SIP peer not behind
        NAT: for such a request there is nothing to do (tests/test_router.py)."""
        method, proto, nat, contacts, length, direction, text, content_type = split_facts(facts, 8)
        has_sdp = as_int(length) > 0 and sdp_type(content_type)
        source = core.source_of(proto)
        behind_nat = source is Source.WEBSOCKET or nat == "1"
        acts = source_actions(method, source, behind_nat, contacts not in ("0", NULL))
        if core.ack_is_quiet(method, has_sdp):
            acts = ()
        plan = core.plan_sequential(
            self._record(text), direction != "upstream", method, has_sdp, rules.settings.profiles
        )
        sets, media = media_sets(plan.action)
        if plan.to_browser:  # over the browser's own WebSocket, or not at all (tcp_no_new_conn_bflag)
            media += (Act.WEBRTC_CONTACT,)
        if plan.exchange is not None:
            sets += ((EXCHANGE_AVP, str(plan.exchange)),)
            return Answer((*acts, *media, Act.RELAY_TRACKED), sets, plan.dst_uri)
        return Answer((*acts, *media, Act.RELAY), sets, plan.dst_uri)

    def _info(self, rules: Rules, msg: Msg, facts: str) -> Answer:
        """A SIP INFO: a DTMF digit from a browser toward a SIP leg through rtpengine is played into the media
        as RFC 4733 events (core.info_to_rfc4733) and the INFO answered here; anything else as ``_in_dialog``."""
        _method, _proto, _nat, _contacts, length, direction, text, content_type = split_facts(facts, 8)
        kind = text_of(content_type) if content_type != NULL else ""
        if as_int(length) > 0 and core.info_to_rfc4733(
            self._record(text), direction != "upstream", rules.settings.profiles
        ):
            digit = core.info_digit(kind, text_of(msg.get_pseudoVar(BODY) or ""))
            if digit is not None:
                return Answer(
                    (Act.PLAY_DTMF, Act.REPLY), ((DTMF_VAR, digit), (REPLY_CODE_VAR, "200"), (REPLY_REASON_VAR, "OK"))
                )
        return self._kept(self._in_dialogs, in_dialog_key(facts), self._in_dialog, rules)

    def _reply(self, rules: Rules, facts: str) -> Answer:
        (status_text, proto, index, length, method, contacts, src_ip, src_port, exchange_text, record_text,
         content_type) = split_facts(facts, 11)  # fmt: skip
        profiles = rules.settings.profiles
        status = as_int(status_text)
        has_sdp = as_int(length) > 0 and sdp_type(content_type)
        has_contact = contacts not in ("0", NULL)
        sequential = self._exchange(exchange_text)
        if sequential is not None:
            action = core.plan_sequential_reply(sequential, status, has_sdp, profiles)
            fix = sequential.receiver.behind_nat and 100 < status < 300 and has_contact
            sets, media = media_sets(action)
            return Answer(((Act.FIX_CONTACT,) if fix else ()) + media or (Act.NONE,), (*sets, _NOT_KEPT))
        record = self._record(record_text)
        if method != "INVITE" or record is None:
            return Answer((Act.NONE,), (_NOT_KEPT,))
        flow = flow_of(proto, src_ip, as_int(src_port)) if core.source_of(proto) is Source.WEBSOCKET else None
        plan = core.plan_initial_reply(record, as_int(index), status, has_sdp, profiles, flow)
        acts: List[str] = [Act.FIX_CONTACT] if plan.fix_contact and has_contact else []
        acts += [_COUNT[name] for name in plan.stats]
        if plan.stats and plan.record is not None and core.acks_are_quiet(plan.record):
            # the cfg relays this dialog's ACKs without a body itself; and its SIP peers' BYEs, with the delete
            acts.append(Act.QUIET_BYE if core.byes_are_quiet(plan.record, profiles) else Act.QUIET_ACK)
        sets, media = media_sets(plan.action)
        if plan.record is not None:
            acts.insert(0, Act.NEW_RECORD)
            sets = ((REPLY_RECORD_VAR, str(plan.record)), *sets)
        # the cfg takes this answer again for the same facts (REPLY_KEYS), but not a browser's (the router reads
        # its source, which the cfg does not compare), nor one without a body: the python_execs worth saving are
        # the 2xx with SDP, and with a Content-Type no kept fact is NULL (docs/host-facts.md, comparing)
        kept = flow is None and content_type != NULL
        return Answer(tuple(acts) + media or (Act.NONE,), (*sets, _KEPT if kept else _NOT_KEPT))

    def _failure(self, rules: Rules, facts: str, msg: Optional[Msg] = None) -> Answer:
        """A call failed (every branch): rtpengine lets go of its media; a call to a trunk whose reply is one
        of gateway.ini's failover_on goes on to its next trunk, if it has one (FAILOVER_AVP).  A 408 counts only
        when the trunk sent nothing at all (it is down); one that rang until tm gave up did reach the callee.
        A trunk's challenge (401, 407) is answered with its credentials, to the same trunk (``_challenged``); a
        challenge the gateway does not answer fails over, or the caller gets REFUSED_CREDENTIALS."""
        text, code, silent, later, trunk, www, proxy = split_facts(facts, 7)
        sets, media = media_sets(core.plan_failure(self._record(text), rules.settings.profiles))
        status = as_int(code)
        refused = False
        if trunk not in (NULL, "") and code in CHALLENGES:
            answer, why = self._challenged(rules, trunk, decoded(www if status == 401 else proxy), sets, media)
            if answer is not None:
                return answer
            refused = True
            if msg is not None:
                self.log(f"gateway: trunk {trunk.split(HEAD_END, 1)[0]} challenged Call-ID {msg.getHeader('Call-ID')}"
                         f" ({status}) and the gateway did not answer: {why}\n")  # fmt: skip
        if (later not in (NULL, "") and (refused or status in rules.settings.failover_on)
                and (status != 408 or silent == "1")):  # fmt: skip
            # _carry_out's: "user or ''<tab>uri<tab>its branch's plan<tab>its domain or ''<tab>its name<tab>uri..."
            user, uri, plan, domain, name, *rest = later.split(HEAD_END)
            var = plain_var(uri)
            sets += ((var, plan), (FAILOVER_AVP, HEAD_END.join((user, *rest)) if rest else ""))
            if name in rules.settings.credentials:
                sets += ((TRUNK_AVP, name + HEAD_END + plan),)
            elif trunk not in (NULL, ""):
                sets += ((TRUNK_AVP, ""),)  # not the last trunk's credentials
            return Answer((*media, Act.FAILOVER), sets, uri, user or None, ruri_domain=domain or None)
        if refused:
            return reply_answer(*REFUSED_CREDENTIALS, media, sets)
        return Answer(media or (Act.NONE,), sets)

    @staticmethod
    def _challenged(rules: Rules, trunk: str, header: str, sets: Sets, media: Tuple[str, ...]
                    ) -> Tuple[Optional[Answer], str]:  # fmt: skip
        """A challenge of the trunk of TRUNK_AVP's ``trunk`` (its value), from its ``header``: the answer that sends
        the call to it again with its credentials (uac_auth() in the challenge's realm), or None and why not."""
        name, *state = trunk.split(HEAD_END)
        credentials = rules.settings.credentials.get(name)
        challenge = core.digest_challenge(header)
        realm = challenge.get("realm")
        if credentials is None:
            return None, ("gateway.ini has no auth_user= for it now (the trunk was renamed, or lost its account, "
                          "since the call began)")  # fmt: skip
        if realm is None:
            return None, f"{header[:80]!r} is no digest challenge with a realm"
        if credentials.realm is not None and realm != credentials.realm:
            return None, f"it challenged in realm {realm!r}, and its auth_realm= is {credentials.realm!r}"
        if state:  # its first challenge in this call
            uri = rules.settings.trunk_uri(name)
            var = plain_var(uri)
            sets += ((var, state[0]), (TRUNK_AVP, name), (AUTH_REALM_AVP, realm), (AUTH_USER_AVP, credentials.user),
                     (AUTH_PASSWORD_AVP, credentials.password))  # fmt: skip
            return Answer((*media, Act.AUTHENTICATE), sets, uri), ""
        if challenge.get("stale", "").lower() == "true":
            return None, (f"it called the nonce of the gateway's answer stale (realm {realm!r}): the gateway answers a "
                          "trunk once a call (a second uac_auth() would send the first one's CSeq again)")  # fmt: skip
        return None, (f"it challenged the answer of auth_user={credentials.user} again (realm {realm!r}): check its "
                      "auth_user= and auth_password=")  # fmt: skip

    def _exchange(self, text: str) -> Optional[Exchange]:
        return self._stored(text, Exchange.parse, "exchange")

    def _record(self, text: Optional[str]) -> Optional[CallRecord]:
        return self._stored(text, CallRecord.parse, "dialog record")

    def _stored(self, text: Optional[str], parse: Callable[[str], T], what: str) -> Optional[T]:
        """A value the gateway stored ($dlg_val, $avp); an unreadable one is ignored with a log line."""
        if text is None or optional(text) is None:
            return None
        try:
            return parse(text)
        except ValueError as exc:
            self.log(f"gateway: ignoring unreadable {what}: {exc}\n")
            return None


def plain_var(uri: str) -> str:
    """The $var of the plan of a branch to the trunk (or URI) ``uri``: a plain SIP contact's, of IPv6 at an IPv6
    address (``Router._carry_out``)."""
    return BRANCH_VARS[(Registration.PLAIN_SIP, core.is_ipv6(uri_host(uri)))]


def reply_key(facts: str) -> str:
    """A reply's facts as its decision reads them (``Router._reply``), which makes them its complete inputs:
    the Content-Length only as whether there is a body, the source only from a WebSocket (a browser's
    connection).  The decision is made from this key, not from the facts, so it cannot read what the
    key leaves out; replies of many calls from many phones share their keys."""
    fields = facts.split(SEP, 10)
    if len(fields) != 11:
        split_facts(facts, 11)  # says what is wrong
    length = fields[3]
    fields[3] = "1" if length.isdigit() and int(length) > 0 else "0"  # as_int, inline: every reply comes here
    if fields[1].lower() not in core.WEBSOCKET_PROTOS:  # core.source_of
        fields[6] = fields[7] = ""
    return SEP.join(fields)


def in_dialog_key(facts: str) -> str:
    """An in-dialog request's facts as ``Router._in_dialog`` reads them: the Content-Length only as whether
    there is a body (``reply_key``)."""
    fields = split_facts(facts, 8)
    fields[4] = "1" if as_int(fields[4]) > 0 else "0"
    return SEP.join(fields)


@functools.lru_cache(maxsize=256)
def source_actions(method: str, source: Source, behind_nat: bool, has_contact: bool) -> Tuple[str, ...]:
    """The flags and NAT fixes any request gets from where it came (a pure function: kept by its arguments)."""
    acts: Tuple[str, ...] = ()
    if source is Source.WEBSOCKET:
        acts = (Act.WS, Act.NAT)
    elif behind_nat:
        acts = (Act.NAT, Act.RPORT)
    fix = core.contact_fix(method, behind_nat) if has_contact else None
    if fix is not None:
        acts += (Act.FIX_REGISTER if fix == "fix_nated_register" else Act.FIX_CONTACT,)
    return acts


def media_sets(action: Optional[MediaAction]) -> Tuple[Sets, Tuple[str, ...]]:
    """The rtpengine action and its flags, left in the step's $var (MEDIA_FLAGS_VARS)."""
    if action is None:
        return (), ()
    return ((MEDIA_FLAGS_VARS[action.step], action.flags),), (_MEDIA_ACTS[action.step],)


def reply_answer(code: int, reason: str, before: Tuple[str, ...] = (), sets: Sets = ()) -> Answer:
    """The cfg sends it after the flags (force_rport decides where a reply to a NATed sender goes)."""
    return Answer((*before, Act.REPLY), ((REPLY_CODE_VAR, str(code)), (REPLY_REASON_VAR, reason), *sets))


def branch_plan(
    record: CallRecord, registration: Registration, media: MediaProxy, rules: Rules, ipv6: bool = False
) -> str:
    """A branch's plan (BRANCH_VARS), for any index: the cfg adds the branch's own to the record part's key
    and to the offer's flags.  A branch without the media proxy to a callee not behind NAT needs nothing
    from us but the count of its answer, and stays off the call record (core.plan_initial_reply)."""
    plan = core.plan_branch(record, 0, registration, rules.settings.profiles, media, ipv6)
    branch = plan.record.branch(0)
    assert branch is not None
    if not branch.media_proxy and not branch.callee.behind_nat:
        return f"{Act.ON_ANSWER}||"
    acts = [Act.TRACK] if branch.media_proxy else []
    # a callee not behind NAT: nothing to fix in its replies, media only in those with a body
    acts.append(Act.ON_REPLY if branch.callee.behind_nat else Act.ON_REPLY_QUIET)
    acts.append(Act.RECORD_BRANCH)
    offer = ""
    if plan.action is not None:
        acts.append(Act.OFFER_BRANCH)
        offer = core.unindexed(plan.action.flags, 0)
    return ",".join(acts) + "|" + branch.code + "|" + offer
