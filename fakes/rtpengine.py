"""rtpengine for the fake host: the ng command OpenSIPS builds, and an in-memory engine.

``ng_command`` follows OpenSIPS 3.6/4.0 ``modules/rtpengine/rtpengine.c``
(``parse_flags`` and ``rtpe_function_call_prepare``): bare unknown tokens go
to ``flags``, ``key=value`` to top-level keys, transport profiles to
``transport-protocol``, ``replace-*`` to ``replace``, ``rtcp-mux-*`` to
``rtcp-mux``; tags follow the message direction (an offer in a reply or an
answer in a request swaps From and To tags); a delete sends no tags at all.

``MemoryEngine`` keeps sessions and rewrites SDP enough for the offline tests
to see what a leg would receive (transport, ICE, DTLS, rtcp-mux, crypto,
codecs).  A backend with the same ``command`` method can talk to a real
rtpengine instead.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Set, Tuple

from .sipmsg import SipMessage

TRANSPORTS = {
    "RTP/AVP": "RTP/AVP",
    "RTP/AVPF": "RTP/AVPF",
    "RTP/SAVP": "RTP/SAVP",
    "RTP/SAVPF": "RTP/SAVPF",
    "UDP/TLS/RTP/SAVP": "UDP/TLS/RTP/SAVP",
    "UDP/TLS/RTP/SAVPF": "UDP/TLS/RTP/SAVPF",
}
REPLACE = {
    "replace-origin": "origin",
    "replace-username": "username",
    "replace-SDP-version": "SDP version",
    "replace-zero-address": "zero address",
    "replace-session-name": "session name",
    "replace-session-connection": "session-connection",
}
RTCP_MUX = {f"rtcp-mux-{w}": w for w in ("demux", "offer", "reject", "accept", "require")}


class FlagError(ValueError):
    """OpenSIPS refuses the flag string: the rtpengine function returns -1 before sending anything."""


def ng_command(op: str, flags: Optional[str], msg: SipMessage, source_ip: str) -> Dict[str, Any]:
    """The ng dictionary OpenSIPS sends for ``rtpengine_<op>(flags)`` on ``msg``."""
    ng: Dict[str, Any] = {}
    flag_list: List[str] = []
    replace: List[str] = []
    rtcp_mux: List[str] = []
    via: Optional[str] = None
    interfaces: Dict[str, str] = {}
    offer_answer = op in ("offer", "answer")
    for token in (flags or "").split():
        key, sep, value = token.partition("=")
        if key in TRANSPORTS and not sep:
            ng["transport-protocol"] = TRANSPORTS[key]
        elif key in REPLACE and not sep:
            if offer_answer:
                replace.append(REPLACE[key])
        elif key in RTCP_MUX and not sep:
            if offer_answer:
                rtcp_mux.append(RTCP_MUX[key])
        elif key == "via-branch":
            if value in ("1", "2"):
                via = msg.top_via_branch() if value == "1" else None
            elif value == "auto":
                # parse_flags accepts it, rtpe_function_call_prepare then fails.
                raise FlagError("can't get Via branch/extra ID (via-branch=auto)")
            elif value == "extra":
                raise FlagError("via-branch=extra needs the extra_id_pv modparam")
            else:
                raise FlagError(f"invalid via-branch value {value!r}")
            if via is None:
                raise FlagError("can't get Via branch")
        elif key in ("in-iface", "out-iface") and sep:
            interfaces[key] = value
        elif key == "via-branch-param":
            if not value:
                raise FlagError("can't get Via branch/extra ID")
            via = value
        elif key in ("delete-delay", "repacketize") and sep:
            if not value.lstrip("-").isdigit():
                raise FlagError(f"invalid value for {key}")
            ng[key] = int(value)
        elif key == "address-family" and sep:
            if value not in ("IP4", "IP6"):
                raise FlagError("invalid address-family")
            ng["address family"] = value
        elif key in ("from-tag", "call-id", "media-address") and not sep:
            raise FlagError(f"missing value for {key}")
        elif key == "force-answer":
            if op != "offer":
                raise FlagError("cannot force answer in non-offer command")
            op = "answer"
        elif sep:
            ng[key] = value
        else:
            flag_list.append(key)
    if len(interfaces) == 1:  # rtpengine.c: "in-iface value without out-iface" (and the reverse): -1
        raise FlagError(f"{next(iter(interfaces))} value without its pair")
    if interfaces and offer_answer:  # the pair becomes ng's "direction" list (offer and answer only)
        ng["direction"] = [interfaces["in-iface"], interfaces["out-iface"]]
    call_id = msg.call_id
    from_tag, to_tag = msg.from_tag, msg.to_tag
    if not call_id:
        raise FlagError("can't get Call-Id field")
    if not from_tag:
        raise FlagError("can't get From tag")
    if offer_answer:
        ng["sdp"] = msg.body.decode("utf-8", errors="replace")
    if flag_list:
        ng["flags"] = flag_list
    if replace:
        ng["replace"] = replace
    if rtcp_mux:
        ng["rtcp-mux"] = rtcp_mux
    ng["call-id"] = call_id
    if via is not None:
        ng["via-branch"] = via
    ng["received-from"] = ["IP6" if ":" in source_ip else "IP4", source_ip]
    forward = (msg.is_request and op != "answer") or (not msg.is_request and op in ("delete", "answer"))
    if forward:
        if op != "delete":
            ng["from-tag"] = from_tag
            if to_tag:
                ng["to-tag"] = to_tag
    else:
        if not to_tag:
            raise FlagError("No to-tag present")
        ng["from-tag"] = to_tag
        ng["to-tag"] = from_tag
    ng["command"] = op
    return ng


class Backend(Protocol):
    def command(self, ng: Dict[str, Any]) -> Dict[str, Any]: ...


@dataclass
class Session:
    call_id: str
    branches: Set[str] = field(default_factory=set)
    answered: bool = False
    dtmf: List[Tuple[str, str]] = field(default_factory=list)
    """The digits played into the call ("play DTMF"): (the tag of the party they come from, the digit)."""


#: The codes rtpengine's "play DTMF" takes (a digit, *, #, A-D; it also takes event numbers).
DTMF_CODES = frozenset("0123456789*#ABCD")


@dataclass
class MemoryEngine:
    """Sessions by Call-ID and via-branch, and SDP rewritten the way the flags ask."""

    address: str = "127.0.0.1"
    sessions: Dict[str, Session] = field(default_factory=dict)
    log: List[Dict[str, Any]] = field(default_factory=list)
    created: int = 0
    _ports: Any = field(default_factory=lambda: itertools.count(30000, 2))

    def command(self, ng: Dict[str, Any]) -> Dict[str, Any]:
        self.log.append(ng)
        op = ng["command"]
        call_id = ng["call-id"]
        branch = ng.get("via-branch", "")
        if op in ("offer", "answer") and not _parses(ng.get("sdp", "")):
            return {"result": "error", "error-reason": "Failed to parse SDP"}
        if op == "offer":
            session = self.sessions.setdefault(call_id, Session(call_id))
            if branch not in session.branches:
                self.created += 1
            session.branches.add(branch)
            return {"result": "ok", "sdp": self.rewrite(ng, offer=True)}
        session_or_none = self.sessions.get(call_id)
        if session_or_none is None:
            return {"result": "error", "error-reason": "Unknown call-id"}
        if op == "answer":
            session_or_none.answered = True
            return {"result": "ok", "sdp": self.rewrite(ng, offer=False)}
        if op == "play DTMF":  # a digit into the media as the from-tag's party's RFC 4733 events
            if ng.get("code") not in DTMF_CODES:
                return {"result": "error", "error-reason": "Invalid DTMF event"}
            session_or_none.dtmf.append((str(ng.get("from-tag")), str(ng["code"])))
            return {"result": "ok"}
        if op == "delete":
            # Real rtpengine (10.5): a delete without from-tag - OpenSIPS sends none -
            # deletes the entire call, whatever its via-branch.
            del self.sessions[call_id]
            return {"result": "ok"}
        return {"result": "error", "error-reason": f"unsupported command {op}"}

    def rewrite(self, ng: Dict[str, Any], offer: bool) -> str:
        return rewrite_sdp(ng, self.address, next(self._ports), offer)


def _parses(sdp: str) -> bool:
    """What rtpengine's SDP parser refuses outright: an m= line without port, protocol and formats."""
    return all(len(line.split()) >= 4 for line in re.split(r"\r?\n", sdp) if line.startswith("m="))


