"""Plain values the decision core takes and returns.

Nothing here knows OpenSIPS exists: facts come in as these small frozen values,
decisions leave as them, and the host adapter (``host.py``) is the only place
that turns them into pseudo-variable reads and function calls.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Dict, Optional, Tuple


class Source(enum.Enum):
    """Where a message came from, judged by the transport it arrived on."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash (of the name) is slow

    WEBSOCKET = "ws"
    SIP = "sip"


class Leg(enum.Enum):
    """What SDP a call leg speaks: a browser (DTLS-SRTP, ICE, rtcp-mux) or a SIP device (plain RTP)."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash (of the name) is slow

    WEB = "web"
    SIP = "sip"

    @property
    def code(self) -> str:
        return _LEG_CODES[self]

    @classmethod
    def from_code(cls, code: str) -> Leg:
        if code == "W":
            return cls.WEB
        if code == "S":
            return cls.SIP
        raise ValueError(f"unknown leg code {code!r}")


_LEG_CODES = {Leg.WEB: "W", Leg.SIP: "S"}


class Registration(enum.Enum):
    """How a contact registered; stored with it as branch flags by save("location")."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash (of the name) is slow

    WEBRTC = "webrtc"
    NATED_SIP = "nated-sip"
    PLAIN_SIP = "plain-sip"

    @property
    def leg(self) -> Leg:
        return Leg.WEB if self is Registration.WEBRTC else Leg.SIP

    @property
    def behind_nat(self) -> bool:
        return self is not Registration.PLAIN_SIP


