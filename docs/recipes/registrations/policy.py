"""Who may register, and from where: register() is asked for each REGISTER that passed the digest check."""

from gateway.policy import Decision, Kind, Request, reply

#: The kiosks' accounts (kiosk1, kiosk2, ...) are for the lobby's browsers, not for a desk phone.
KIOSKS = "kiosk"
#: Softphones the company does not support.
UNSUPPORTED = ("OldPhone/1.", "Zoiper 2.")


def register(request: Request, default: Decision) -> Decision:
    if request.to_user.startswith(KIOSKS) and request.caller is not Kind.BROWSER:
        return reply(403, "Forbidden - Browsers Only")
    agent = request.header("User-Agent") or ""
    if agent.startswith(UNSUPPORTED):
        return reply(403, "Forbidden - Unsupported Phone")
    return default


def route(request: Request, default: Decision) -> Decision:
    return default
