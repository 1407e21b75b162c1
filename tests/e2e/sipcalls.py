"""Helpers for calls between SIPp phones through the real gateway."""

from __future__ import annotations

import itertools
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from rig import ng, sipp

from .conftest import Rig

_users = itertools.count(1)


def user(prefix: str) -> str:
    """A user name no other test registers (the location table lives for the whole session)."""
    return f"{prefix}{os.getpid() % 1000}x{next(_users)}"


def registered(
    rig: Rig,
    work: Path,
    prefix: str,
    transport: str = "udp",
    contact_host: str = "127.0.0.1",
    password: str = "",
    name: str = "",
) -> sipp.Phone:
    """A new SIPp phone registered (``name``, else a new user of ``prefix``; with ``password`` it answers
    the digest challenge: the subscriber must exist)."""
    phone = sipp.Phone(name or user(prefix), transport=transport, contact_host=contact_host)
    return register_phone(rig, work, phone, password)


def register_phone(rig: Rig, work: Path, phone: sipp.Phone, password: str = "") -> sipp.Phone:
    """Register ``phone`` with the rig's gateway (its SIP address as the domain)."""
    run = sipp.register(phone, work, rig.sip, domain=rig.sip[0], password=password)
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


def packets_of(commands: Sequence[ng.Exchange], call_id: str) -> Dict[str, int]:
    """Packets rtpengine got from each tag of ``call_id``, from the relay's query just before the delete;
    fails when there was no delete or the query got no answer (no counters is no evidence of media)."""
    deletes = [e for e in commands if e.sent.get("call-id") == call_id and e.sent.get("command") == "delete"]
    assert deletes, f"no delete for {call_id}: {[e.sent.get('command') for e in commands]}"
    assert deletes[-1].final_query is not None, f"rtpengine did not answer the query before the delete of {call_id}"
    return ng.packet_counts(deletes[-1].final_query)


def media_both_ways(commands: Sequence[ng.Exchange], call_id: str, minimum: int = 20) -> Dict[str, int]:
    """Assert that rtpengine got more than ``minimum`` packets from each leg of ``call_id``: the caller
    (From tag of the first offer) and the callee that answered (To tag of the first answer), by name."""
    own = [e for e in commands if e.sent.get("call-id") == call_id]
    offer = first(own, "offer")
    answer = first(own, "answer")
    assert offer is not None and answer is not None, f"no offer and answer for {call_id}: {[e.sent for e in own]}"
    legs = {"caller": str(offer.sent.get("from-tag")), "callee": str(answer.sent.get("to-tag"))}
    assert legs["caller"] != legs["callee"], legs
    packets = packets_of(own, call_id)
    for leg, tag in legs.items():
        assert tag in packets, f"{call_id}: no counters for the {leg} leg (tag {tag}) in {packets}"
        assert packets[tag] > minimum, f"{call_id}: {packets[tag]} packets from the {leg} leg (tag {tag}): {packets}"
    return packets


def new_call_id(name: str) -> str:
    """A Call-ID of our own for a call the test places (the one rtpengine then knows the call by)."""
    return f"{name}-{uuid.uuid4().hex}@127.0.0.1"


def call(
    rig: Rig,
    work: Path,
    caller: sipp.Phone,
    callee: sipp.Phone,
    caller_script: sipp.Call,
    callee_script: sipp.Call,
    name: str = "call",
    call_id: str = "",
    dialled: str = "",
    auth: Optional[Tuple[str, str]] = None,
    domain: str = "",
) -> Outcome:
    """Run one call: the callee's SIPp UAS first (echoing RTP), then the caller's UAC; both bounded in time.

    The caller's INVITE carries ``call_id`` (a new one when empty): that is the call rtpengine is
    asked about, and the callee must have got the INVITE under it (no topology hiding on the rig).
    ``dialled``: the user the caller calls (default: the callee's; a number the gateway routes to the
    callee, e.g. a trunk); ``auth``: the caller's user and password for the gateway's digest challenge;
    ``domain``: the host[:port] of the caller's request URI and From (default: the gateway's address)."""
    call_id = call_id or new_call_id(name)
    domain = domain or rig.sip[0]
    uas = sipp.run(sipp.uas_scenario(callee_script), work, f"{name}-uas", callee, rig.sip, domain=domain, echo=True)
    try:
        time.sleep(0.3)  # SIPp binds its port before it can be called
        uac = sipp.run(
            sipp.uac_scenario(caller_script, auth=auth is not None), work, f"{name}-uac", caller, rig.sip,
            service=dialled or callee.user, call_id=call_id, auth=auth, domain=domain,
        )  # fmt: skip
        try:
            caller_code = uac.wait()
        finally:
            uac.stop()
        callee_code = uas.wait()
    finally:
        uas.stop()
    assert caller_code == 0 and callee_code == 0, (
        f"caller {caller_code}, callee {callee_code}\n{uac.errors()}\n{uas.errors()}\n"
        + "\n".join(rig.errors_in_log()[-20:])
    )
    received = call_id_received(work, f"{name}-uas")
    assert received == call_id, f"the callee got Call-ID {received!r}, the caller sent {call_id!r}"
    return Outcome(caller_code, callee_code, call_id, rig.relay.commands(call_id))


