"""The gateway as shipped: pyscripts/policy.py's rule before any operator edit (fakes/shipped/gateway.ini says
who runs it)."""

from gateway.policy import Decision, Request


def route(request: Request, default: Decision) -> Decision:
    return default
