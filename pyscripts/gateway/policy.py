"""What an operator's routing rules see and answer: small immutable values, decisions as data.

The operator's file (``pyscripts/policy.py``) holds the functions the gateway calls for every
new request from a caller who passed digest authentication:

- ``route(request, default) -> Decision``: where the request goes.  ``default`` is what the
  gateway would do: its built-in routing (our domains -> the registered users, other domains
  -> ``sip_destination``) with gateway.ini's tables applied (``[blocked]`` prefixes, the
  ``[dialplan]``, ``[media] always_proxy``).  A rule returns ``default``, a change of it
  (``default.with_header(...)``) or a new decision (``to_trunk("intl")``, ``reply(403, ...)``;
  ``to_trunk("intl").or_trunk("backup")`` fails over to another trunk).
  Two tables hold whatever a rule returns: a ``[blocked]`` number gets 403 before any rule is
  asked, and a call from or to an ``always_proxy`` user takes the media proxy unless the rule's
  decision says ``MediaProxy.NEVER``.
- ``callee(request, callee, decision) -> Decision`` (optional): for a call to registered users,
  once for each kind of contact the call may reach (a browser, a SIP phone behind NAT, a SIP
  phone): the media proxy and rtpengine flags for branches to such a contact, or ``.dropped()``.
- ``register(request, default) -> Decision`` (optional): for each REGISTER, ``default`` (the
  registration is saved) or a ``reply(...)``.  Without it, REGISTERs never reach a rule.

Nothing here calls OpenSIPS: a rule is a function of these values, testable as it is, and the
gateway (``host.py`` and opensips.cfg) carries out what it returns.  Requests the gateway refuses
before any rule (another domain's caller relaying to another domain, a REGISTER for a foreign
domain, failed authentication) never reach a rule: no rule can open a relay.

Text a sender wrote (users, domains, headers) reaches a rule decoded from UTF-8; bytes that are
not UTF-8 become U+FFFD (the replacement character), so such text never matches a dial-plan
digit pattern or a user name by accident.  A user's %-escapes are undone before that (RFC 3261
19.1.4), so "%30900" meets the blocked prefix 0900 as the carrier would read it.  Domains that
are not UTF-8 get 400 before any rule.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Mapping, NamedTuple, Optional, Tuple


class Kind(enum.Enum):
    """What a party of a call is: a browser (SIP over WebSocket, DTLS-SRTP and ICE) or a SIP device."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash (of the name) is slow

    BROWSER = "browser"
    SIP = "sip"


_BROWSER = Kind.BROWSER  # a module constant: on Python 3.11 an enum's attribute costs a Python-level hook


class MediaProxy(enum.Enum):
    """Whether a call takes rtpengine."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash (of the name) is slow

    AUTO = "auto"
    """As the gateway decides: always with a browser on either end, else when a party is behind NAT
    or the caller's SDP names private addresses."""
    ALWAYS = "always"
    """Every branch of the call (e.g. to record it, or to keep the phones' addresses to ourselves)."""
    NEVER = "never"
    """No media proxy between SIP devices, NAT or not; a branch with a browser still takes it (a
    browser speaks only DTLS-SRTP with ICE, a SIP phone plain RTP: only rtpengine bridges them)."""


