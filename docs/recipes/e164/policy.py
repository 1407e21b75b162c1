"""Recipe: the carrier wants numbers in E.164; our users dial them nationally (0301234567) or
internationally (0044201234).  The blocked range of gateway.ini is answered before this rule."""

import re

from gateway.policy import Decision, Request, to_trunk

COUNTRY = "49"
NATIONAL = re.compile(r"0[1-9][0-9]{4,}")
INTERNATIONAL = re.compile(r"00[1-9][0-9]{4,}")


def route(request: Request, default: Decision) -> Decision:
    number = request.ruri_user
    if NATIONAL.fullmatch(number):
        return to_trunk("carrier", f"+{COUNTRY}{number[1:]}")
    if INTERNATIONAL.fullmatch(number):
        return to_trunk("carrier", f"+{number[2:]}")
    return default
