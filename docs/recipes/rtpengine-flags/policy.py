"""Recipe: rtpengine flags per call: calls to the carrier also offer G.711 A-law (rtpengine transcodes
when the caller has none); a team's calls are recorded."""

from gateway.policy import Decision, Kind, Request, to_trunk

RECORDED = {"alice"}


def route(request: Request, default: Decision) -> Decision:
    decision = default
    if request.ruri_user.startswith("00"):
        decision = to_trunk("carrier").with_rtpengine("transcode-PCMA", toward=Kind.SIP)
    if request.from_user in RECORDED:
        decision = decision.with_rtpengine("record-call=yes")
    return decision
