"""User agents around the fake host: browsers (SIP over WebSocket, WebRTC SDP) and SIP phones.

``Network`` carries messages between the UAs and a ``Gateway``.  UAs answer
what a real one answers by itself (200 to BYE and re-INVITE, 487 after CANCEL,
ACK for final replies); the call's caller and callees are driven step by step
by tests and by the tracer: ``invite``, ``reply``, ``cancel``, ``reinvite``, ``bye``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .runtime import Endpoint, Gateway
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


def phone_sdp(session: str, address: str, port: int = 20000, direction: str = "sendrecv") -> str:
    """A plain SIP phone offer: RTP/AVP, G.711 and G.722, separate RTCP."""
    return (
        "\r\n".join(
            [
                "v=0",
                f"o=phone {session} 1 IN IP4 {address}",
                "s=call",
                f"c=IN IP4 {address}",
                "t=0 0",
                f"m=audio {port} RTP/AVP 0 8 9 101",
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:8 PCMA/8000",
                "a=rtpmap:9 G722/8000",
                "a=rtpmap:101 telephone-event/8000",
                f"a={direction}",
            ]
        )
        + "\r\n"
    )


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
    late_answer: Dict[str, bool] = field(default_factory=dict)

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
        return f"SIP/2.0/{proto} {self.contact_host};branch={_token('z9hG4bK')};rport"

    def sdp(self, direction: str = "sendrecv") -> str:
        if self.is_browser:
            return browser_sdp(_token("5"), direction)
        return phone_sdp(_token("7"), self.contact_host.split(":")[0], direction=direction)

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


class Network:
    """The UAs and the gateway, and every message between them."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.uas: Dict[Endpoint, UA] = {}
        self.transcript: List[Tuple[str, str, SipMessage]] = []
        self.undelivered: List[Tuple[Endpoint, SipMessage]] = []
        self._hosts = itertools.count(2)

    # -- UAs --------------------------------------------------------------------------

    def browser(self, name: str, secure: bool = True) -> UA:
        host = f"127.0.0.{next(self._hosts)}"
        ua = UA(
            name, "web", Endpoint("wss" if secure else "ws", host, 50000 + len(self.uas)), f"{name}-{host[-1]}.invalid"
        )
        self.uas[ua.endpoint] = ua
        return ua

    def phone(self, name: str, nat: bool = False, proto: str = "udp") -> UA:
        host = f"127.0.0.{next(self._hosts)}"
        if nat:
            ua = UA(name, "sip", Endpoint(proto, host, 40000 + len(self.uas)), f"192.168.1.{len(self.uas) + 10}:5060")
        else:
            ua = UA(name, "sip", Endpoint(proto, host, 5060), f"{host}:5060")
        self.uas[ua.endpoint] = ua
        return ua

    # -- carrying messages --------------------------------------------------------------

    def send(self, ua: UA, message: SipMessage) -> None:
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
        if message.body:
            label = message.method if message.is_request else str(message.status)
            ua.received_sdp.append((label, message.body.decode()))
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
                offered = "sendonly" if "a=sendonly" in request.body.decode() else "sendrecv"
                body = ua.sdp("recvonly" if offered == "sendonly" else "sendrecv")
            elif method == "INVITE":
                body = ua.sdp()  # late re-offer: our offer goes in the 200, the answer in the ACK
            self.send(ua, ua.reply_to(request, 200, "OK", dialog.local_tag, body))
            return
        self.send(ua, ua.reply_to(request, 200, "OK", None))

    def _auto_reply(self, ua: UA, reply: SipMessage) -> None:
        if reply.cseq_method != "INVITE" or reply.status < 200:
            return
        dialog = ua.dialogs.get(reply.call_id)
        if dialog is None:
            return
        if reply.status >= 300:
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
        body = ua.sdp() if ua.late_answer.pop(reply.call_id, False) and reply.body else ""
        self.send(ua, self._in_dialog(ua, dialog, "ACK", body, cseq=reply.cseq_number))

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

    def register(self, ua: UA, expires: int = 3600) -> SipMessage:
        call_id = _token("reg")
        request = ua.request("REGISTER", f"sip:{ua.domain}", f"<{ua.aor}>", call_id, _token("f"), 1)
        request.set_header("Expires", str(expires))
        before = len(ua.inbox)
        self.send(ua, request)
        return ua.inbox[before] if len(ua.inbox) > before else request

    def invite(self, caller: UA, user: str, sdp: bool = True, domain: Optional[str] = None) -> Call:
        call_id, tag = _token("call"), _token("f")
        target = f"sip:{user}@{domain or caller.domain}"
        request = caller.request("INVITE", target, f"<{target}>", call_id, tag, 1, caller.sdp() if sdp else "")
        caller.dialogs[call_id] = Dialog(call_id, tag, None, caller.aor, target, target, [], 1, True)
        if not sdp:
            caller.late_answer[call_id] = True
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
            body = callee.sdp()
        if 200 <= code < 300:
            del callee.pending_invites[call.call_id]
            route = [r for v in invite.header_values("record-route") for r in v.split(",")]
            target = invite.address_uri("contact") or call.caller.contact
            callee.dialogs[call.call_id] = Dialog(
                call.call_id, tag, invite.from_tag, callee.aor, call.caller.aor, target, route, 0, False
            )
        elif code >= 300:
            del callee.pending_invites[call.call_id]
        self.send(callee, callee.reply_to(invite, code, "OK" if code < 300 else "Failed", tag, body))

    def cancel(self, call: Call) -> None:
        caller = call.caller
        invite = next(
            m for _, _, m in self.transcript if m.is_request and m.call_id == call.call_id and m.method == "INVITE"
        )
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
        body = ua.sdp("sendonly" if hold else "sendrecv") if sdp else ""
        if not sdp:
            ua.late_answer[call.call_id] = True
        self.send(ua, self._in_dialog(ua, dialog, "INVITE", body))

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
