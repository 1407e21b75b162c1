"""Recipe: trunk failover.  gateway.ini's [dialplan] sends numbers to the carrier, then to the backup when
the carrier fails; free-phone numbers go the other way round, which a rule says as a decision."""

from gateway.policy import Decision, Request, to_trunk


def route(request: Request, default: Decision) -> Decision:
    if request.ruri_user.startswith("0800"):
        return to_trunk("backup").or_trunk("carrier")
    return default
