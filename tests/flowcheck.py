"""What must hold after any call flow through the fake host."""

from __future__ import annotations

import re
from typing import List

from fakes.runtime import Gateway
from fakes.ua import UA, Network


def sdp_problems(ua: UA, sdp: str) -> List[str]:
    """Why an SDP is wrong for the kind of UA that received it; empty when right."""
    protos = re.findall(r"^m=\w+ \d+ (\S+)", sdp, re.M)
    found = []
    if ua.is_browser:
        if not protos or any(p != "UDP/TLS/RTP/SAVPF" for p in protos):
            found.append(f"browser got {protos}")
        for needed in ("a=fingerprint:", "a=ice-ufrag:", "a=ice-pwd:", "a=candidate:", "a=rtcp-mux"):
            if needed not in sdp:
                found.append(f"browser SDP lacks {needed}")
        if "a=crypto:" in sdp:
            found.append("browser SDP has SDES crypto")
    else:
        if not protos or any(p != "RTP/AVP" for p in protos):
            found.append(f"phone got {protos}")
        for banned in ("a=fingerprint:", "a=ice-ufrag:", "a=candidate:", "a=crypto:"):
            if banned in sdp:
                found.append(f"phone SDP has {banned}")
        audio = re.findall(r"^m=audio \d+ \S+ ([\d ]+)", sdp, re.M)
        if not audio or not {"0", "8", "9"} & set(audio[0].split()):
            found.append("phone SDP offers no G.711/G.722")
    return found


def received_sdp_problems(net: Network) -> List[str]:
    return [
        f"{ua.name}: {p} ({label})"
        for ua in net.uas.values()
        for label, sdp in ua.received_sdp
        for p in sdp_problems(ua, sdp)
    ]


def assert_clean(gateway: Gateway, net: Network) -> None:
    """Nothing left behind, nothing lost, nothing logged."""
    assert gateway.sessions() == [], "rtpengine sessions left"
    assert gateway.dialogs == {}, "dialogs left"
    assert gateway.transactions == {}, "transactions left pending"
    assert net.undelivered == [], net.undelivered
    assert gateway.errors == [], "\n".join(gateway.errors)  # an operator's failing rule says why and where
    assert gateway.python_failures == 0, "\n".join(gateway.errors)
    assert gateway.copies == 0
    assert received_sdp_problems(net) == [], received_sdp_problems(net)