def call_id_received(work: Path, name: str) -> str:
    """The Call-ID of the first message in SIPp run ``name``'s message log (a UAS: the INVITE it got)."""
    path = work / f"{name}.messages.log"
    assert path.exists(), f"no message log {path}"
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("call-id", "i"):
            return value.strip()
    raise AssertionError(f"no Call-ID in {path}")


@dataclass
class Message:
    """One SIP message of a SIPp run's message log (``-trace_msg``)."""

    sent: bool
    transport: str
    """``UDP``, ``TCP``, ... as SIPp names it."""
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0 ")

    def headers(self, name: str) -> List[str]:
        """The values of every ``name`` header (any case; compact forms not expanded)."""
        head = self.text.split("\n\n", 1)[0].splitlines()[1:]
        found = []
        for line in head:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                found.append(value.strip())
        return found

    @property
    def call_id(self) -> str:
        values = self.headers("Call-ID") or self.headers("i")
        return values[0] if values else ""


def messages(work: Path, name: str) -> List[Message]:
    """Every message SIPp run ``name`` sent or received, in order (none when it logged nothing)."""
    path = work / f"{name}.messages.log"
    if not path.exists():
        return []
    found = []
    text = "\n" + path.read_text(errors="replace").replace("\r\n", "\n")
    for chunk in text.split("\n" + "-" * 47 + " ")[1:]:  # each entry opens with 47 dashes and its time
        lines = chunk.split("\n")
        kind = next((line for line in lines[1:4] if " message " in line), "")
        if not kind:
            continue
        start = lines.index(kind) + 1
        found.append(Message(" message sent" in kind, kind.split()[0], "\n".join(lines[start:]).strip("\n")))
    return found


def settle(rig: Rig, call_id: str, seconds: float = 5.0) -> None:
    """Wait (bounded) until rtpengine and OpenSIPS hold nothing more for the call, then assert it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if call_id not in rig.sessions() and not rig.live_dialogs(call_id):
            break
        time.sleep(0.1)
    assert call_id not in rig.sessions(), f"rtpengine still holds {call_id}"
    assert not rig.live_dialogs(call_id), f"OpenSIPS still holds a dialog for {call_id}"


def settle_all(rig: Rig, seconds: float = 10.0) -> None:
    """Wait (bounded) until rtpengine holds no session and OpenSIPS no live dialog at all, then assert it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not rig.sessions() and not rig.live_dialogs():
            break
        time.sleep(0.2)
    sessions, dialogs = rig.sessions(), rig.live_dialogs()
    assert not sessions and not dialogs, (
        f"{seconds:.0f}s on, rtpengine still holds {sessions} and OpenSIPS live dialogs "
        f"{[(d.get('callid'), d.get('state')) for d in dialogs]}"
    )


#: A short call: the caller hangs up after 300 ms (caller's script, callee's script).
SHORT_CALL_STEPS = (sipp.Call((("pause", 300), ("bye",))), sipp.Call((("expect_bye",),)))

HOLD_AND_BYE: Sequence[sipp.Step] = (("pause", 1200), ("reinvite", "sendonly"), ("pause", 400),
                                     ("reinvite", "sendrecv"), ("pause", 800), ("bye",))  # fmt: skip
EXPECT_HOLD_AND_BYE: Sequence[sipp.Step] = (("expect_reinvite",), ("expect_reinvite",), ("expect_bye",))


def flags_of(exchange: ng.Exchange) -> Dict[str, object]:
    return {k: v for k, v in exchange.sent.items() if k != "sdp"}


def first(commands: Sequence[ng.Exchange], op: str) -> Optional[ng.Exchange]:
    return next((e for e in commands if e.sent.get("command") == op), None)
