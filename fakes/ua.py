"""User agents around the fake host: browsers (SIP over WebSocket, WebRTC SDP) and SIP phones.

``Network`` carries messages between the UAs and a ``Gateway``.  UAs answer
what a real one answers by itself (200 to BYE and re-INVITE, 487 after CANCEL,
ACK for final replies); the call's caller and callees are driven step by step
by tests and by the tracer: ``invite``, ``reply``, ``cancel``, ``reinvite``, ``bye``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Sequence, Set, Tuple

from . import sdp as sdpread
from .rtpengine import MemoryEngine
from .runtime import Endpoint, Gateway, digest_fields, digest_response, uri_endpoint
from .sipmsg import SipMessage

_counter = itertools.count(1)


def _token(prefix: str) -> str:
    return f"{prefix}{next(_counter):06d}"


def browser_sdp(session: str, direction: str = "sendrecv") -> str:
    """An audio offer of the shape Chromium sends: DTLS-SRTP, ICE, rtcp-mux, Opus first."""
    return (
        "\r\n".join(
            [
                "v=0",
                f"o=- {session} 2 IN IP4 127.0.0.1",
                "s=-",
                "t=0 0",
                "a=group:BUNDLE 0",
                "a=msid-semantic: WMS",
                "m=audio 9 UDP/TLS/RTP/SAVPF 111 9 0 8 126",
                "c=IN IP4 0.0.0.0",
                "a=rtcp:9 IN IP4 0.0.0.0",
                f"a=ice-ufrag:u{session[-4:]}",
                "a=ice-pwd:asd88fgpdd777uzjYhagZg1234567890",
                "a=ice-options:trickle",
                "a=fingerprint:sha-256 " + ":".join(["7B"] * 32),
                "a=setup:actpass",
                "a=mid:0",
                f"a={direction}",
                "a=rtcp-mux",
                "a=rtpmap:111 opus/48000/2",
                "a=fmtp:111 minptime=10;useinbandfec=1",
                "a=rtpmap:9 G722/8000",
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:8 PCMA/8000",
                "a=rtpmap:126 telephone-event/8000",
                f"a=candidate:1 1 udp 2122260223 {session[-4:]}.local 54400 typ host generation 0",
            ]
        )
        + "\r\n"
    )


#: Static payload types of the codecs our phones speak (RFC 3551).
PHONE_CODECS = {"PCMU": 0, "PCMA": 8, "G722": 9}


def phone_sdp(
    session: str,
    address: str,
    port: int = 20000,
    direction: str = "sendrecv",
    codecs: Sequence[str] = ("PCMU", "PCMA", "G722"),
) -> str:
    """A plain SIP phone offer: RTP/AVP, G.711 and/or G.722, DTMF events, separate RTCP (no rtcp-mux)."""
    types = [PHONE_CODECS[c] for c in codecs]
    return _phone_body(session, address, port, direction, [(t, f"{c}/8000") for t, c in zip(types, codecs)], 101)


def phone_answer(
    session: str, address: str, offer: str, port: int = 20000, codecs: Sequence[str] = ("PCMU", "PCMA", "G722")
) -> str:
    """A phone's answer to ``offer``: the offered codecs it speaks, in the offer's order and payload types.

    Sections it cannot take (video, or no common codec) are refused with port 0 (RFC 3264 section 6).
    """
    sections = sdpread.media(offer)
    if not sections:
        raise ValueError("offer without media")
    lines = [
        "v=0",
        f"o=phone {session} 1 IN {family(address)} {address}",
        "s=call",
        f"c=IN {family(address)} {address}",
        "t=0 0",
    ]
    taken = False
    for section in sections:
        chosen = [(pt, n) for pt, n in section.codecs.items() if n in codecs]
        events = [pt for pt, n in section.codecs.items() if n == "telephone-event"]
        if section.kind != "audio" or not chosen or taken or section.port == 0:
            lines.append(f"m={section.kind} 0 {section.proto} {section.formats[0]}")
            continue
        taken = True
        formats = [pt for pt, _ in chosen] + events[:1]
        lines.append(f"m=audio {port} RTP/AVP {' '.join(formats)}")
        lines += [f"a=rtpmap:{pt} {n}/8000" for pt, n in chosen]
        lines += [f"a=rtpmap:{pt} telephone-event/8000" for pt in events[:1]]
        lines.append(f"a={sdpread.ANSWER_DIRECTION[section.direction]}")
    if not taken:
        raise ValueError("no codec in common with the offer: " + offer)
    return "\r\n".join(lines) + "\r\n"


def family(address: str) -> str:
    """The SDP address type of an address: IP6 or IP4."""
    return "IP6" if ":" in address else "IP4"


def _phone_body(
    session: str, address: str, port: int, direction: str, codecs: List[Tuple[int, str]], events: int
) -> str:
    formats = " ".join(str(t) for t, _ in codecs)
    return (
        "\r\n".join(
            [
                "v=0",
                f"o=phone {session} 1 IN {family(address)} {address}",
                "s=call",
                f"c=IN {family(address)} {address}",
                "t=0 0",
                f"m=audio {port} RTP/AVP {formats} {events}",
                *[f"a=rtpmap:{t} {name}" for t, name in codecs],
                f"a=rtpmap:{events} telephone-event/8000",
                f"a={direction}",
            ]
        )
        + "\r\n"
    )


class MediaAgent(Protocol):
    """What makes and takes a UA's SDP: a synthetic one, or a real browser (fakes/browser.py)."""

    def offer(self, key: str, direction: str) -> str:
        """A new offer (or a re-offer in the dialog ``key``)."""

    def answer(self, key: str, offer: str) -> str:
        """The answer to ``offer`` received in dialog ``key``."""

    def accept(self, key: str, kind: str, sdp: str) -> None:
        """Take an answer to our offer: ``kind`` is ``pranswer`` (1xx) or ``answer``."""


