"""What each kind of leg must receive, as lists of problems (empty: fine).

A browser-bound SDP (docs/host-facts.md, rtpengine flags toward a browser): every live
media section is UDP/TLS/RTP/SAVPF with a DTLS fingerprint, ICE credentials
and candidates, rtcp-mux, and no SDES crypto lines (Chrome rejects them next
to DTLS).  A SIP-bound SDP: RTP/AVP, no ICE, no DTLS, no rtcp-mux, and one
audio section with a codec the phone speaks (for an answer: only codecs the
phone offered).
"""

from __future__ import annotations

from typing import Iterable, List, Optional

from fakes import sdp as sdpread

EVENTS = ("telephone-event", "CN")


def browser_problems(body: str) -> List[str]:
    found: List[str] = []
    sections = [m for m in sdpread.media(body) if m.port != 0]
    if not sections:
        return ["no live media section"]
    if any(line.startswith("a=crypto:") for line in sdpread.lines(body)):
        found.append("a=crypto line next to DTLS")
    for m in sections:
        where = f"m={m.kind}"
        if m.proto != "UDP/TLS/RTP/SAVPF":
            found.append(f"{where}: {m.proto}, not UDP/TLS/RTP/SAVPF")
        for attribute in ("fingerprint", "setup", "ice-ufrag", "ice-pwd", "candidate", "rtcp-mux"):
            if not m.has(attribute):
                found.append(f"{where}: no a={attribute}")
    return found


def phone_problems(body: str, speaks: Iterable[str], offered: Optional[Iterable[str]] = None) -> List[str]:
    """``speaks``: the phone's codecs; ``offered``: for an answer, the codecs the phone put in its offer."""
    found: List[str] = []
    sections = [m for m in sdpread.media(body) if m.port != 0]
    if [m.kind for m in sections].count("audio") != 1:
        found.append(f"live media sections {[m.kind for m in sections]}, expected one audio")
    allowed = set(offered if offered is not None else speaks)
    for m in sections:
        where = f"m={m.kind}"
        if m.proto != "RTP/AVP":
            found.append(f"{where}: {m.proto}, not RTP/AVP")
        for attribute in ("ice-ufrag", "ice-pwd", "candidate", "fingerprint", "setup", "rtcp-mux", "crypto"):
            if m.has(attribute):
                found.append(f"{where}: has a={attribute}")
        if m.kind != "audio":
            continue  # a browser's video reaches a phone as plain RTP too; the phone refuses it (port 0)
        media_codecs = [c for c in m.codec_names if c not in EVENTS]
        if not set(media_codecs) & set(speaks):
            found.append(f"{where}: no codec the phone speaks in {media_codecs}")
        if offered is not None and not set(media_codecs) <= allowed:
            found.append(f"{where}: answer has {sorted(set(media_codecs) - allowed)}, not offered by the phone")
    return found
