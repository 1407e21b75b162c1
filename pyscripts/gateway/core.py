"""The routing decisions, as plain functions of plain facts.

Theory of operation
-------------------
OpenSIPS hands us a request, then each branch it forks, then each reply and
the final failure.  At each point the host adapter reads a few facts (the
transport, NAT signs, the branch flags of the contact, the record kept with
the dialog) and asks this module what to do; it answers with values from
``model.py``.  Nothing here calls OpenSIPS, so every rule below is testable
without it, and the rtpengine flags come from one table (``profiles.py``).

The rules:
- A message from a WebSocket (ws/wss) comes from a browser and is behind NAT;
  a SIP peer is behind NAT when nathelper's tests say so.
- A registration is WebRTC (from a WebSocket), NATed SIP, or plain SIP, and is
  stored as branch flags with the contact.
- A call leg that is a browser needs the media proxy; two SIP legs need it only
  when the caller's SDP has private addresses or either end is behind NAT.
- SDP is rewritten for where it goes: the profile row is chosen by the kind of
  the leg it comes from and the kind of the leg it goes to (for re-INVITEs,
  the stored kind of the other leg).
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .model import Branch, CallRecord, Exchange, Leg, Media, MediaAction, Party, Registration, Source, Step
from .policy import Callee, Decision, Kind, MediaProxy, validate
from .profiles import UNTRUSTED_SIP_SOURCE, Profiles, format_key, problems
from .settings import Settings, one_family

#: nathelper tests for SIP peers (named tests, OpenSIPS 3.4+): a private Contact,
#: or a source address/port that differs from what the top Via claims.
NAT_TESTS = "private-contact,diff-ip-src-via,diff-port-src-via"

#: Branch flags kept with a contact in the location table, by registration kind.
REGISTRATION_BFLAGS = {
    Registration.WEBRTC: ("WEBRTC",),
    Registration.NATED_SIP: ("NATED",),
    Registration.PLAIN_SIP: (),
}
#: And beside it, for a contact that registered over IPv6 (any kind): rtpengine offers it IPv6.
IPV6_BFLAG = "IPV6"
#: Message flags: where the request came from (visible to branch, reply and failure routes).
SOURCE_FLAGS = {Source.WEBSOCKET: ("SRC_WS", "SRC_NAT")}
NAT_FLAG = "SRC_NAT"

WEBSOCKET_PROTOS = frozenset({"ws", "wss"})


def source_of(proto: str) -> Source:
    """Source kind from ``$socket_in(proto)`` (there is no ``$pr`` in OpenSIPS 3.4+)."""
    return Source.WEBSOCKET if proto.lower() in WEBSOCKET_PROTOS else Source.SIP


@functools.lru_cache(maxsize=1024)
def party_of(source: Source, behind_nat: bool, flow: Optional[str] = None, ipv6: bool = False) -> Party:
    """The sender of a request; ``flow`` is kept for browsers only (see Party.flow).  Parties are
    immutable values: one per kind (and per browser connection) is made and shared."""
    if source is Source.WEBSOCKET:
        return Party(Leg.WEB, True, flow, ipv6)
    return Party(Leg.SIP, behind_nat, None, ipv6)


@functools.cache
def party_registered(registration: Registration, ipv6: bool = False) -> Party:
    """The callee a contact of this kind (registered over IPv6 or not) is: one shared value per kind."""
    return Party(registration.leg, registration.behind_nat, None, ipv6)


def is_ipv6(address: str) -> bool:
    """Whether a source address ($si) or a URI's host is IPv6 (OpenSIPS prints $si bare, a URI brackets it)."""
    return ":" in address


def registration_of(source: Source, behind_nat: bool) -> Registration:
    if source is Source.WEBSOCKET:
        return Registration.WEBRTC
    return Registration.NATED_SIP if behind_nat else Registration.PLAIN_SIP


def registration_from_bflags(bflags: str) -> Registration:
    """Inverse of REGISTRATION_BFLAGS, from ``$bf`` (flag names separated by spaces)."""
    names = bflags.split()
    if "WEBRTC" in names:
        return Registration.WEBRTC
    if "NATED" in names:
        return Registration.NATED_SIP
    return Registration.PLAIN_SIP