class Step(enum.Enum):
    """The rtpengine step a message's SDP takes."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash (of the name) is slow

    OFFER = "offer"
    ANSWER = "answer"
    REOFFER = "reoffer"
    DELETE = "delete"


@dataclass(frozen=True)
class Party:
    """One end of a call as the gateway sees it."""

    leg: Leg
    """The SDP flavour this party speaks."""
    behind_nat: bool
    """True when its addresses cannot be trusted (every WebSocket peer, NATed SIP)."""
    flow: Optional[str] = None
    """For a browser, the connection it talks over (``wss:198.51.100.7:52044``): in-dialog
    requests must go back over it, and its Contact's ``transport=ws`` would not find a
    WSS connection (OpenSIPS matches connections by protocol)."""
    ipv6: bool = False
    """Reached over IPv6 (it registered, or sent its request, over IPv6; a trunk's IPv6 address):
    rtpengine's SDP toward it names rtpengine's IPv6 address (docs/host-facts.md)."""

    @property
    def code(self) -> str:
        text: Optional[str] = self.__dict__.get("_code")  # parties are immutable: render once
        if text is None:
            text = self.leg.code + ("1" if self.behind_nat else "0") + ("6" if self.ipv6 else "")
            text = text + "@" + self.flow if self.flow else text
            object.__setattr__(self, "_code", text)
        return text

    @property
    def flow_uri(self) -> Optional[str]:
        """``sip:host:port;transport=proto`` for the flow, to use as destination URI."""
        if not self.flow:
            return None
        proto, _, hostport = self.flow.partition(":")
        return f"sip:{hostport};transport={proto}"

    @classmethod
    def parse(cls, code: str) -> Party:
        kind, _, flow = code.partition("@")
        if len(kind) not in (2, 3) or kind[1] not in "01" or kind[2:] not in ("", "6") or (flow and ":" not in flow):
            raise ValueError(f"bad party code {code!r}")
        return cls(Leg.from_code(kind[0]), kind[1] == "1", flow or None, kind[2:] == "6")


def flow_of(proto: str, host: str, port: int) -> str:
    """The flow text of a connection: ``proto:host:port``, IPv6 hosts in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{proto.lower()}:{host}:{port}"


class Media(enum.Enum):
    """Where a branch stands with rtpengine."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash (of the name) is slow

    NONE = "-"  # no media proxy for this branch
    PENDING = "p"  # media proxy decided, no session yet (late offer: the offer comes in a reply)
    OPEN = "m"  # an rtpengine session exists for this branch


_MEDIA_CODES = {media: media.value for media in Media}


@dataclass(frozen=True, init=False)
class Branch:
    """The decision taken for one branch of an initial INVITE."""

    callee: Party
    """Who this branch reaches."""
    media: Media
    """Whether rtpengine bridges the media on this branch, and its session's state."""

    def __init__(self, callee: Party, media: Media) -> None:
        # Made for every branch: the fields go straight into __dict__ (a frozen dataclass's own
        # __init__ sets each through object.__setattr__, about twice as slow; still frozen after).
        fields = self.__dict__
        fields["callee"] = callee
        fields["media"] = media

    @property
    def media_proxy(self) -> bool:
        return self.media is not Media.NONE

    def with_media(self, media: Media) -> Branch:
        return Branch(self.callee, media)

    @property
    def code(self) -> str:
        return _MEDIA_CODES[self.media] + self.callee.code

    @classmethod
    def parse(cls, code: str) -> Branch:
        try:
            media = Media(code[:1])
        except ValueError:
            raise ValueError(f"bad branch code {code!r}") from None
        return cls(Party.parse(code[1:]), media)


@dataclass(frozen=True, init=False)
class CallRecord:
    """What the gateway keeps with a dialog (``$dlg_val(gw)``) for later requests and replies.

    ``str()`` and ``parse()`` round-trip; the text is short and readable in ``dlg_list``:
    ``c=W1@wss:198.51.100.7:52044;o=e;p=0;b0=mS0;b1=pW1;a=0``.
    """

    caller: Party
    """Who placed the call."""
    early_offer: bool
    """True when the initial INVITE carried the SDP offer (late offer: it comes in the 2xx)."""
    private_sdp: bool
    """True when the caller's offer held private (RFC 1918/6598) addresses; read only where it matters
    (core.sdp_privacy_matters: a SIP caller not behind NAT)."""
    branches: Tuple[Tuple[int, Branch], ...] = ()
    """Each forked branch by its index, in the order they were created."""
    answered: Optional[int] = None
    """Index of the branch whose 2xx established the dialog."""
    extra: Tuple[str, str] = ("", "")
    """rtpengine flags the operator's rules added to this call's offers: (toward a browser, toward SIP)."""
    sides: Tuple[str, str] = ("", "")
    """rtpengine's interfaces facing (the caller, the callee); empty with one interface (Settings.side_of)."""

    def __init__(
        self,
        caller: Party,
        early_offer: bool,
        private_sdp: bool,
        branches: Tuple[Tuple[int, Branch], ...] = (),
        answered: Optional[int] = None,
        extra: Tuple[str, str] = ("", ""),
        sides: Tuple[str, str] = ("", ""),
    ) -> None:
        # Made for every initial INVITE, branch and answer: as Branch's.
        fields = self.__dict__
        fields["caller"] = caller
        fields["early_offer"] = early_offer
        fields["private_sdp"] = private_sdp
        fields["branches"] = branches
        fields["answered"] = answered
        fields["extra"] = extra
        fields["sides"] = sides

    def extra_toward(self, leg: Leg) -> str:
        return self.extra[0] if leg is Leg.WEB else self.extra[1]

    def with_branch(self, index: int, branch: Branch) -> CallRecord:
        if not self.branches or all(i < index for i, _ in self.branches):
            # A new branch (the usual case) goes last: so does its part of the text.
            record = CallRecord(
                self.caller,
                self.early_offer,
                self.private_sdp,
                (*self.branches, (index, branch)),
                self.answered,
                self.extra,
                self.sides,
            )
            text: Optional[str] = self.__dict__.get("_text")
            if text is not None and self.answered is None:
                object.__setattr__(record, "_text", f"{text};b{index}={branch.code}")
            return record
        branches = dict(self.branches)
        branches[index] = branch
        return CallRecord(self.caller, self.early_offer, self.private_sdp, tuple(branches.items()), self.answered,
                          self.extra, self.sides)  # fmt: skip

    def with_answer(self, index: int, flow: Optional[str] = None) -> CallRecord:
        """The record once branch ``index`` answered, from ``flow`` when the callee is a browser."""
        record = CallRecord(self.caller, self.early_offer, self.private_sdp, self.branches, index, self.extra,
                            self.sides)  # fmt: skip
        branch = self.branch(index)
        if branch is not None and flow and branch.callee.leg is Leg.WEB:
            callee = Party(branch.callee.leg, branch.callee.behind_nat, flow, branch.callee.ipv6)
            record = record.with_branch(index, Branch(callee, branch.media))
        return record

    def branch(self, index: int) -> Optional[Branch]:
        return dict(self.branches).get(index)

    @property
    def callee_branch(self) -> Optional[Branch]:
        return None if self.answered is None else self.branch(self.answered)

    @property
    def media_open(self) -> bool:
        """True while some branch may still hold an rtpengine session."""
        return any(b.media is Media.OPEN for _, b in self.branches)

    def __str__(self) -> str:
        # Records are immutable and their text is asked for again and again (every route stores
        # one): keep it on the instance, outside the fields (equality and hash ignore it).
        text: Optional[str] = self.__dict__.get("_text")
        if text is None:
            text = self._render()
            object.__setattr__(self, "_text", text)
        return text

    def _render(self) -> str:
        text = f"c={self.caller.code};o={'e' if self.early_offer else 'l'};p={'1' if self.private_sdp else '0'}"
        for key, flags in zip(("xw", "xs"), self.extra):
            if flags:
                text += f";{key}={flags.replace(' ', '+')}"  # policy.Decision.with_rtpengine refuses "+"
        if self.sides[0]:
            text += f";d={self.sides[0]}+{self.sides[1]}"  # interface names: settings.INTERFACE_NAME
        for index, branch in self.branches:
            text += f";b{index}={branch.code}"
        if self.answered is not None:
            text += f";a={self.answered}"
        return text

    @classmethod
    def parse(cls, text: str) -> CallRecord:
        """The record from its text; ValueError if it is not one.  Parsed once per text (records are
        immutable and few texts recur: one per kind of call), so the routes pay a dictionary look-up."""
        return _parse_record(text)

    @classmethod
    def _parse(cls, text: str) -> CallRecord:
        fields: Dict[str, str] = {}
        branches = []
        for part in text.split(";"):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"bad call record field {part!r}")
            if key.startswith("b") and key[1:].isdigit():
                branches.append((int(key[1:]), Branch.parse(value)))
            else:
                fields[key] = value
        try:
            caller = Party.parse(fields["c"])
            early = {"e": True, "l": False}[fields["o"]]
            private = {"1": True, "0": False}[fields["p"]]
        except KeyError as exc:
            raise ValueError(f"call record {text!r} lacks or garbles {exc}") from None
        answered = fields.get("a")
        if answered is not None and not answered.isdigit():
            raise ValueError(f"bad answered branch {answered!r}")
        extra = (fields.get("xw", "").replace("+", " "), fields.get("xs", "").replace("+", " "))
        sides = _sides(fields.get("d"))
        return cls(caller, early, private, tuple(branches), None if answered is None else int(answered), extra,
                   sides)  # fmt: skip