class SyntheticBrowser:
    """Chromium-shaped SDP from a template; takes whatever it is sent."""

    def offer(self, key: str, direction: str) -> str:
        return browser_sdp(_token("5"), direction)

    def answer(self, key: str, offer: str) -> str:
        return browser_sdp(_token("5"), sdpread.ANSWER_DIRECTION[sdpread.audio(offer).direction])

    def accept(self, key: str, kind: str, sdp: str) -> None:
        pass


@dataclass
class SyntheticPhone:
    """A SIP phone's SDP: RTP/AVP from ``address:port`` with the codecs it speaks."""

    address: str
    port: int = 20000
    codecs: Tuple[str, ...] = ("PCMU", "PCMA", "G722")

    def offer(self, key: str, direction: str) -> str:
        return phone_sdp(_token("7"), self.address, self.port, direction, self.codecs)

    def answer(self, key: str, offer: str) -> str:
        return phone_answer(_token("7"), self.address, offer, self.port, self.codecs)

    def accept(self, key: str, kind: str, sdp: str) -> None:
        pass


@dataclass(frozen=True)
class ReceivedSdp:
    """One SDP body a UA received, and what it was to the UA."""

    call_id: str
    label: str
    """The method or status code of the message that carried it."""
    kind: str
    """``offer``, ``pranswer`` (an answer in a 1xx) or ``answer``."""
    sdp: str


@dataclass
class Dialog:
    """One UA's view of a dialog."""

    call_id: str
    local_tag: str
    remote_tag: Optional[str]
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: List[str]
    cseq: int
    is_caller: bool


