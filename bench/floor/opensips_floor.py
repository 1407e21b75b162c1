"""The floor (bench.run --floor): what entering Python once per new call costs, with the router's work taken away.

OpenSIPS loads this file as the python module's script in place of pyscripts/opensips_entry.py; it
runs the same opensips.cfg.  It builds the gateway's router as opensips_entry.mod_init does and hands
every entry point to it, except that an initial INVITE whose head (the facts before the first tab:
method, transport, NAT, Contacts, the three domains) this worker has answered before gets that
answer again: python_exec, one split, one look-up and the router's own ``_give`` (which finds the
answer's $vars in place), and no decision.

Never for real traffic: the answer also depends on the source, the users, the body and the rules.
It holds for bench.run's calls only (every source a trusted one, every call to a registered user,
the default rules), and the floor checks that as it goes: every CHECK_EVERY-th answer it gives
again is also decided afresh, and one that differs is logged as an ERROR (bench.run counts them)
and forgotten.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict

# The python module put this folder first on sys.path; the router lives in pyscripts/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pyscripts"))

from OpenSIPS import LM_ERR  # type: ignore[attr-defined,unused-ignore]

import opensips_entry
from gateway.host import REQUEST_VAR

#: One answer in this many given again is decided afresh too, and compared.
CHECK_EVERY = 1000


class Floor:
    """The router, with an initial INVITE's answer kept by the head of its facts (see the module)."""

    def __init__(self, router: Any, log: Any = LM_ERR) -> None:
        self._router = router
        self._log = log
        self._answers: Dict[str, Any] = {}
        self._given = 0

    def __getattr__(self, name: str) -> Any:  # every other entry point, as the router has it
        return getattr(self._router, name)

    def on_request(self, msg: Any, facts: str = "") -> int:
        router = self._router
        try:
            head = facts.split("\t", 1)[0]
            answer = self._answers.get(head)
            if answer is not None:
                self._given += 1
                if self._given % CHECK_EVERY == 0:
                    fresh = router._request(router._current(msg), msg, facts)
                    if fresh != answer:
                        self._log(f"gateway: floor: another answer for the same head: {fresh!r}, kept {answer!r}\n")
                        del self._answers[head]
                        answer = fresh
            else:
                answer = router._request(router._current(msg), msg, facts)
                if head.startswith("INVITE\n"):
                    self._answers[head] = answer
            router._give(msg, REQUEST_VAR, answer)
            return 1
        except Exception:  # noqa: BLE001 - as the router: the cfg's fail-safe answers, the router logs why
            return int(router.on_request(msg, facts))


def mod_init() -> Floor:
    return Floor(opensips_entry.mod_init())