def contact_fix(method: str, behind_nat: bool) -> Optional[str]:
    """The nathelper function that rewrites a NATed Contact, if one is needed.

    A REGISTER keeps the source as ``received`` (fix_nated_register) so lookups
    reach the device through its NAT or WebSocket; anything else gets its
    Contact rewritten (fix_nated_contact) so in-dialog requests come back over
    the same flow; but a BYE, which ends the dialog: no request follows it, and
    its Contact, if it has one, is no one's target (RFC 3261 12.2).
    """
    if not behind_nat or method == "BYE":
        return None
    return "fix_nated_register" if method == "REGISTER" else "fix_nated_contact"


def sdp_privacy_matters(source: Source, behind_nat: bool) -> bool:
    """Whether private addresses in a caller's SDP can change a decision: only for a SIP caller
    not behind NAT.  A browser, or a phone behind NAT, takes the media proxy and (a phone)
    SIP-source-address anyway (needs_media_proxy, media_action), so its SDP need not be read."""
    return source is Source.SIP and not behind_nat


def needs_media_proxy(caller: Party, callee: Party, private_sdp: bool, media: MediaProxy = MediaProxy.AUTO) -> bool:
    """Whether a branch takes rtpengine: always with a browser on either end (only rtpengine bridges
    DTLS-SRTP/ICE and plain RTP); else as the operator's rules say, by default when a party is behind
    NAT or the caller's SDP names private addresses."""
    if caller.leg is Leg.WEB or callee.leg is Leg.WEB or media is MediaProxy.ALWAYS:
        return True
    if media is MediaProxy.NEVER:
        return False
    return private_sdp or caller.behind_nat or callee.behind_nat


#: The policy's kinds of party as the core's legs, and back.
LEG_OF = {Kind.BROWSER: Leg.WEB, Kind.SIP: Leg.SIP}
KIND_OF = {Leg.WEB: Kind.BROWSER, Leg.SIP: Kind.SIP}


def callee_of(registration: Registration) -> Callee:
    return Callee(KIND_OF[registration.leg], registration.behind_nat)


def registration_of_callee(callee: Callee) -> Registration:
    if callee.kind is Kind.BROWSER:
        return Registration.WEBRTC
    return Registration.NATED_SIP if callee.behind_nat else Registration.PLAIN_SIP


def _flag_problems(profiles: Profiles, leg: Leg, extra: str) -> Tuple[str, ...]:
    """What is wrong with offers toward ``leg`` carrying ``extra``, each problem once with the rows it breaks:
    a pure function of the (immutable) table and its other arguments, so kept with the table by those
    arguments."""
    found = profiles.checked.get((leg, extra))
    if found is None:
        rows: Dict[str, List[str]] = {}
        for key in ((sender, leg, step) for sender in Leg for step in (Step.OFFER, Step.REOFFER)):
            for p in problems(key, f"{profiles[key]} {extra}"):
                rows.setdefault(p, []).append(format_key(key))
        found = tuple(f"{p} ({', '.join(keys)})" for p, keys in rows.items())
        if len(profiles.checked) < 4096:
            profiles.checked[(leg, extra)] = found
    return found


class Refused(ValueError):
    """What a rule answered is nothing the gateway can do (``check_decision``); no line of the rule raised."""


def check_decision(decision: Decision, settings: Settings, callee: Optional[Callee] = None) -> None:
    """Refused (a ValueError) when the gateway cannot do what a rule decided: an unknown trunk, rtpengine flags
    that would break a leg (the profile rules: a browser-bound offer keeps DTLS, ICE and SAVPF), a target
    given where only media may change (``callee``).  The message names the decision."""
    if not isinstance(decision, Decision):
        raise Refused(f"a rule answered {decision!r}, not a Decision")
    try:
        _check_decision(decision, settings, callee)
    except ValueError as exc:
        raise Refused(f"the rules answered '{decision}': {exc}") from None


#: A digest challenge's parameters (RFC 7616 3.3): name=token or name="quoted string".
_CHALLENGE_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)')


