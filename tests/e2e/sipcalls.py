"""Helpers for calls between SIPp phones through the real gateway."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from rig import ng, sipp

from .conftest import Rig

_users = itertools.count(1)


def user(prefix: str) -> str:
    """A user name no other test registers (the location table lives for the whole session)."""
    return f"{prefix}{os.getpid() % 1000}x{next(_users)}"


def registered(
    rig: Rig, work: Path, prefix: str, transport: str = "udp", contact_host: str = "127.0.0.1"
) -> sipp.Phone:
    phone = sipp.Phone(user(prefix), transport=transport, contact_host=contact_host)
    run = sipp.register(phone, work, rig.sip)
    code = run.wait()
    assert code == 0, f"REGISTER of {phone.user} failed ({code}):\n{run.errors()}"
    return phone


@dataclass
class Outcome:
    caller_code: int
    callee_code: int
    call_id: str
    commands: List[ng.Exchange]

    def ops(self) -> List[str]:
        return [str(e.sent.get("command")) for e in self.commands]

    def packets(self) -> Dict[str, int]:
        deletes = [e for e in self.commands if e.sent.get("command") == "delete" and e.final_query]
        return ng.packet_counts(deletes[-1].final_query) if deletes else {}


def call(
    rig: Rig,
    work: Path,
    caller: sipp.Phone,
    callee: sipp.Phone,
    caller_script: sipp.Call,
    callee_script: sipp.Call,
    name: str = "call",
    call_id: str = "",
) -> Outcome:
    """Run one call: the callee's SIPp UAS first (echoing RTP), then the caller's UAC; both bounded in time."""
    before = {e.sent.get("call-id") for e in rig.relay.commands()}
    uas = sipp.run(sipp.uas_scenario(callee_script), work, f"{name}-uas", callee, rig.sip, echo=True)
    try:
        time.sleep(0.3)  # SIPp binds its port before it can be called
        uac = sipp.run(
            sipp.uac_scenario(caller_script), work, f"{name}-uac", caller, rig.sip, service=callee.user, call_id=call_id
        )
        caller_code = uac.wait()
        callee_code = uas.wait()
    finally:
        uas.stop()
    new = [e for e in rig.relay.commands() if e.sent.get("call-id") not in before]
    call_ids = {str(e.sent.get("call-id")) for e in new}
    call_id = call_ids.pop() if len(call_ids) == 1 else _call_id_from(work, f"{name}-uac")
    assert caller_code == 0 and callee_code == 0, (
        f"caller {caller_code}, callee {callee_code}\n{uac.errors()}\n{uas.errors()}\n"
        + "\n".join(rig.errors_in_log()[-20:])
    )
    return Outcome(caller_code, callee_code, call_id, rig.relay.commands(call_id))


def _call_id_from(work: Path, name: str) -> str:
    for path in work.glob(f"{name}.messages.log"):
        for line in path.read_text(errors="replace").splitlines():
            if line.lower().startswith("call-id:"):
                return line.split(":", 1)[1].strip()
    return ""


def settle(rig: Rig, call_id: str, seconds: float = 5.0) -> None:
    """Wait (bounded) until rtpengine and OpenSIPS hold nothing more for the call, then assert it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if call_id not in rig.sessions() and not rig.live_dialogs(call_id):
            break
        time.sleep(0.1)
    assert call_id not in rig.sessions(), f"rtpengine still holds {call_id}"
    assert not rig.live_dialogs(call_id), f"OpenSIPS still holds a dialog for {call_id}"


#: A short call: the caller hangs up after 300 ms (caller's script, callee's script).
SHORT_CALL_STEPS = (sipp.Call((("pause", 300), ("bye",))), sipp.Call((("expect_bye",),)))

HOLD_AND_BYE: Sequence[sipp.Step] = (("pause", 1200), ("reinvite", "sendonly"), ("pause", 400),
                                     ("reinvite", "sendrecv"), ("pause", 800), ("bye",))  # fmt: skip
EXPECT_HOLD_AND_BYE: Sequence[sipp.Step] = (("expect_reinvite",), ("expect_reinvite",), ("expect_bye",))


def flags_of(exchange: ng.Exchange) -> Dict[str, object]:
    return {k: v for k, v in exchange.sent.items() if k != "sdp"}


def first(commands: Sequence[ng.Exchange], op: str) -> Optional[ng.Exchange]:
    return next((e for e in commands if e.sent.get("command") == op), None)