@dataclass
class UA:
    name: str
    kind: str  # "web" or "sip"
    endpoint: Endpoint
    contact_host: str
    domain: str = "127.0.0.1"
    inbox: List[SipMessage] = field(default_factory=list)
    received_sdp: List[Tuple[str, str]] = field(default_factory=list)
    dialogs: Dict[str, Dialog] = field(default_factory=dict)
    pending_invites: Dict[str, SipMessage] = field(default_factory=dict)
    media: Optional[MediaAgent] = None
    """Makes and takes this UA's SDP; synthetic by kind when None."""
    exchanges: List[ReceivedSdp] = field(default_factory=list)
    offering: Set[str] = field(default_factory=set)
    """Call-IDs in which our offer waits for its final answer."""
    offers: Dict[str, str] = field(default_factory=dict)
    """Call-ID -> an offer we received and have not answered yet."""
    answers: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    """Call-ID -> (offer, our answer): a 1xx and the 2xx repeat the same answer."""
    password: Optional[str] = None
    """Answers 401/407 challenges with digest credentials when set."""
    username: Optional[str] = None
    """The authentication user (the AOR's user when None)."""
    rport: bool = True
    """Whether its Vias ask for rport (RFC 3581); phones behind NAT here do not, as many do not."""
    sent: Dict[str, SipMessage] = field(default_factory=dict)
    """Call-ID -> the last out-of-dialog request (REGISTER, INVITE) we sent, to retry with credentials."""

    def __post_init__(self) -> None:
        if self.media is None:
            if self.is_browser:
                self.media = SyntheticBrowser()
            else:
                self.media = SyntheticPhone(self.contact_host.split(":")[0])

    @property
    def is_browser(self) -> bool:
        return self.kind == "web"

    @property
    def aor(self) -> str:
        return f"sip:{self.name}@{self.domain}"

    @property
    def contact(self) -> str:
        if self.is_browser:
            return f"sip:{self.name}x@{self.contact_host};transport=ws"
        if self.endpoint.proto != "udp":
            return f"sip:{self.name}@{self.contact_host};transport={self.endpoint.proto}"
        return f"sip:{self.name}@{self.contact_host}"

    @property
    def via(self) -> str:
        proto = "WSS" if self.endpoint.proto == "wss" else self.endpoint.proto.upper()
        return f"SIP/2.0/{proto} {self.contact_host};branch={_token('z9hG4bK')}" + (";rport" if self.rport else "")

    @property
    def agent(self) -> MediaAgent:
        assert self.media is not None
        return self.media

    def sdp(self, direction: str = "sendrecv") -> str:
        """A fresh offer outside any dialog (what this UA would offer)."""
        return self.agent.offer(_token("k"), direction)

    def make_offer(self, call_id: str, direction: str = "sendrecv") -> str:
        self.offering.add(call_id)
        return self.agent.offer(f"{self.name}:{call_id}", direction)

    def make_answer(self, call_id: str) -> str:
        """Our answer to the offer pending in ``call_id`` (the same one again for a 1xx then a 2xx)."""
        offer = self.offers.get(call_id)
        if offer is None:
            previous = self.answers.get(call_id)
            if previous is None:
                raise LookupError(f"{self.name}: no offer to answer in {call_id}")
            return previous[1]
        answer = self.agent.answer(f"{self.name}:{call_id}", offer)
        del self.offers[call_id]
        self.answers[call_id] = (offer, answer)
        return answer

    def take_sdp(self, message: SipMessage) -> None:
        """Classify an SDP body that arrived (offer or answer to ours) and hand answers to the agent."""
        body = message.body.decode()
        label = message.method if message.is_request else str(message.status)
        call_id = message.call_id
        if call_id in self.offering and (message.method in ("ACK", "PRACK") or not message.is_request):
            kind = "pranswer" if not message.is_request and message.status < 200 else "answer"
            if kind == "answer":
                self.offering.discard(call_id)
            self.exchanges.append(ReceivedSdp(call_id, label, kind, body))
            self.agent.accept(f"{self.name}:{call_id}", kind, body)
            return
        self.exchanges.append(ReceivedSdp(call_id, label, "offer", body))
        self.offers[call_id] = body

    def request(
        self, method: str, ruri: str, to: str, call_id: str, from_tag: str, cseq: int, body: str = ""
    ) -> SipMessage:
        headers = [
            ("Via", self.via),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={from_tag}"),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if method in ("INVITE", "REGISTER", "UPDATE"):
            headers.append(("Contact", f"<{self.contact}>"))
        message = SipMessage(f"{method} {ruri} SIP/2.0", headers)
        message.set_body(body.encode(), "application/sdp" if body else None)
        return message

    def reply_to(
        self, request: SipMessage, code: int, reason: str, to_tag: Optional[str], body: str = ""
    ) -> SipMessage:
        to = request.header("to") or ""
        if to_tag and "tag=" not in to:
            to += f";tag={to_tag}"
        headers = [("Via", v) for v in request.header_values("via")]
        headers += [("Record-Route", v) for v in request.header_values("record-route")]
        headers += [("From", request.header("from") or ""), ("To", to), ("Call-ID", request.call_id)]
        headers.append(("CSeq", request.header("cseq") or ""))
        if request.method in ("INVITE", "UPDATE") and 100 < code < 300:
            headers.append(("Contact", f"<{self.contact}>"))
        message = SipMessage(f"SIP/2.0 {code} {reason}", headers)
        message.set_body(body.encode(), "application/sdp" if body else None)
        return message


#: The reason phrases of the replies tests send most (RFC 3261 21); any other code: "OK" or "Failed".
REASONS = {180: "Ringing", 183: "Session Progress", 200: "OK", 404: "Not Found", 408: "Request Timeout",
           480: "Temporarily Unavailable", 486: "Busy Here", 487: "Request Terminated", 500: "Server Internal Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out", 603: "Decline"}  # fmt: skip


class Network:
    """The UAs and the gateway, and every message between them."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.uas: Dict[Endpoint, UA] = {}
        self.transcript: List[Tuple[str, str, SipMessage]] = []
        self.undelivered: List[Tuple[Endpoint, SipMessage]] = []
        self._hosts = itertools.count(2)

    def nobody_answers(self) -> List[Tuple[Endpoint, SipMessage]]:
        """tm's timers fire: calls still ringing end (408).  What went where no UA of this network is (a trunk
        is none), handed back and forgotten, so that tests/flowcheck.assert_clean holds afterwards."""
        for endpoint, message in self.gateway.timeout():  # the callers get their 408, and ACK it
            target = self.uas.get(endpoint)
            if target is None:
                self.undelivered.append((endpoint, message))
            else:
                self._arrive(target, message)
        lost, self.undelivered = self.undelivered, []
        return lost

    # -- UAs --------------------------------------------------------------------------

    def browser(
        self, name: str, secure: bool = True, media: Optional[MediaAgent] = None, host: Optional[str] = None
    ) -> UA:
        """A browser over WSS (or WS) from a fresh 127.0.0.x, or from ``host`` (e.g. an IPv6 address)."""
        host = host or f"127.0.0.{next(self._hosts)}"
        ua = UA(
            name,
            "web",
            Endpoint("wss" if secure else "ws", host, 50000 + len(self.uas)),
            f"{name}-{host[-1]}.invalid",
            media=media,
        )
        return self._add(ua)

    def phone(
        self,
        name: str,
        nat: bool = False,
        proto: str = "udp",
        host: Optional[str] = None,
        rtp_port: int = 20000,
        codecs: Tuple[str, ...] = ("PCMU", "PCMA", "G722"),
    ) -> UA:
        """A SIP phone; behind NAT its Contact and SDP name a private address its packets do not come from.

        ``host`` is where its packets come from (a fresh 127.0.0.x by default); ``rtp_port`` and
        ``codecs`` shape its SDP.
        """
        if host is None:
            # With the in-memory engine no packet is ever sent, so a plain phone can have a public
            # (TEST-NET-2) address; with a real rtpengine everything stays on loopback, which
            # nathelper (and so the router) counts as private: every phone there is "NATed".
            in_memory = isinstance(self.gateway.rtpengine, MemoryEngine)
            prefix = "198.51.100" if in_memory and not nat else "127.0.0"
            host, sip_port = f"{prefix}.{next(self._hosts)}", 5060
        else:
            sip_port = 6000 + len(self.uas)  # phones given one address need SIP ports of their own
        if nat:
            endpoint = Endpoint(proto, host, 40000 + len(self.uas))
            address, contact = f"192.168.1.{len(self.uas) + 10}", f"192.168.1.{len(self.uas) + 10}:5060"
        else:
            endpoint = Endpoint(proto, host, sip_port)
            address, contact = host, f"[{host}]:{sip_port}" if ":" in host else f"{host}:{sip_port}"
        media = SyntheticPhone(address, rtp_port, codecs)
        return self._add(UA(name, "sip", endpoint, contact, media=media, rport=not nat))

    def trunk(self, name: str, uri: str) -> UA:
        """A SIP trunk (or PBX) at a gateway.ini ``[trunks]`` URI: the calls the gateway sends there wait in its
        ``pending_invites``, for ``net.reply(call, trunk, 200)`` (or 503, to see a failover).  Not a subscriber:
        it never registers or calls."""
        endpoint = uri_endpoint(uri)
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host  # a URI brackets an IPv6 address
        ua = UA(name, "sip", endpoint, f"{host}:{endpoint.port}",
                media=SyntheticPhone(endpoint.host, 30000 + 2 * len(self.uas)), rport=True)  # fmt: skip
        self.uas[endpoint] = ua
        return ua

    def disconnect(self, ua: UA) -> None:
        """The UA's connection closes (a browser's page goes away, OpenSIPS restarts): nothing reaches it
        at that address any more, and the gateway knows the connection is gone."""
        self.gateway.close_connection(ua.endpoint)
        if self.uas.get(ua.endpoint) is ua:
            del self.uas[ua.endpoint]

    def reconnect(self, ua: UA, reload: bool = False) -> UA:
        """The UA comes back over a new connection from a new source port, same user and media: JsSIP
        after its WebSocket dropped keeps its Contact; a reloaded page (``reload``) is a new JsSIP UA
        with a new random Contact host.  It has not registered again yet."""
        self.disconnect(ua)
        ua.endpoint = Endpoint(ua.endpoint.proto, ua.endpoint.host, ua.endpoint.port + 1000)
        if reload:
            ua.contact_host = f"{ua.name}-{_token('r')}.invalid"
        self.uas[ua.endpoint] = ua
        return ua

    def _add(self, ua: UA) -> UA:
        """Every UA is a subscriber with a password when the gateway authenticates."""
        self.uas[ua.endpoint] = ua
        realm = getattr(getattr(self.gateway.router, "settings", None), "auth_realm", None)
        if realm is not None:
            ua.password = f"{ua.name}-secret"
            self.gateway.subscribers[(ua.name, realm)] = ua.password
        return ua

    # -- carrying messages --------------------------------------------------------------

    def send(self, ua: UA, message: SipMessage) -> None:
        if message.is_request and message.method in ("REGISTER", "INVITE") and message.to_tag is None:
            ua.sent[message.call_id] = message
        self.transcript.append((ua.name, "gateway", message))
        for endpoint, out in self.gateway.receive(message.to_bytes(), ua.endpoint):
            target = self.uas.get(endpoint)
            if target is None:
                self.undelivered.append((endpoint, out))
                continue
            self.transcript.append(("gateway", target.name, out))
            self._arrive(target, out)

    def _arrive(self, ua: UA, message: SipMessage) -> None:
        ua.inbox.append(message)
        kind = (message.header("content-type") or "application/sdp").split(";")[0].strip().lower()
        if message.body and kind == "application/sdp":
            label = message.method if message.is_request else str(message.status)
            ua.received_sdp.append((label, message.body.decode()))
            ua.take_sdp(message)
        if message.is_request:
            self._auto_request(ua, message)
        else:
            self._auto_reply(ua, message)

    def _auto_request(self, ua: UA, request: SipMessage) -> None:
        method = request.method
        dialog = ua.dialogs.get(request.call_id)
        if method == "INVITE" and request.to_tag is None:
            ua.pending_invites[request.call_id] = request
            return
        if method == "CANCEL":
            self.send(ua, ua.reply_to(request, 200, "OK", _token("t")))
            invite = ua.pending_invites.pop(request.call_id, None)
            if invite is not None:
                self.send(ua, ua.reply_to(invite, 487, "Request Terminated", _token("t")))
            return
        if method == "ACK":
            return
        if dialog is None:
            self.send(ua, ua.reply_to(request, 481, "Call/Transaction Does Not Exist", None))
            return
        if method == "BYE":
            del ua.dialogs[request.call_id]
            self.send(ua, ua.reply_to(request, 200, "OK", None))
            return
        if method in ("INVITE", "UPDATE"):
            body = ""
            if request.body:
                body = ua.make_answer(request.call_id)
            elif method == "INVITE":
                body = ua.make_offer(request.call_id)  # late re-offer: our offer in the 200, the answer in the ACK
            self.send(ua, ua.reply_to(request, 200, "OK", dialog.local_tag, body))
            return
        self.send(ua, ua.reply_to(request, 200, "OK", None))

    def _auto_reply(self, ua: UA, reply: SipMessage) -> None:
        if reply.status in (401, 407) and self._authenticate(ua, reply):
            return
        if reply.cseq_method != "INVITE" or reply.status < 200:
            return
        dialog = ua.dialogs.get(reply.call_id)
        if dialog is None:
            return
        if reply.status >= 300:
            ua.offering.discard(reply.call_id)
            if dialog.remote_tag is None:
                del ua.dialogs[reply.call_id]
            ack = ua.request(
                "ACK",
                dialog.remote_target,
                reply.header("to") or "",
                reply.call_id,
                dialog.local_tag,
                reply.cseq_number,
            )
            ack.set_header("Via", next(reply.vias()))
            self.send(ua, ack)
            return
        if dialog.remote_tag is None:
            dialog.remote_tag = reply.to_tag
            dialog.route_set = list(reversed([r for v in reply.header_values("record-route") for r in v.split(",")]))
            dialog.remote_target = reply.address_uri("contact") or dialog.remote_target
        # A 2xx that carried an offer (late offer) is answered in the ACK.
        body = ua.make_answer(reply.call_id) if reply.call_id in ua.offers else ""
        self.send(ua, self._in_dialog(ua, dialog, "ACK", body, cseq=reply.cseq_number))

    def _authenticate(self, ua: UA, reply: SipMessage) -> bool:
        """Retry the challenged request once with RFC 2617 digest credentials (qop=auth)."""
        request = ua.sent.get(reply.call_id)
        header = "Authorization" if reply.status == 401 else "Proxy-Authorization"
        challenge = reply.header("www-authenticate" if reply.status == 401 else "proxy-authenticate")
        if ua.password is None or request is None or challenge is None or request.header(header) is not None:
            return False
        if reply.cseq_method == "INVITE":  # ACK the 407 hop by hop, keep the dialog for the retry
            ack = ua.request(
                "ACK", request.ruri, reply.header("to") or "", reply.call_id, request.from_tag or "", reply.cseq_number
            )
            ack.set_header("Via", next(reply.vias()))
            self.send(ua, ack)
        fields = digest_fields(challenge)
        creds = {
            "username": ua.username or ua.name,
            "realm": fields.get("realm", ""),
            "nonce": fields.get("nonce", ""),
            "uri": request.ruri,
            "qop": "auth",
            "nc": "00000001",
            "cnonce": _token("cn"),
        }
        creds["response"] = digest_response(creds, ua.password, request.method)
        retry = request.copy()
        retry.set_header("Via", ua.via)
        retry.set_header("CSeq", f"{request.cseq_number + 1} {request.method}")
        retry.headers.insert(
            1,
            (
                header,
                "Digest " + ", ".join(f'{k}="{v}"' if k not in ("qop", "nc") else f"{k}={v}" for k, v in creds.items()),
            ),
        )
        dialog = ua.dialogs.get(reply.call_id)
        if dialog is not None:
            dialog.cseq = request.cseq_number + 1
        self.send(ua, retry)
        return True

    def _in_dialog(self, ua: UA, dialog: Dialog, method: str, body: str = "", cseq: Optional[int] = None) -> SipMessage:
        if cseq is None:
            dialog.cseq += 1
            cseq = dialog.cseq
        to = f"<{dialog.remote_uri}>" + (f";tag={dialog.remote_tag}" if dialog.remote_tag else "")
        message = ua.request(method, dialog.remote_target, to, dialog.call_id, dialog.local_tag, cseq, body)
        if dialog.route_set:
            message.headers.insert(1, ("Route", ", ".join(r.strip() for r in dialog.route_set)))
        return message

    # -- call steps -------------------------------------------------------------------------

    def register(self, ua: UA, expires: int = 3600, extra_headers: Sequence[Tuple[str, str]] = ()) -> SipMessage:
        """``ua`` registers (answering the digest challenge); ``expires`` 0 removes its binding; ``extra_headers``
        (e.g. ``[("User-Agent", "Zoiper 2.10")]``) go into its REGISTER.  The final reply."""
        call_id = _token("reg")
        request = ua.request("REGISTER", f"sip:{ua.domain}", f"<{ua.aor}>", call_id, _token("f"), 1)
        request.set_header("Expires", str(expires))
        for name, value in extra_headers:
            request.headers.insert(-1, (name, value))  # before Content-Length
        self.send(ua, request)
        finals = [m for m in ua.inbox if not m.is_request and m.call_id == call_id and m.status >= 200]
        return finals[-1] if finals else request

    def registered(self, *uas: UA) -> Tuple[UA, ...]:
        """Register each UA (answering any challenge) and hand them back, for ``a, b = net.registered(...)``."""
        for ua in uas:
            self.register(ua)
        return uas

    def invite(
        self,
        caller: UA,
        user: str,
        sdp: bool = True,
        domain: Optional[str] = None,
        extra_headers: Sequence[Tuple[str, str]] = (),
    ) -> Call:
        call_id, tag = _token("call"), _token("f")
        target = f"sip:{user}@{domain or caller.domain}"
        body = caller.make_offer(call_id) if sdp else ""
        request = caller.request("INVITE", target, f"<{target}>", call_id, tag, 1, body)
        for name, value in extra_headers:
            request.headers.insert(-1, (name, value))  # before Content-Length
        caller.dialogs[call_id] = Dialog(call_id, tag, None, caller.aor, target, target, [], 1, True)
        self.send(caller, request)
        return Call(self, caller, call_id)

    def callees(self, call: Call) -> List[UA]:
        return [ua for ua in self.uas.values() if call.call_id in ua.pending_invites]

    def reply(self, call: Call, callee: UA, code: int, sdp: Optional[bool] = None) -> None:
        invite = callee.pending_invites[call.call_id]
        tag = call.tags.setdefault(callee.name, _token("t"))
        with_sdp = sdp if sdp is not None else (200 <= code < 300 or code == 183)
        body = ""
        if with_sdp and 180 <= code < 300:
            if call.call_id in callee.offers or call.call_id in callee.answers:
                body = callee.make_answer(call.call_id)
            else:
                body = callee.make_offer(call.call_id)  # late offer: ours goes in the reply
        if 200 <= code < 300:
            del callee.pending_invites[call.call_id]
            route = [r for v in invite.header_values("record-route") for r in v.split(",")]
            target = invite.address_uri("contact") or call.caller.contact
            callee.dialogs[call.call_id] = Dialog(
                call.call_id, tag, invite.from_tag, callee.aor, call.caller.aor, target, route, 0, False
            )
        elif code >= 300:
            del callee.pending_invites[call.call_id]
        self.send(callee, callee.reply_to(invite, code, REASONS.get(code, "OK" if code < 300 else "Failed"), tag, body))

    def challenge(
        self, call: Call, trunk: UA, code: int = 407, realm: str = "carrier.example", qop: str = "auth",
        algorithm: str = "MD5", stale: bool = False,
    ) -> str:  # fmt: skip
        """``trunk`` challenges the call's INVITE as a carrier does (407 Proxy-Authenticate, or 401
        WWW-Authenticate), a nonce of its own; ``qop``: what it offers ("auth,auth-int", "" for none), ``stale``:
        the nonce of the answer it got was stale (RFC 7616).  The nonce."""
        invite = trunk.pending_invites.pop(call.call_id)
        nonce = _token("n")
        reason = "Unauthorized" if code == 401 else "Proxy Authentication Required"
        reply = trunk.reply_to(invite, code, reason, _token("t"))
        header = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
        value = f'Digest realm="{realm}", nonce="{nonce}"' + (f', qop="{qop}"' if qop else "")
        reply.headers.insert(-1, (header, value + f", algorithm={algorithm}" + (", stale=true" if stale else "")))
        self.send(trunk, reply)
        return nonce

    def cancel(self, call: Call) -> None:
        caller = call.caller
        invite = call.caller.sent[call.call_id]
        cancel = SipMessage(
            f"CANCEL {invite.ruri} SIP/2.0",
            [
                ("Via", next(invite.vias())),
                ("Max-Forwards", "70"),
                ("From", invite.header("from") or ""),
                ("To", invite.header("to") or ""),
                ("Call-ID", call.call_id),
                ("CSeq", f"{invite.cseq_number} CANCEL"),
                ("Content-Length", "0"),
            ],
        )
        self.send(caller, cancel)

    def party(self, call: Call, side: str) -> Tuple[UA, Dialog]:
        if side == "caller":
            return call.caller, call.caller.dialogs[call.call_id]
        for ua in self.uas.values():
            dialog = ua.dialogs.get(call.call_id)
            if dialog is not None and not dialog.is_caller:
                return ua, dialog
        raise LookupError(f"no callee in dialog for {call.call_id}")

    def reinvite(self, call: Call, side: str, sdp: bool = True, hold: bool = False) -> None:
        ua, dialog = self.party(call, side)
        body = ua.make_offer(call.call_id, "sendonly" if hold else "sendrecv") if sdp else ""
        self.send(ua, self._in_dialog(ua, dialog, "INVITE", body))

    def info(self, call: Call, side: str, body: str, content_type: str = "application/dtmf-relay") -> SipMessage:
        """An in-dialog INFO (JsSIP sends a DTMF digit as ``Signal=5\\r\\nDuration=160``); the request sent."""
        ua, dialog = self.party(call, side)
        request = self._in_dialog(ua, dialog, "INFO")
        request.set_body(body.encode(), content_type)
        self.send(ua, request)
        return request

    def bye(self, call: Call, side: str) -> None:
        ua, dialog = self.party(call, side)
        self.send(ua, self._in_dialog(ua, dialog, "BYE"))
        ua.dialogs.pop(call.call_id, None)


@dataclass
class Call:
    network: Network
    caller: UA
    call_id: str
    tags: Dict[str, str] = field(default_factory=dict)

    @property
    def established(self) -> bool:
        dialog = self.caller.dialogs.get(self.call_id)
        return dialog is not None and dialog.remote_tag is not None

    # -- what happened to the call, for tests of one's rules --------------------------------

    def invites_sent(self) -> List[Tuple[Endpoint, SipMessage]]:
        """Every INVITE of this call the gateway sent, and where: one per branch (a user's contacts, a trunk)."""
        events = self.network.gateway.events
        return [e.data for e in events if e.kind == "send" and e.data[1].is_request
                and e.data[1].method == "INVITE" and e.data[1].call_id == self.call_id]  # fmt: skip

    def statuses(self) -> List[int]:
        """The final replies the caller got (a digest challenge, which it answers by itself, left out)."""
        return [m.status for m in self.caller.inbox if not m.is_request and m.call_id == self.call_id
                and m.status >= 200 and m.status not in (401, 407)]  # fmt: skip

    def answers(self) -> List[str]:
        """The same final replies as ``statuses``, each as its code and reason phrase: "403 Relaying Forbidden"."""
        return [m.first_line.split(" ", 1)[1] for m in self.caller.inbox if not m.is_request
                and m.call_id == self.call_id and m.status >= 200 and m.status not in (401, 407)]  # fmt: skip

    def rtpengine_offers(self) -> List[Dict[str, Any]]:
        """The ng offers sent for this call (none: no media proxy)."""
        commands = [e.data[0] for e in self.network.gateway.events if e.kind == "rtpengine"]
        return [c for c in commands if c["command"] == "offer" and c["call-id"] == self.call_id]
