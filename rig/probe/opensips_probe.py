"""A script_name for tests: the real router (pyscripts/opensips_entry.py), watched.

OpenSIPS loads this file instead of opensips_entry.py when a test wants to see
what the host shows the router: before and after each route method it reads
pseudo-variables one at a time (so one the route cannot read does not hide the
others) and appends one JSON line per route call to $GATEWAY_PROBE_LOG, with
the facts the cfg formatted into python_exec's argument.  The
routing itself is the real one, unchanged.  Runs inside OpenSIPS: stdlib only.
"""

import json
import os
import sys
from typing import Any, Callable, Dict, Sequence

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(1, os.path.join(_HERE, os.pardir, os.pardir, "pyscripts"))

import opensips_entry  # noqa: E402

LOG = os.environ.get("GATEWAY_PROBE_LOG", "")

BEFORE = {
    "request": ("$socket_in(proto)", "$rm", "$ci", "$tt", "$bf", "$DLG_dir", "$dlg_val(gw)", "$avp(gw_tx)"),
    "reply": (
        "$socket_in(proto)", "$rs", "$rm", "$ci", "$T_branch_idx", "$bf", "$DLG_dir", "$dlg_val(gw)", "$avp(gw_tx)",
    ),
    "failure": ("$T_branch_idx", "$rm", "$ci", "$bf", "$DLG_dir", "$dlg_val(gw)", "$avp(gw_tx)"),
    "in-dialog": ("$rm", "$ci", "$tt", "$DLG_dir", "$dlg_val(gw)", "$avp(gw_tx)"),
    "lookup-failure": ("$rm", "$ci", "$rc"),
    "authorized": ("$rm", "$ci", "$au", "$fU", "$tU", "$ru", "$du"),
}  # fmt: skip
AFTER = {
    "request": ("$var(gw_do)", "$dlg_val(gw)", "$avp(gw_tx)", "$DLG_dir", "$du", "$ru", "$bf"),
    "reply": ("$var(gw_reply)", "$var(gw_reply_record)", "$var(gw_reply_kept)", "$dlg_val(gw)", "$avp(gw_tx)"),
    "failure": ("$var(gw_failure)", "$dlg_val(gw)"),
    "in-dialog": ("$var(gw_in_dialog)", "$dlg_val(gw)", "$avp(gw_tx)", "$du", "$var(gw_rtp_offer)",
                  "$var(gw_rtp_delete)"),
    "lookup-failure": ("$var(gw_not_found)", "$var(gw_code)", "$var(gw_reason)"),
    "authorized": ("$var(gw_authorized)", "$ru", "$du", "$var(gw_to_webrtc)", "$var(gw_to_nated)",
                   "$var(gw_to_plain)"),
}  # fmt: skip
ROUTES = {
    "on_request": "request",
    "on_authorized": "authorized",
    "on_in_dialog": "in-dialog",
    "on_lookup_failure": "lookup-failure",
    "on_reply": "reply",
    "on_failure": "failure",
}


def _read(msg: Any, names: Sequence[str]) -> Dict[str, Any]:
    values: Dict[str, Any] = {}
    for name in names:
        try:
            values[name] = msg.get_pseudoVar(name)
        except Exception as exc:  # noqa: BLE001 - a probe must not break routing
            values[name] = "!" + type(exc).__name__
    return values


def _write(record: Dict[str, Any]) -> None:
    if not LOG:
        return
    line = json.dumps(record) + "\n"
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Probe:
    def __init__(self, router: Any) -> None:
        self.router = router

    def child_init(self, rank: int) -> int:
        return int(self.router.child_init(rank))

    def _watch(self, route: str, method: Callable[..., int], msg: Any, facts: Sequence[str]) -> int:
        record: Dict[str, Any] = {"route": route, "pid": os.getpid(), "facts": facts[0] if facts else None}
        try:
            record["type"] = msg.Type
            record["before"] = _read(msg, BEFORE[route])
        except Exception as exc:  # noqa: BLE001
            record["probe_error"] = repr(exc)
        result = method(msg, *facts)
        record["rc"] = result
        try:
            record["after"] = _read(msg, AFTER[route])
        except Exception as exc:  # noqa: BLE001
            record["probe_error"] = repr(exc)
        _write(record)
        return result

    def __getattr__(self, name: str) -> Any:
        """Each route of the router, watched; is_trusted (pike's check route, per packet) is not recorded.
        The branch route asks nothing: it runs the plan on_request (or on_authorized) left for its kind."""
        method = getattr(self.router, name)
        route = ROUTES.get(name)
        if route is None:
            return method
        return lambda msg, *facts: self._watch(route, method, msg, facts)


def mod_init() -> Probe:
    return Probe(opensips_entry.mod_init())
