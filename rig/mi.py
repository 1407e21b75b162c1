"""OpenSIPS's management interface over HTTP (mi_http, JSON-RPC 2.0)."""

from __future__ import annotations

import itertools
import json
import urllib.request
from typing import Any, Dict, List, Optional

_ids = itertools.count(1)


class MIError(RuntimeError):
    pass


def call(url: str, method: str, params: Optional[Dict[str, Any]] = None, timeout: float = 5.0) -> Any:
    body: Dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": next(_ids)}
    if params:
        body["params"] = params
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        # OpenSIPS prints what senders wrote as it came (a dialog's SDP in dlg_list): not always UTF-8.
        answer = json.loads(response.read().decode("utf-8", "replace"))
    if "error" in answer:
        raise MIError(f"{method}: {answer['error']}")
    return answer.get("result")


def dialogs(url: str) -> List[Dict[str, Any]]:
    result = call(url, "dlg_list") or {}
    return list(result.get("Dialogs", []))


#: ul_dump's Expires of a contact that is gone but still in memory: with a database (write-back) usrloc
#: keeps a deleted or expired contact until its timer has written the change (ul_mi.c).
GONE = ("deleted", "expired")


def contacts(url: str) -> Dict[str, List[Dict[str, Any]]]:
    """AOR -> its live contacts, from ``ul_dump`` (GONE ones left out; an AOR with none too)."""
    result = call(url, "ul_dump") or {}
    found: Dict[str, List[Dict[str, Any]]] = {}
    for domain in result.get("Domains", []):
        for aor in domain.get("AORs", []):
            live = [c for c in aor.get("Contacts", []) if c.get("Expires") not in GONE]
            if live:
                found[aor["AOR"]] = live
    return found
