"""Recipe: the carrier's numbers ring our users; the sales number goes to the sales team's PBX."""

from gateway.policy import Decision, Request, to_trunk, to_user

NUMBERS = {"+4930123450": "alice", "+4930123451": "bob"}


def route(request: Request, default: Decision) -> Decision:
    if request.ruri_user in NUMBERS:
        return to_user(NUMBERS[request.ruri_user])
    if request.ruri_user == "+4930123459":
        return to_trunk("sales")
    return default