class Request(NamedTuple):
    """A new request as a rule sees it.  Users and domains are as the sender wrote them (domains lower-cased)."""

    method: str
    ruri_user: str
    ruri_domain: str
    from_user: str
    from_domain: str
    to_user: str
    to_domain: str
    source_ip: str
    source_port: int
    transport: str
    """``udp``, ``tcp``, ``tls``, ``ws`` or ``wss``."""
    caller: Kind
    caller_behind_nat: bool
    """Every browser; a SIP device when nathelper's tests say so."""
    has_sdp: bool
    """The request carries an SDP offer (an INVITE without one is a late offer)."""
    headers: Tuple[Tuple[str, Optional[str]], ...] = ()
    """The headers gateway.ini's ``[policy] headers`` names, in that order: (name, first value or None)."""

    def header(self, name: str) -> Optional[str]:
        """The value of a header named in gateway.ini ``[policy] headers`` (None when the request has none)."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        raise KeyError(f"{name} is not in gateway.ini [policy] headers, so the gateway does not read it")

    @property
    def from_browser(self) -> bool:
        return self.caller is _BROWSER


class Callee(NamedTuple):
    """A kind of contact a call to registered users may reach (the branch flags of its registration)."""

    kind: Kind
    behind_nat: bool


#: The kinds of contact, in the order the gateway asks about them.
CALLEES = (Callee(Kind.BROWSER, True), Callee(Kind.SIP, True), Callee(Kind.SIP, False))

_TOKEN = re.compile(r"[A-Za-z0-9!%*_+`'~.-]+")  # RFC 3261 token: a header name (fullmatch: no "\n" at its end)
_BAD_VALUE = re.compile(r"[\r\n\0]")


class Decision(NamedTuple):
    """What to do with a request.  Make one with ``to_user``, ``to_trunk``, ``to_uri`` or ``reply``; change
    one with its ``with_...`` methods (each returns a new decision)."""

    target: str
    """``user`` (the registered contacts of ``user``), ``trunk``, ``uri`` or ``reply``."""
    user: Optional[str] = None
    """For ``user``: whose contacts; for ``trunk``: the request URI's new user part; None keeps the request's own
    (the R-URI's user)."""
    trunk: Optional[str] = None
    """For ``trunk``: a name from gateway.ini ``[trunks]`` (or ``sip_destination``)."""
    uri: Optional[str] = None
    """For ``uri``: the new request URI."""
    code: int = 0
    reason: str = ""
    add_headers: Tuple[Tuple[str, str], ...] = ()
    remove_headers: Tuple[str, ...] = ()
    media: MediaProxy = MediaProxy.AUTO
    rtpengine: Tuple[Tuple[Optional[Kind], str], ...] = ()
    """Extra rtpengine flags for this call's offers and re-offers: (toward which kind of party, None for
    both; flags).  Checked like gateway.ini's profile rows: a browser-bound offer never loses DTLS/ICE."""
    dropped: bool = False
    """(``callee`` only) no branch to this kind of contact."""
    failover: Tuple[str, ...] = ()
    """For ``trunk``: the trunks to try next, in order, when the call to this one fails with a reply of
    gateway.ini ``[gateway] failover_on`` (a server error, or silence: tm's 408 from a trunk that sent nothing;
    not busy, not a refusal, not a callee who rang until tm gave up, not when the caller gave up)."""

    # -- changes -----------------------------------------------------------------------

    # Rules make the same few changes of the same few decisions on every request, and a change is a pure
    # function of immutable values: each is kept (``_CHANGED``) by the decision's identity, which change, and
    # its arguments as given, so that the same change of the same decision gives the same (shared) decision
    # without building, checking or hashing anything of the decision.  The entry holds the decision it was
    # made of: no other object has that id while the entry is there.

    def with_header(self, name: str, value: str) -> Decision:
        """Add ``name: value`` to the relayed request."""
        key = (id(self), ADD_HEADERS, name, value)
        kept = _CHANGED.get(key)
        if kept is None:
            kept = _change(self, key, (*self.add_headers, _header(name, value)))
        return kept[1]

    def without_header(self, name: str) -> Decision:
        """Remove every ``name`` header (any case) from the relayed request."""
        key = (id(self), REMOVE_HEADERS, name)
        kept = _CHANGED.get(key)
        if kept is None:
            kept = _change(self, key, (*self.remove_headers, _header(name)[0]))
        return kept[1]

    def with_media(self, media: MediaProxy) -> Decision:
        key = (id(self), MEDIA, media)
        kept = _CHANGED.get(key)
        if kept is None:
            kept = _change(self, key, media)
        return kept[1]

    def with_rtpengine(self, flags: str, toward: Optional[Kind] = None) -> Decision:
        """Add rtpengine flags to the call's offers (toward a browser, a SIP device, or both when None)."""
        key = (id(self), RTPENGINE, flags, toward)
        kept = _CHANGED.get(key)
        if kept is None:
            words = _flags(flags)
            kept = _change(self, key, (*self.rtpengine, (toward, words)) if words else None)
        return kept[1]

    def drop(self) -> Decision:
        """(``callee`` only) no branch to this kind of contact."""
        key = (id(self), DROPPED)
        kept = _CHANGED.get(key)
        if kept is None:
            kept = _change(self, key, True)
        return kept[1]

    def or_trunk(self, name: str) -> Decision:
        """(``trunk`` only: test ``decision.target == "trunk"`` first) try trunk ``name`` next when this call's
        trunk fails (``failover``), with the same request URI; chain it for more:
        ``to_trunk("main").or_trunk("backup").or_trunk("last")``.  A trunk the decision names already is
        not tried twice (no change).  The trunks must be of one address family (IPv4 or IPv6)."""
        key = (id(self), FAILOVER, name)
        kept = _CHANGED.get(key)
        if kept is None:
            if self.target != "trunk":
                raise ValueError(f"only a call to a trunk fails over to another, not '{self}'")
            named = name == self.trunk or name in self.failover
            kept = _change(self, key, None if named else (*self.failover, name))
        return kept[1]

    def extra_flags(self, toward: Kind) -> str:
        if not self.rtpengine:
            return ""
        return " ".join(flags for kind, flags in self.rtpengine if kind is None or kind is toward)

    def __str__(self) -> str:
        if self.target == "reply":
            text = f"reply {self.code} {self.reason}"
        elif self.target == "trunk":
            text = f"to trunk {self.trunk}" + (f" as {self.user}" if self.user else "")
            text += "".join(f", then {name}" for name in self.failover)
        elif self.target == "uri":
            text = f"to {self.uri}"
        else:
            text = "to the registered contacts" + (f" of {self.user}" if self.user else "")
        extras = [f"+{n}: {v}" for n, v in self.add_headers] + [f"-{n}" for n in self.remove_headers]
        if self.media is not MediaProxy.AUTO:  # getattr: a decision made by hand may hold anything (validate)
            extras.append(f"media proxy {getattr(self.media, 'value', self.media)}")
        extras += [f"rtpengine {f}" + (f" toward {getattr(k, 'value', k)}" if k else "") for k, f in self.rtpengine]
        return text + (" (" + ", ".join(extras) + ")" if extras else "")


_CHANGED: Dict[Tuple[Any, ...], Tuple[Decision, Decision]] = {}
ADD_HEADERS, REMOVE_HEADERS, MEDIA, RTPENGINE, DROPPED, FAILOVER = (
    Decision._fields.index(name)
    for name in ("add_headers", "remove_headers", "media", "rtpengine", "dropped", "failover")
)


def _change(decision: Decision, key: Tuple[Any, ...], value: object) -> Tuple[Decision, Decision]:
    """``decision`` with the field ``key[1]`` replaced by ``value`` (``_replace`` without its generality; None:
    no change), kept in ``_CHANGED`` by ``key`` (up to 4096) with the decision it was made of."""
    index = key[1]
    changed = decision if value is None else tuple.__new__(Decision, (*decision[:index], value, *decision[index + 1 :]))
    if len(_CHANGED) >= 4096:
        _CHANGED.clear()
    kept = _CHANGED[key] = (decision, changed)
    return kept


#: The headers that make a request what it is, which the gateway and the parties keep (RFC 3261 8.1.1, 16.6, 20;
#: compact forms too): a rule may neither add one (a second From or Call-ID) nor remove one (a Via, a Route).
OWN_HEADERS = frozenset({
    "via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "max-forwards", "contact", "m", "record-route",
    "route", "content-length", "l", "content-type", "c",
})  # fmt: skip


@functools.lru_cache(maxsize=256)
def _header(name: str, value: str = "") -> Tuple[str, str]:
    """A header name (a token) and value (no line breaks) checked; ValueError else.  A pure function:
    its answers are kept by its arguments, as rules add the same few headers on every request."""
    if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
        raise ValueError(f"not a header one may add or remove: {name!r}: {value!r}")
    if name.lower() in OWN_HEADERS:
        raise ValueError(f"{name} is one of the headers that make the request (RFC 3261): no rule adds or removes it")
    return name, value


@functools.lru_cache(maxsize=256)
def _flags(flags: str) -> str:
    """rtpengine flags a rule adds, checked and with single spaces (pure, kept by its argument)."""
    words = flags.split()
    if any(ch in word for word in words for ch in ",|;+"):
        raise ValueError(f"rtpengine flags may not hold , | ; or +: {flags!r}")
    if "via-branch" in flags:
        raise ValueError("via-branch is the gateway's own: one rtpengine session per branch")
    return " ".join(words)


_TO_USER = Decision("user")  # decisions are immutable: the common one is made once

# The decisions below are pure functions of their arguments, kept by them (up to 1024 each): rules make the
# same few on every request, and a shared one finds the answers kept for it by its identity (Router._route).


@functools.lru_cache(maxsize=1024)
def to_user(user: Optional[str] = None) -> Decision:
    """To the registered contacts of ``user`` (of the called user when None)."""
    if user is None:
        return _TO_USER
    return Decision("user", user=_user(user))


@functools.lru_cache(maxsize=1024)
def to_trunk(name: str, user: Optional[str] = None) -> Decision:
    """To a trunk named in gateway.ini ``[trunks]``; the request URI stays as dialled, or takes ``user`` as its
    user part (a number as the trunk wants it: ``to_trunk("carrier", "+49301234567")``), and its host[:port]
    becomes the trunk's ``domain=`` when it has one."""
    return Decision("trunk", trunk=name, user=None if user is None else _user(user))


#: What breaks a request URI's user part (RFC 3261 25.1): the separators of its password and host, of a name-addr,
#: white space, line breaks, NUL.
_NOT_USER = re.compile(r"[:@<>\"\[\]\s\0]")


def _user(user: str) -> str:
    """A request URI's user part a rule gives (a user name, a number); ValueError else (empty, or with ":", "@",
    "<", ">", a quote, a bracket, white space, a line break)."""
    if not user or _NOT_USER.search(user):
        raise ValueError(f"not a user name: {user!r}")
    return user


#: A SIP URI a rule may give (RFC 3261 19.1.1, loosely): the scheme, an optional user, a host (a name, an IPv4
#: address or a bracketed IPv6 one), an optional port, then parameters and headers; no white space or line break.
_URI = re.compile(r"sips?:(?:[^@\s]+@)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::([0-9]{1,5}))?(?:[;?]\S*)?")


def is_sip_uri(uri: object) -> bool:
    """Whether ``uri`` is a SIP URI the gateway can send to: sip: or sips:, a host, a port of 1-65535 if any, no
    white space or line break (a rule's to_uri, a [trunks] line's URI)."""
    if not isinstance(uri, str) or _BAD_VALUE.search(uri):
        return False
    match = _URI.fullmatch(uri)
    return match is not None and (match.group(1) is None or 0 < int(match.group(1)) < 65536)


@functools.lru_cache(maxsize=1024)
def to_uri(uri: str) -> Decision:
    """To any SIP URI: it becomes the request URI."""
    if not is_sip_uri(uri):
        raise ValueError(f"not a SIP URI: {uri!r}")
    return Decision("uri", uri=uri)


@functools.lru_cache(maxsize=1024)
def reply(code: int, reason: str) -> Decision:
    """Answer the request with this final reply (400-699, but 401 and 407: a challenge needs the header the
    gateway's own digest check writes, gateway.ini auth_realm; a 3xx, the Contact no rule gives)."""
    if not 400 <= code <= 699 or code in (401, 407) or _BAD_VALUE.search(reason) or not reason:
        raise ValueError(f"not a final reply a rule may send (400-699 but 401 and 407): {code} {reason!r}")
    return Decision("reply", code=code, reason=reason)


TARGETS = frozenset({"user", "trunk", "uri", "reply"})


def validate(decision: Decision) -> None:
    """ValueError unless every field of ``decision`` is one the constructors above and the ``with_...`` changes
    could have made: a decision built by hand (``Decision(...)``) or changed with ``_replace`` is held to the
    same checks (a header name, a line break in a value, a reply's code, a URI, a user, rtpengine flags)."""
    target = decision.target
    if target not in TARGETS:
        raise ValueError(f"no such target {target!r} (user, trunk, uri or reply)")
    if decision.user is not None:
        _user(decision.user)
    if target == "trunk" and (not isinstance(decision.trunk, str) or not decision.trunk):
        raise ValueError(f"a trunk's name, not {decision.trunk!r}")
    if target == "uri":
        to_uri(decision.uri)  # None is refused there
    if target == "reply":
        if type(decision.code) is not int or not isinstance(decision.reason, str):
            raise ValueError(f"a reply's code is a number and its reason text: {decision.code!r} {decision.reason!r}")
        reply(decision.code, decision.reason)
    for name, value in decision.add_headers:
        _header(name, value)
    for name in decision.remove_headers:
        _header(name)
    if not isinstance(decision.media, MediaProxy):
        raise ValueError(f"media is a MediaProxy, not {decision.media!r}")
    for toward, flags in decision.rtpengine:
        if (toward is not None and not isinstance(toward, Kind)) or _flags(flags) != flags:
            raise ValueError(f"rtpengine flags as with_rtpengine() gives them, not {(toward, flags)!r}")
    if decision.failover and (target != "trunk" or not all(isinstance(n, str) and n for n in decision.failover)):
        raise ValueError(f"only a trunk's call fails over, to trunks by name: {decision.failover!r}")


class Pattern(NamedTuple):
    """A dial-plan or blocking pattern of gateway.ini: a prefix of the called user, or ``/regex/``."""

    text: str
    regex: Optional[re.Pattern[str]]

    @classmethod
    def parse(cls, text: str) -> Pattern:
        if len(text) > 2 and text.startswith("/") and text.endswith("/"):
            try:
                return cls(text, re.compile(text[1:-1]))
            except re.error as exc:
                raise ValueError(f"bad regular expression {text}: {exc}") from None
        if not text or _BAD_VALUE.search(text) or " " in text:
            raise ValueError(f"bad prefix {text!r}")
        return cls(text, None)

    def matches(self, user: str) -> bool:
        if self.regex is not None:
            return self.regex.search(user) is not None
        return user.startswith(self.text)


@dataclass(frozen=True)
class Tables:
    """gateway.ini's routing tables, evaluated before the operator's rules (``apply``)."""

    trunks: Mapping[str, str]
    dialplan: Tuple[Tuple[Pattern, Tuple[str, ...]], ...] = ()
    """(pattern, trunk names: the first, then the ones it fails over to), first match wins."""
    blocked: Tuple[Pattern, ...] = ()
    always_proxy: FrozenSet[str] = frozenset()
    headers: Tuple[str, ...] = ()
    domains: Dict[str, str] = field(default_factory=dict)
    """The request URI's host[:port] of the trunks that want one ([trunks] ``domain=``), by trunk name."""
    _numbers: Dict[str, Tuple[bool, Optional[Decision]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """What the blocked prefixes and the dial plan say of a called number (``_number``), kept by it."""

    def apply(self, request: Request, decision: Decision, may_relay: bool) -> Decision:
        """``decision`` (the built-in routing) with the tables applied: a blocked called number gets 403;
        a dial-plan match sends callers who may relay (our users, trusted sources) to its trunk; calls
        from or to an always-proxied user take the media proxy."""
        number = request.ruri_user
        found = self._numbers.get(number)
        if found is None:
            found = self._number(number)
        blocked, trunk = found
        if blocked:
            return BLOCKED
        if may_relay and trunk is not None:
            decision = trunk
        return self.proxied(request, decision) if self.always_proxy else decision

    def proxied(self, request: Request, decision: Decision) -> Decision:
        """``decision`` (the built-in one, or a rule's own) with [media] always_proxy kept: a call from or to (as
        dialled, or as the rule sends it to another user) an always-proxied user takes the media proxy, unless
        the rule said otherwise (MediaProxy.NEVER).  A reply has no media."""
        if decision.media is not MediaProxy.AUTO or decision.target == "reply":
            return decision
        users = self.always_proxy
        if request.from_user in users or request.ruri_user in users or decision.user in users:
            return decision.with_media(MediaProxy.ALWAYS)
        return decision

    def _number(self, number: str) -> Tuple[bool, Optional[Decision]]:
        """Whether ``number`` is blocked, and the dial plan's trunk for it: a function of the number and of
        the (immutable) patterns alone, so kept by the number (up to 4096; regular expressions cost)."""
        found: Tuple[bool, Optional[Decision]] = (any(p.matches(number) for p in self.blocked), None)
        if not found[0]:
            for pattern, (trunk, *failover) in self.dialplan:
                if pattern.matches(number):
                    decision = to_trunk(trunk)
                    for name in failover:
                        decision = decision.or_trunk(name)
                    found = (False, decision)
                    break
        if len(self._numbers) >= 4096:
            self._numbers.clear()
        self._numbers[number] = found
        return found


BLOCKED = reply(403, "Forbidden - Blocked Number")
"""A [blocked] number's answer: given before any rule is asked."""
