"""Recipe: headers on the relayed INVITE that depend on the caller, and one taken away."""

from gateway.policy import Decision, Kind, Request


def route(request: Request, default: Decision) -> Decision:
    kind = "webrtc" if request.caller is Kind.BROWSER else "sip"
    return default.with_header("X-Caller-Kind", kind).without_header("P-Preferred-Identity")
