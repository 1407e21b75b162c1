"""A script_name for fault tests: the real router (pyscripts/opensips_entry.py), with faults on demand.

A request carrying ``X-Gateway-Fault`` makes the Python side fail there:

    X-Gateway-Fault: raise    on_request raises out of the handler: OpenSIPS's python module logs
                              the traceback and python_exec returns -1 (docs/host-facts.md)
    X-Gateway-Fault: inside   the router's own host calls fail (get_pseudoVar, set_pseudoVar raise):
                              the router's guard catches it, logs it and returns its failure code

Either way the cfg's fail-safe (route[python_failed]) must answer: 500 for an initial request,
routing for an in-dialog one, counted in python_failures and logged with the Call-ID.  Without
the header the routing is the real one, unchanged.  Runs inside OpenSIPS: stdlib only.
"""

import os
import sys
from typing import Any, Tuple

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(1, os.path.join(_HERE, os.pardir, os.pardir, "pyscripts"))

import opensips_entry  # noqa: E402

MARKER = "X-Gateway-Fault"


class InjectedFault(RuntimeError):
    pass


class FailingMsg:
    """The host's msg, except that pseudo-variables fail (as a host call failing mid-route)."""

    def __init__(self, msg: Any) -> None:
        self._msg = msg

    def __getattr__(self, name: str) -> Any:
        return getattr(self._msg, name)

    def get_pseudoVar(self, fmt: str) -> str:  # noqa: N802 - the host's name
        raise InjectedFault(f"injected: get_pseudoVar({fmt!r}) failed")

    def set_pseudoVar(self, name: str, value: str) -> None:  # noqa: N802 - the host's name
        raise InjectedFault(f"injected: set_pseudoVar({name!r}) failed")


class FaultyRouter:
    def __init__(self, router: Any) -> None:
        self.router = router

    def child_init(self, rank: int) -> int:
        return int(self.router.child_init(rank))

    def on_request(self, msg: Any, *facts: str) -> int:
        return self._route("on_request", msg, facts)

    def on_in_dialog(self, msg: Any, *facts: str) -> int:
        return self._route("on_in_dialog", msg, facts)

    def _route(self, name: str, msg: Any, facts: Tuple[str, ...]) -> int:
        route = getattr(self.router, name)
        fault = msg.getHeader(MARKER)
        if fault == "raise":
            raise InjectedFault(f"injected: {name} raised")
        if fault == "inside":
            # As a worker's first message of its kind: the router writes every $var it needs, and the
            # first write fails (with the $vars held from before, it would make no host call at all).
            self.router.forget_writes()
            return int(route(FailingMsg(msg), *facts))
        return int(route(msg, *facts))

    def __getattr__(self, name: str) -> Any:
        """Every other route (on_reply, on_in_dialog, ..., is_trusted) as the router has it."""
        return getattr(self.router, name)


def mod_init() -> FaultyRouter:
    return FaultyRouter(opensips_entry.mod_init())
