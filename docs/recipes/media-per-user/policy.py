"""Recipe: ... and in Python: calls between two SIP phones of the office never take the media proxy
(they reach each other directly), whatever NAT the gateway sees."""

from gateway.policy import Decision, MediaProxy, Request

OFFICE = {"dave", "erin"}


def route(request: Request, default: Decision) -> Decision:
    if request.from_user in OFFICE and request.ruri_user in OFFICE:
        return default.with_media(MediaProxy.NEVER)
    return default