def digest_challenge(text: str) -> Dict[str, str]:
    """A WWW-Authenticate or Proxy-Authenticate value's parameters, names in lower case (``realm``, ``nonce``,
    ``qop``, ``algorithm``, ``stale``); {} for what is no digest challenge."""
    scheme, _, rest = text.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    found: Dict[str, str] = {}
    at = 0
    while at < len(rest):
        match = _CHALLENGE_PARAM.match(rest, at)
        if match is None or match.end() == at:
            return found
        quoted = match.group(2)
        found[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else match.group(3)
        at = match.end()
    return found


def unregisters(expires: str, contact: str) -> bool:
    """Whether a REGISTER with this Expires header value and this (first) Contact header removes its bindings
    (RFC 3261 10.2.2): ``*``, or each contact's expires parameter 0, or none and an Expires of 0."""
    if contact.strip() == "*":
        return True
    found = re.findall(r";\s*expires\s*=\s*\"?(\d+)", contact, re.I)
    if found:
        return all(int(value) == 0 for value in found)
    return expires.strip() == "0"


def check_register_decision(decision: Decision, default: Decision) -> None:
    """Refused unless a REGISTER's rule (the operator's ``register()``) answered ``default`` (the registration is
    saved) or a reply: a registration goes nowhere else, and carries no header or media of a rule's."""
    if not isinstance(decision, Decision):
        raise Refused(f"register() answered {decision!r}, not a Decision")
    if decision.target != "reply" and decision != default:
        changed = " (default, changed)" if decision.target == default.target else ""
        raise Refused(f"register() answers default (the registration is saved) or reply(code, reason), "
                      f"not '{decision}'{changed}")  # fmt: skip
    try:
        validate(decision)
    except ValueError as exc:
        raise Refused(f"register() answered '{decision}': {exc}") from None


def _check_decision(decision: Decision, settings: Settings, callee: Optional[Callee]) -> None:
    validate(decision)  # a decision made by hand or with _replace: each field as the constructors check it
    if callee is not None and (decision.add_headers or decision.remove_headers):
        raise ValueError("callee() may change the media and rtpengine flags of a branch, not its headers")
    if decision.target == "trunk" and decision.trunk is not None:
        one_family(settings.trunk_uri(name) for name in (decision.trunk, *decision.failover))
    if not decision.rtpengine:
        return
    for kind in Kind:
        extra = decision.extra_flags(kind)
        if extra:
            found = _flag_problems(settings.profiles, LEG_OF[kind], extra)
            if found:
                raise ValueError(
                    f"rtpengine flags {extra!r} toward {kind.value} legs refused, whatever this call's callee: "
                    + "; ".join(found)
                )


class Target(enum.Enum):
    LOCATION = "location"
    DESTINATION = "destination"
    LOCAL_REPLY = "local-reply"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Routing:
    target: Target
    reply: Optional[Tuple[int, str]] = None
    """The reply to send for LOCAL_REPLY and REFUSE."""


# The outcomes of route_initial: immutable, made once.
_TO_LOCATION = Routing(Target.LOCATION)
_TO_DESTINATION = Routing(Target.DESTINATION)
_NOT_OUR_DOMAIN = Routing(Target.REFUSE, (403, "Forbidden - Not Our Domain"))
_OPTIONS_OK = Routing(Target.LOCAL_REPLY, (200, "OK"))
_NO_USER = Routing(Target.REFUSE, (404, "Not Found"))
#: Another domain's caller (not a trusted source) sent to another domain: by its R-URI, or by a rule.
NO_RELAY_REPLY = (403, "Relaying Forbidden")
_NO_RELAY = Routing(Target.REFUSE, NO_RELAY_REPLY)
_NO_ROUTE = Routing(Target.REFUSE, (404, "No Route To Destination"))


def route_initial(
    method: str, ruri_user: str, ruri_domain: str, from_domain: str, source_ip: str, settings: Settings
) -> Routing:
    """Where an initial (out-of-dialog) request goes."""
    if method == "REGISTER":
        return _TO_LOCATION if settings.is_local(ruri_domain) else _NOT_OUR_DOMAIN
    if settings.is_local(ruri_domain):
        if not ruri_user:
            return _OPTIONS_OK if method == "OPTIONS" else _NO_USER
        return _TO_LOCATION
    # No open relay: only our users and trusted peers may reach other domains.
    if not settings.is_local(from_domain) and source_ip not in settings.trusted_sources:
        return _NO_RELAY
    if settings.sip_destination is None:
        return _NO_ROUTE
    return _TO_DESTINATION


class Challenge(enum.Enum):
    """Which digest exchange a request must pass (RFC 3261 22): 401 for a registrar, 407 for a proxy."""

    WWW = "www"
    PROXY = "proxy"

    @property
    def authorize(self) -> str:
        return f"{self.value}_authorize"

    @property
    def challenge(self) -> str:
        return f"{self.value}_challenge"

    @property
    def address_user(self) -> str:
        """The user of the address the credentials must belong to: To for REGISTER, From else.

        Not auth_db's db_is_to/from_authorized: they look the pair up in a ``uri`` table
        (username, domain, uri_user) and fail against the subscriber table.
        """
        return "$tU" if self is Challenge.WWW else "$fU"


#: The subscriber table of auth_db (in the SQLite database site.cfg names).
SUBSCRIBERS = "subscriber"

NO_AUTH = frozenset({"ACK", "CANCEL", "PRACK", "BYE"})


def owns_address(auth_user: str, address_user: str) -> bool:
    """Digest credentials of ``auth_user`` may register or call as ``address_user`` only: the same user."""
    return bool(auth_user) and auth_user == address_user


def challenge_for(method: str, from_domain: str, trusted: bool, settings: Settings) -> Optional[Challenge]:
    """Whether an initial request must authenticate: REGISTER always, our own users' requests too.

    Requests from other domains to our users come in unauthenticated (that is how calls arrive);
    they cannot be relayed elsewhere (route_initial refuses them).  Trusted sources are exempt.
    """
    if settings.auth_realm is None or method in NO_AUTH or trusted:
        return None
    if method == "REGISTER":
        return Challenge.WWW
    return Challenge.PROXY if settings.is_local(from_domain) else None


def answered_call_stats(record: CallRecord, index: int) -> Tuple[str, ...]:
    """Statistics bumped once per answered call: its direction, and whether it took the media proxy."""
    branch = record.branch(index)
    if branch is None:
        return ()
    return _ANSWERED_STATS[(record.caller.leg, branch.callee.leg, branch.media_proxy)]


STATISTICS = (*(f"calls_{a.value}_to_{b.value}" for a in Leg for b in Leg), "media_proxy_calls")
_ANSWERED_STATS = {
    (a, b, proxied): (f"calls_{a.value}_to_{b.value}", *(("media_proxy_calls",) if proxied else ()))
    for a in Leg
    for b in Leg
    for proxied in (False, True)
}


#: The longest user part the registrar saves or looks up, as written in the URI (lib/reg's USERNAME_MAX_SIZE, 64 in
#: 3.6 and 4.0: longer, extract_aor() logs "Address Of Record too long" and save()/lookup() answer 500).
MAX_USER = 64


def lookup_failure(code: int) -> Tuple[int, str]:
    """The reply for a failed ``lookup("location")`` (registrar return codes)."""
    if code == -2:
        return 405, "Method Not Allowed"
    if code == -3:
        return 500, "Server Internal Error - Lookup"
    return 404, "Not Found"


#: The end of a branch's offer flags, before its index: one rtpengine session per branch (media_action).
BRANCH_PARAM = "via-branch-param=br"


def media_action(
    profiles: Profiles,
    step: Step,
    sender: Party,
    receiver: Leg,
    private_sdp: bool = False,
    branch: Optional[int] = None,
    added: str = "",
    sides: Tuple[str, str] = ("", ""),
    ipv6: bool = False,
) -> MediaAction:
    """The rtpengine call for SDP going from ``sender`` to a ``receiver`` leg; ``added``: the operator's
    flags for this call's offers (check_decision checked them against the table); ``sides``: rtpengine's
    interfaces facing the sender and the receiver, named in offers (rtpengine keeps them for the answer);
    ``ipv6``: the receiver is reached over IPv6.  rtpengine writes the SDP for a side in the family that
    side's own SDP used; toward a side it has not heard yet (a callee's offer, a late offer to the caller)
    it takes its first address's, IPv4: ``address-family=IP6`` names the family (docs/host-facts.md)."""
    untrusted = step is not Step.DELETE and sender.leg is Leg.SIP and (sender.behind_nat or private_sdp)
    if step not in (Step.OFFER, Step.REOFFER):
        added, sides = "", ("", "")
    ipv6 = ipv6 and step is not Step.DELETE
    key = (sender.leg, receiver, step, untrusted, branch, added, sides, ipv6)
    action = profiles.actions.get(key)  # made once for each of its complete inputs
    if action is None:
        extra = [UNTRUSTED_SIP_SOURCE] if untrusted else []
        if added:
            extra.append(added)
        if sides[0]:
            # OpenSIPS's rtpengine module makes ng's "direction" list of these two (a direction= flag
            # would go as one string, not a list): rtpengine keeps them for the answer
            extra += (f"in-iface={sides[0]}", f"out-iface={sides[1]}")
        if ipv6:
            extra.append(ADDRESS_FAMILY_IP6)
        if branch is not None:
            # One rtpengine session per branch, so a browser and a phone of one user
            # can both be offered. "via-branch=auto" fails in OpenSIPS 3.6/4.0
            # (parsed, then refused when building the command), so name it ourselves.
            extra.append(f"{BRANCH_PARAM}{branch}")
        # each flag once: a rule's flag may be one of its row's already (made once per key, as the rest)
        words = " ".join([profiles[(sender.leg, receiver, step)], *extra]).split()
        action = MediaAction(step, " ".join(dict.fromkeys(words)))
        if len(profiles.actions) < 4096:
            profiles.actions[key] = action
    return action


#: rtpengine's SDP toward an IPv6 party names rtpengine's IPv6 address (ng "address family").
ADDRESS_FAMILY_IP6 = "address-family=IP6"


def unindexed(flags: str, index: int) -> str:
    """A branch's offer flags without its index, which the cfg adds back ($T_branch_idx)."""
    if not flags.endswith(f"{BRANCH_PARAM}{index}"):
        raise ValueError(f"not the offer flags of branch {index}: {flags!r}")
    return flags[: -len(str(index))]


@dataclass(frozen=True, init=False)
class BranchPlan:
    record: CallRecord
    action: Optional[MediaAction]

    def __init__(self, record: CallRecord, action: Optional[MediaAction]) -> None:
        fields = self.__dict__  # one per branch: as model.Branch's
        fields["record"] = record
        fields["action"] = action


def plan_branch(
    record: CallRecord,
    index: int,
    registration: Registration,
    profiles: Profiles,
    media: MediaProxy = MediaProxy.AUTO,
    ipv6: bool = False,
) -> BranchPlan:
    """Decide the media proxy for one branch of an initial INVITE to a contact of this kind (registered
    over IPv6 or not) and, with an early offer, the offer."""
    callee = party_registered(registration, ipv6)
    if not needs_media_proxy(record.caller, callee, record.private_sdp, media):
        return BranchPlan(record.with_branch(index, Branch(callee, Media.NONE)), None)
    if not record.early_offer:
        return BranchPlan(record.with_branch(index, Branch(callee, Media.PENDING)), None)
    added = record.extra_toward(callee.leg)
    action = media_action(profiles, Step.OFFER, record.caller, callee.leg, record.private_sdp, index, added,
                          record.sides, callee.ipv6)  # fmt: skip
    return BranchPlan(record.with_branch(index, Branch(callee, Media.OPEN)), action)


@dataclass(frozen=True)
class ReplyPlan:
    action: Optional[MediaAction] = None
    fix_contact: bool = False
    record: Optional[CallRecord] = None
    """A new record to store, when the reply changes it (a 2xx picks the answered branch)."""
    stats: Tuple[str, ...] = ()
    """Statistics to bump (the first 2xx of a call)."""


def plan_initial_reply(
    record: CallRecord, index: int, status: int, has_sdp: bool, profiles: Profiles, flow: Optional[str] = None
) -> ReplyPlan:
    """Reply to an initial INVITE on branch ``index``, received over ``flow``."""
    branch = record.branch(index)
    if branch is None:
        # A branch off the record: one to a plain SIP contact without the media proxy, which the cfg
        # forks and counts without asking.  Its 2xx comes here only when another branch took the
        # media proxy: that session goes.
        if 200 <= status < 300 and record.answered is None and record.media_open:
            counted = _ANSWERED_STATS[(record.caller.leg, Leg.SIP, False)]
            return ReplyPlan(MediaAction(Step.DELETE, ""), False, record.with_answer(index), counted)
        return ReplyPlan()
    fix = branch.callee.behind_nat and 100 < status < 300
    answered = 200 <= status < 300
    if status >= 300:
        # No per-branch delete: OpenSIPS sends a delete without tags and rtpengine
        # (10.5) then deletes the entire call, via-branch or not, cutting the branch
        # that answers a forked call.  The failure route deletes the call when every
        # branch failed; after an answer the BYE does.
        return ReplyPlan(None, fix, None)
    stats = answered_call_stats(record, index) if answered and record.answered is None else ()
    if answered and not branch.media_proxy and record.media_open:
        # A forked call answered on a branch without the media proxy: the session another branch
        # opened is nobody's now (the BYE deletes nothing for this branch), and rtpengine would
        # hold its ports until its own timeout.  The delete takes the whole call: this one has none.
        return ReplyPlan(MediaAction(Step.DELETE, ""), fix, record.with_answer(index, flow), stats)
    if not branch.media_proxy or not has_sdp or status < 180:
        return ReplyPlan(None, fix, record.with_answer(index, flow) if answered else None, stats)
    if record.early_offer:
        action = media_action(profiles, Step.ANSWER, branch.callee, record.caller.leg, branch=index,
                              ipv6=record.caller.ipv6)  # fmt: skip
    else:
        # Late offer: the callee's SDP is the offer (answered in the ACK, or PRACK); the reply's
        # To-tag already tells rtpengine which branch it is.
        action = media_action(profiles, Step.OFFER, branch.callee, record.caller.leg,
                              added=record.extra_toward(record.caller.leg), sides=record.sides[::-1],
                              ipv6=record.caller.ipv6)  # fmt: skip
        record = record.with_branch(index, branch.with_media(Media.OPEN))
    return ReplyPlan(action, fix, record.with_answer(index, flow) if answered else record, stats)


def plan_failure(record: Optional[CallRecord], profiles: Profiles) -> Optional[MediaAction]:
    """The whole INVITE failed: delete whatever rtpengine still holds for the call."""
    if record is None or not record.media_open:
        return None
    return MediaAction(Step.DELETE, "")


@dataclass(frozen=True)
class SequentialPlan:
    action: Optional[MediaAction] = None
    exchange: Optional[Exchange] = None
    """What the reply route needs, for requests whose replies carry SDP."""
    dst_uri: Optional[str] = None
    """Where to send the request when the receiver is a browser: back over its own connection."""
    to_browser: bool = False
    """The receiver is a browser: reached over its own connection or not at all (no new one is opened)."""


def legs_of(record: CallRecord, downstream: bool) -> Optional[Tuple[Party, Party]]:
    """(sender, receiver) of an in-dialog request; None before the dialog was answered."""
    callee = record.callee_branch
    if callee is None:
        return None
    if downstream:
        return record.caller, callee.callee
    return callee.callee, record.caller


#: The bodies of SIP INFO that carry a DTMF digit: JsSIP's ``Signal=5`` lines, and the digit alone.
DTMF_RELAY, DTMF = "application/dtmf-relay", "application/dtmf"
DTMF_DIGITS = frozenset("0123456789*#ABCD")


def info_digit(content_type: str, body: str) -> Optional[str]:
    """The DTMF digit a SIP INFO carries (``Signal=5`` in application/dtmf-relay, ``5`` in
    application/dtmf), None for anything else."""
    kind = content_type.split(";", 1)[0].strip().lower()
    text = body.strip()
    if kind == DTMF_RELAY:
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip().lower() == "signal":
                text = value.strip()
                break
        else:
            return None
    elif kind != DTMF:
        return None
    return text.upper() if len(text) == 1 and text.upper() in DTMF_DIGITS else None


def info_to_rfc4733(record: Optional[CallRecord], downstream: bool, profiles: Profiles) -> bool:
    """Whether a DTMF digit a SIP INFO brings goes into the call's media as RFC 4733 events instead of on
    as INFO: from a browser (which sends INFO by default) to a SIP leg, when rtpengine carries the call's
    media and the flag table lets it play DTMF there (profiles.INJECT_DTMF; gateway.ini ``[media]
    info_dtmf``).  Phones and PBXs expect RFC 4733; a browser's JsSIP takes INFO and is sent it as it came."""
    legs = None if record is None else legs_of(record, downstream)
    if record is None or legs is None or not profiles.plays_info_dtmf:
        return False
    sender, receiver = legs
    callee = record.callee_branch
    return sender.leg is Leg.WEB and receiver.leg is Leg.SIP and callee is not None and callee.media is Media.OPEN


def ack_is_quiet(method: str, has_sdp: bool) -> bool:
    """An ACK without SDP needs no flags and no NAT fixes: nothing answers it (force_rport), it
    refreshes no target (RFC 3261 12.2.1.2: its Contact is not read), no branch route runs for it."""
    return method == "ACK" and not has_sdp


def acks_are_quiet(record: CallRecord) -> bool:
    """Whether the answered dialog's ACKs without SDP need nothing at all: neither party is a
    browser (whose flow plan_sequential would name), so ack_is_quiet leaves nothing to do."""
    callee = record.callee_branch
    return callee is not None and Leg.WEB not in (record.caller.leg, callee.callee.leg)


def byes_are_quiet(record: CallRecord, profiles: Profiles) -> bool:
    """Whether the answered dialog's BYEs, from either end, get what the cfg's quiet path does
    (Do.QUIET_BYE): no browser to send them to (acks_are_quiet) and rtpengine's session of the
    answered branch deleted with no flags.  Their senders are SIP peers: NAT signs add only the
    sender's flag and force_rport (a BYE refreshes no target: no Contact to fix)."""
    if not acks_are_quiet(record):
        return False
    for downstream in (True, False):
        plan = plan_sequential(record, downstream, "BYE", False, profiles)
        if plan.action is None or plan.action.step is not Step.DELETE or plan.action.flags or plan.dst_uri:
            return False
    return True


def plan_sequential(
    record: Optional[CallRecord], downstream: bool, method: str, has_sdp: bool, profiles: Profiles
) -> SequentialPlan:
    """An in-dialog request: re-INVITE/UPDATE offers, ACK answers, BYE deletes."""
    legs = None if record is None else legs_of(record, downstream)
    if record is None or legs is None:
        return SequentialPlan()
    sender, receiver = legs
    sides = record.sides if downstream else record.sides[::-1]
    to_browser = receiver.leg is Leg.WEB
    dst_uri = receiver.flow_uri if to_browser else None
    callee = record.callee_branch
    if callee is None or callee.media is not Media.OPEN:
        return SequentialPlan(dst_uri=dst_uri, to_browser=to_browser)
    if method == "BYE":
        action = media_action(profiles, Step.DELETE, record.caller, callee.callee.leg)
        return SequentialPlan(action, None, dst_uri, to_browser)
    if method in ("INVITE", "UPDATE"):
        exchange = Exchange(sender, receiver, has_sdp, record.extra_toward(sender.leg), sides)
        if not has_sdp:
            return SequentialPlan(None, exchange, dst_uri, to_browser)
        action = media_action(profiles, Step.REOFFER, sender, receiver.leg, added=record.extra_toward(receiver.leg),
                              sides=sides, ipv6=receiver.ipv6)  # fmt: skip
        return SequentialPlan(action, exchange, dst_uri, to_browser)
    if method in ("ACK", "PRACK") and has_sdp:
        # An ACK (or PRACK) with SDP answers an offer made in the 2xx (late offer).
        action = media_action(profiles, Step.ANSWER, sender, receiver.leg, ipv6=receiver.ipv6)
        return SequentialPlan(action, None, dst_uri, to_browser)
    return SequentialPlan(dst_uri=dst_uri, to_browser=to_browser)


def plan_sequential_reply(exchange: Exchange, status: int, has_sdp: bool, profiles: Profiles) -> Optional[MediaAction]:
    """Reply to a re-INVITE/UPDATE: the answer (or, for a late re-offer, the offer) goes back to the sender."""
    if not has_sdp or not (180 <= status < 300):
        return None
    step = Step.ANSWER if exchange.offer_in_request else Step.REOFFER
    return media_action(profiles, step, exchange.receiver, exchange.sender.leg, added=exchange.extra,
                        sides=exchange.sides[::-1], ipv6=exchange.sender.ipv6)  # fmt: skip
