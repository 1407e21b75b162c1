"""Your routing rules.  This file and opensips/gateway.ini are the only places to change routing.

How it works
------------
Every new request (INVITE, MESSAGE, OPTIONS, SUBSCRIBE, ...; not REGISTER) from a caller
who passed digest authentication comes to ``route(request, default)``; so does a call from
another domain's caller (none is asked for a password: it has none here), which reaches our
users only: a trunk or URI you decide for it becomes 403 Relaying Forbidden.  ``default`` is what
the gateway would do: registered users for our domains, ``sip_destination`` for others, with
gateway.ini's tables applied ([blocked] prefixes get 403, the [dialplan] sends numbers to
[trunks], [media] always_proxy users take rtpengine).  Return ``default`` to keep it, a
change of it, or another decision.  Two tables hold whatever you return: a [blocked]
number gets 403 before your rules are asked, and an always_proxy user's calls take
rtpengine unless your decision says MediaProxy.NEVER.

    to_user()                         the registered contacts of the called user
    to_user("alice")                  ... of another user (e.g. a number that rings alice)
    to_trunk("intl")                  a trunk named in gateway.ini [trunks] (its domain= then the
                                      request URI's host: a carrier that routes by it)
    to_trunk("intl", "+49301234567")  ... with that as the request URI's user (E.164 and the like)
    to_uri("sip:ivr@10.0.0.5")        any SIP URI (it becomes the request URI)
    reply(403, "Forbidden")           answer the request yourself (400-699, not 401/407)

and change any decision with

    .or_trunk("backup")                       (a trunk's: if decision.target == "trunk") when the trunk
                                              fails (a reply of gateway.ini failover_on), try this one
                                              next, same request URI and address family
    .with_header("X-Tenant", "acme")          add a header to the relayed request
    .without_header("P-Preferred-Identity")   remove every such header
    .with_media(MediaProxy.ALWAYS)            AUTO (the gateway decides), ALWAYS, NEVER
    .with_rtpengine("record-call=yes")        rtpengine flags for this call's offers,
    .with_rtpengine("transcode-PCMA", toward=Kind.SIP)   ... or only those toward SIP phones
                                              (a call without the media proxy has no offer:
                                              add .with_media(MediaProxy.ALWAYS) to be sure)

``request`` holds method, ruri_user, ruri_domain, from_user, from_domain, to_user, to_domain,
source_ip, source_port, transport (udp tcp tls ws wss), caller (Kind.BROWSER or Kind.SIP),
caller_behind_nat, has_sdp, and request.header("X-Name") for the headers gateway.ini
[policy] headers names.  Text a sender wrote reaches you as UTF-8; bytes that are not become
U+FFFD.  A user's %-escapes are undone (sip:%30900@... has ruri_user "0900").

``callee(request, callee, decision)`` (optional) is asked, for a call to registered users,
once for each kind of contact the call may reach: ``callee.kind`` (Kind.BROWSER or Kind.SIP)
and ``callee.behind_nat``.  It returns ``decision`` (the call's, for branches to such contacts),
a change of its media (``decision.with_media(...)``, ``.with_rtpengine(...)``) or
``decision.drop()`` (no branch to them):

    def callee(request: Request, callee: Callee, decision: Decision) -> Decision:
        if (decision.user or request.ruri_user) == "frank" and callee.kind is Kind.BROWSER:
            return decision.drop()      # frank's calls ring his phones only
        return decision

(``decision.user`` is the user a rule sent the call to, None for the called user.)
With a callee() the router works out every call's branches afresh (a few microseconds more a
call): define it only when you need it.

``register(request, default)`` (optional) is asked for each REGISTER that passed the digest
check (``request.to_user`` is the user registering; ``request.ruri_user`` is empty).  It returns
``default`` (the registration is saved) or ``reply(code, reason)`` (it is not):

    def register(request: Request, default: Decision) -> Decision:
        if request.to_user.startswith("kiosk") and request.caller is not Kind.BROWSER:
            return reply(403, "Forbidden - Browsers Only")   # kiosks register from a browser only
        return default

It is not asked for a de-registration (Expires 0, ``Contact: *``): removing a binding is always
allowed.  ``request.caller`` is Kind.BROWSER for a REGISTER over WebSocket (WS/WSS), whatever
sends it; a trusted source ([gateway] trusted_sources) reaches register() without a digest
check.  Each load tries register() on two sample REGISTERs of user "load-check" from 192.0.2.10
(a browser's, a phone's): a rule that counts REGISTERs sees them.  Without a register() no
REGISTER enters your rules.

A rule that raises costs the caller a 500 (counted as python_failures, logged with the
Call-ID); OpenSIPS keeps running.  Saved changes are picked up within a second, without a
restart; a file that fails to import or fails on a sample call (a browser calling a user) is
refused (each worker logs the reason once) and the rules before it keep routing.  Where your
rules fail on more sample calls (a browser and a SIP phone calling 112, 0301234567, a number of
each dial-plan prefix, another domain's user, ...), the load logs it once ("fail on sample calls") but takes
the file.
Neither tries every path of your rules: test them offline (README.md "Changing the routing").

Try a change offline before it goes live: ``python3 -m fakes.trace call browser:alice 0044201234``
shows where a call goes, and README.md "Changing the routing" has recipes with their tests.
"""

from gateway.policy import Callee, Decision, Kind, MediaProxy, Request, reply, to_trunk, to_uri, to_user

__all__ = ["Callee", "Decision", "Kind", "MediaProxy", "Request", "reply", "route", "to_trunk", "to_uri", "to_user"]


def route(request: Request, default: Decision) -> Decision:
    return default