_DTLS_LINES = ("a=fingerprint:", "a=setup:", "a=tls-id:")
_ICE_LINES = ("a=ice-", "a=candidate:", "a=end-of-candidates")
_CODECS = {"PCMU": (0, "PCMU/8000"), "PCMA": (8, "PCMA/8000"), "G722": (9, "G722/8000")}


def rewrite_sdp(ng: Dict[str, Any], address: str, port: int, offer: bool) -> str:
    """A stand-in for rtpengine's SDP rewrite: enough to check which shape each leg receives."""
    flags = ng.get("flags", [])
    proto = ng.get("transport-protocol")
    ice = ng.get("ICE")
    dtls = ng.get("DTLS")
    mux = ng.get("rtcp-mux", [])
    lines = [line for line in re.split(r"\r?\n", ng.get("sdp", "")) if line]
    out: List[str] = []
    media_seen = False
    for line in lines:
        if line.startswith("c="):
            line = f"c=IN IP4 {address}"
        elif line.startswith("o=") and "origin" in ng.get("replace", []):
            parts = line.split()
            line = " ".join([*parts[:5], address]) if len(parts) >= 6 else line
        elif line.startswith("m="):
            media_seen = True
            parts = line.split()
            if proto:
                parts[2] = proto
            parts[1] = str(port)
            if offer:
                for codec in [f[len("transcode-") :] for f in flags if f.startswith("transcode-")]:
                    if codec in _CODECS and str(_CODECS[codec][0]) not in parts[3:]:
                        parts.append(str(_CODECS[codec][0]))
            line = " ".join(parts)
        elif line.startswith(_ICE_LINES) and (ice == "remove" or ice == "force"):
            continue
        elif line.startswith(_DTLS_LINES) and (
            dtls == "off" or (proto and "TLS" not in proto) or (proto and "TLS" in proto)
        ):
            continue
        elif line.startswith("a=crypto:") and ("SDES-off" in flags or (proto and "SAVP" not in proto)):
            continue
        elif line == "a=rtcp-mux" and ("demux" in mux):
            continue
        elif line.startswith("a=rtcp:") or line.startswith("a=rtcp-mux"):
            continue
        out.append(line)
        if line.startswith("m="):
            media_seen = True
    if not media_seen:
        return "\r\n".join(out) + "\r\n"
    return "\r\n".join(_media_extras(out, ng, offer)) + "\r\n"