def _sides(text: Optional[str]) -> Tuple[str, str]:
    """``a+b`` -> (a, b); none -> ("", "")."""
    if not text:
        return ("", "")
    first, sep, second = text.partition("+")
    if not sep or not first or not second:
        raise ValueError(f"bad interfaces {text!r}")
    return (first, second)


@functools.lru_cache(maxsize=1024)
def _parse_record(text: str) -> CallRecord:
    record = CallRecord._parse(text)
    if record._render() == text:  # canonical: str() gives back this very text
        object.__setattr__(record, "_text", text)
    return record


@dataclass(frozen=True)
class Exchange:
    """What a sequential transaction (re-INVITE, UPDATE) keeps for its replies (``$avp(gw_tx)``)."""

    sender: Party
    """The party that sent the request."""
    receiver: Party
    """The other party, who replies."""
    offer_in_request: bool
    """True when the request carried an SDP offer (its 2xx then carries the answer)."""
    extra: str = ""
    """The operator's rtpengine flags for an offer toward the sender (a late re-offer comes in the reply)."""
    sides: Tuple[str, str] = ("", "")
    """rtpengine's interfaces facing (the sender, the receiver); empty with one interface."""

    def __str__(self) -> str:
        text = f"s={self.sender.code};r={self.receiver.code};o={int(self.offer_in_request)}"
        text = text + f";x={self.extra.replace(' ', '+')}" if self.extra else text
        return text + f";d={self.sides[0]}+{self.sides[1]}" if self.sides[0] else text

    @classmethod
    def parse(cls, text: str) -> Exchange:
        fields = dict(part.partition("=")[::2] for part in text.split(";"))
        try:
            sender, receiver, offer = Party.parse(fields["s"]), Party.parse(fields["r"]), fields["o"]
        except KeyError as exc:
            raise ValueError(f"exchange {text!r} lacks {exc}") from None
        if offer not in ("0", "1"):
            raise ValueError(f"bad exchange {text!r}")
        return cls(sender, receiver, offer == "1", fields.get("x", "").replace("+", " "), _sides(fields.get("d")))


@dataclass(frozen=True)
class MediaAction:
    """One rtpengine call: which function, with which flag string."""

    step: Step
    flags: str

    @property
    def function(self) -> str:
        return {
            Step.OFFER: "rtpengine_offer",
            Step.REOFFER: "rtpengine_offer",
            Step.ANSWER: "rtpengine_answer",
            Step.DELETE: "rtpengine_delete",
        }[self.step]
