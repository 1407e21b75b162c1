"""This recipe is gateway.ini alone: the rule keeps the gateway's decision, the dial plan applied."""

from gateway.policy import Decision, Request


def route(request: Request, default: Decision) -> Decision:
    return default