def _media_extras(lines: List[str], ng: Dict[str, Any], offer: bool) -> List[str]:
    proto = ng.get("transport-protocol") or ""
    mux = ng.get("rtcp-mux", [])
    result: List[str] = []
    for line in lines:
        result.append(line)
        if not line.startswith("m="):
            continue
        parts = line.split()
        for _codec, (pt, name) in _CODECS.items():
            if str(pt) in parts[3:] and not any(x.startswith(f"a=rtpmap:{pt} ") for x in lines):
                result.append(f"a=rtpmap:{pt} {name}")
        if "TLS" in proto:
            result.append("a=fingerprint:sha-256 " + ":".join(["AB"] * 32))
            setup = ng.get("DTLS", "actpass" if offer else "passive")
            result.append(f"a=setup:{setup}")
        if ng.get("ICE") == "force":
            result.append("a=ice-ufrag:fakeufrag")
            result.append("a=ice-pwd:fakeicepasswordfakeicepass")
            result.append("a=candidate:1 1 UDP 2130706431 127.0.0.1 " + parts[1] + " typ host")
        if "require" in mux or "offer" in mux:
            result.append("a=rtcp-mux")
        else:
            result.append(f"a=rtcp:{int(parts[1]) + 1}")
    return result


def sessions_left(engine: MemoryEngine) -> List[Tuple[str, List[str]]]:
    return [(s.call_id, sorted(s.branches)) for s in engine.sessions.values()]
