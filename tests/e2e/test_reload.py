"""Rules changed while the real OpenSIPS runs: policy.py and gateway.ini are read again, nobody is dropped.

Each test starts its own rig with a gateway.ini and a policy.py in the rig's folder (GATEWAY_SETTINGS,
GATEWAY_POLICY), two trunks (SIPp UASs on 127.0.0.21 and 127.0.0.22 that answer every INVITE with
"486 Busy at trunk A" or "... B", so the caller's final reply names where its call went), and SIPp
callers, each on a loopback address of its own (pike counts per source), that place calls side by side
so that several UDP workers route them.  Each OpenSIPS worker has its own router and looks at the files
at most once a second, on its first message after the second is up (gateway/loader.py); so after a
change the test waits a bit over a second, then dials in rounds (bounded) until the calls have met
every UDP worker or the rounds run out, and requires every call after the change to follow the new
rules, and each worker that routed one to have logged "rules loaded again" (once).

A browser (JsSIP over WSS) registers before the change and stays registered: its WebSocket is the
same connection (MI list_tcp_conns: same ID, same remote port) after the reload, JsSIP saw no
disconnection and registered once, and a SIPp phone can still call it (audio both ways).  No call
fails on the Python side (python_failures unchanged, no traceback).  A broken file is refused with
its reason, logged at most once per worker, and the rules before it keep routing.

With bytecode written, as Python does by default, a policy saved twice within one second at the same
length routes as last saved (the loader once ran the first save's cached bytecode then).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set

import pytest

from rig import mi, sipp, web

from .conftest import PROBE, Rig, need, own_rig, python_quiet
from .rawsip import SDP, SipSocket
from .sipcalls import media_both_ways, messages, new_call_id, settle, settle_all, user
from .webphones import WebPhone

TRUNK_HOSTS = {"a": "127.0.0.21", "b": "127.0.0.22"}
CALLER_HOSTS = ("127.0.0.31", "127.0.0.32", "127.0.0.33", "127.0.0.34")
CALLS_EACH = 3  # per caller and round: 12 calls a round, four at a time
ROUNDS = 5  # at most, after a change
WAIT = 1.3  # seconds after a change: a bit over a worker's once-a-second look

INI = """\
[gateway]
domains = 127.0.0.1 localhost gateway.local
topology_hiding = no
; the trunks answer from here: trusted, so pike does not count their replies
trusted_sources = {host_a} {host_b}

[trunks]
a = sip:{host_a}:{port_a}
b = sip:{host_b}:{port_b}

[dialplan]
00 = {international}
"""

POLICY = '''\
"""Reload test rules: {what}."""

from gateway.policy import Decision, Request, reply, to_trunk


def route(request: Request, default: Decision) -> Decision:
    if request.ruri_user.startswith("0900"):
        return {premium}
    return default
'''
#: Premium numbers refused, the first rules; then sent to trunk B.
REFUSED = POLICY.format(what="premium numbers refused", premium='reply(403, "Refused by rules 1")')
TO_TRUNK_B = POLICY.format(what="premium numbers to trunk B", premium='to_trunk("b")')

PREMIUM, INTERNATIONAL = "0900123456", "0044201234"


def trunk_xml(name: str) -> str:
    """A trunk that answers each INVITE with 486 and its name, then takes the ACK."""
    s = sipp.Scenario(f"trunk-{name}")
    s.recv("INVITE")
    s.send(
        f"""SIP/2.0 486 Busy at trunk {name.upper()}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]T[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
""",
        retrans=False,
    )
    s.recv("ACK")
    return s.xml()


#: Final replies a dialled call may get: any of them ends the call (the test reads which one it was).
FINALS = ("403", "404", "408", "480", "500", "503", "486")


def dial_xml() -> str:
    """A caller's call (SDP offer: rtpengine takes part, the caller being behind NAT for nathelper) that
    takes whichever final reply comes and ACKs it."""
    s = sipp.Scenario("dial")
    s.send(
        f"""INVITE sip:[service]@[domain] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[caller]@[domain]>;tag=[pid]D[call_number]
To: <sip:[service]@[domain]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:[caller]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{sipp.body()}"""
    )
    for provisional in ("100", "180", "183"):
        s.recv(provisional, optional=True)
    for code in FINALS:
        s.recv(code, optional=code != FINALS[-1], extra=' next="final"')
    s.parts.append('<label id="final"/>')
    s.send(
        """ACK sip:[service]@[domain] SIP/2.0
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
""",
        retrans=False,
    )
    return s.xml()


@dataclass
class Dialled:
    """A call a caller placed: its final reply ("486 Busy at trunk A") and the worker its INVITE met."""

    call_id: str
    final: str
    pid: int


@dataclass
class Reloading:
    """The rig of one test, its files, trunks and callers."""

    rig: Rig
    work: Path
    ini: Path
    policy: Path
    trunks: Dict[str, sipp.Phone]
    callers: List[sipp.Phone]
    udp_workers: Set[int]
    rounds: int = 0

    def settings(self, international: str = "a") -> str:
        return settings(self.trunks, international)

    def dial(self, number: str) -> List[Dialled]:
        """One round: every caller places CALLS_EACH calls to ``number`` at once (bounded); each call's
        final reply and the pid of the worker that routed its INVITE (the probe's record)."""
        self.rounds += 1
        runs = [
            sipp.run(
                dial_xml(),
                self.work,
                f"dial{self.rounds}-{n}",
                phone,
                self.rig.sip,
                service=number,
                calls=CALLS_EACH,
                rate=50,
                timeout=20,
            )
            for n, phone in enumerate(self.callers)
        ]
        try:
            codes = [run.wait() for run in runs]
        finally:
            for run in runs:
                run.stop()
        assert codes == [0] * len(runs), "\n".join(run.errors() for run in runs)
        finals: Dict[str, str] = {}
        for n in range(len(runs)):
            for message in messages(self.work, f"dial{self.rounds}-{n}"):
                status, _, reason = message.first_line[len("SIP/2.0 ") :].partition(" ")
                if not message.sent and not message.is_request and int(status) >= 300:
                    finals[message.call_id] = f"{status} {reason}"
        assert len(finals) == CALLS_EACH * len(runs), finals
        found = []
        for call_id, final in finals.items():
            records = self.rig.probes(call_id)
            invites = [r for r in records if r["route"] == "request" and r.get("before", {}).get("$rm") == "INVITE"]
            assert invites, f"no probe record of the INVITE of {call_id}"
            found.append(Dialled(call_id, final, int(invites[0]["pid"])))
        return found

    def dial_until_every_worker(self, number: str) -> List[Dialled]:
        """Rounds (at most ROUNDS, a bit over a second apart) until the INVITEs met every UDP worker."""
        found: List[Dialled] = []
        for n in range(ROUNDS):
            if n:
                time.sleep(WAIT)
            found += self.dial(number)
            if {d.pid for d in found} >= self.udp_workers:
                break
        workers = {d.pid for d in found}
        print(f"FIGURE opensips-{self.rig.gw.version}: {len(found)} calls to {number} met {len(workers)} of "
              f"{len(self.udp_workers)} UDP workers")  # fmt: skip
        assert len(workers) >= 3, f"the calls met {len(workers)} workers only: {Counter(d.pid for d in found)}"
        return found


def settings(trunks: Dict[str, sipp.Phone], international: str = "a") -> str:
    """gateway.ini: the trunks where their SIPp UASs listen, and the trunk numbers starting 00 go to."""
    hosts = {f"host_{n}": p.host for n, p in trunks.items()}
    ports = {f"port_{n}": p.port for n, p in trunks.items()}
    return INI.format(international=international, **hosts, **ports)


def replace(path: Path, text: str) -> None:
    """A change the workers see whole: written beside, then renamed over the file (as editors save)."""
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(text)
    os.replace(staged, path)


def logged(rig: Rig, offset: int, mark: str) -> Dict[int, List[str]]:
    """What OpenSIPS logged after ``offset`` with ``mark`` in it, by the pid of the process that logged it."""
    found: Dict[int, List[str]] = {}
    for line in rig.log_since(offset).splitlines():
        if mark in line:
            match = re.search(r"\[(\d+)\]", line)
            assert match, line
            found.setdefault(int(match.group(1)), []).append(line)
    return found


def workers(rig: Rig, kind: str) -> Set[int]:
    """The pids of OpenSIPS's processes whose MI ``ps`` type starts with ``kind``."""
    answer = mi.call(rig.gw.mi_url, "ps") or {}
    return {int(p["PID"]) for p in answer.get("Processes", []) if str(p.get("Type", "")).startswith(kind)}


@contextlib.contextmanager
def reload_rig(
    opensips_bin: Optional[str], folder: Path, work: Path, env: Optional[Dict[str, str]] = None
) -> Iterator[Reloading]:
    """A rig of its own (gateway.ini and policy.py in ``folder``) with two trunks and four callers; around
    the work inside: no Python failure (python_quiet: python_failures unchanged, no traceback logged), and
    nothing held afterwards (no rtpengine session, no live dialog).  Every process stopped by pid."""
    need("sipp")
    trunks = {name: sipp.Phone(f"trunk-{name}", host=host, contact_host=host) for name, host in TRUNK_HOSTS.items()}
    callers = [sipp.Phone(user("dialler"), host=host, contact_host=host) for host in CALLER_HOSTS]
    policy = folder / "policy.py"
    policy.write_text(REFUSED)
    env = {"GATEWAY_POLICY": str(policy), "GATEWAY_PROBE_LOG": str(folder / "probe.jsonl"), **(env or {})}
    with own_rig(opensips_bin, folder, settings=settings(trunks), env=env, entry=PROBE) as rig:
        state = Reloading(rig, work, folder / "gateway.ini", policy, trunks, callers, workers(rig, "SIP receiver udp"))
        assert len(state.udp_workers) >= 3, state.udp_workers
        runs = [sipp.run(trunk_xml(name), work, f"trunk-{name}", phone, rig.sip, calls=500, timeout=300)
                for name, phone in trunks.items()]  # fmt: skip
        try:
            time.sleep(0.5)  # SIPp binds its port before it can be called
            with python_quiet(rig):
                yield state
            settle_all(rig, seconds=10)
        finally:
            for run in runs:
                run.stop()


@pytest.fixture
def reloading(opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory, work: Path) -> Iterator[Reloading]:
    with reload_rig(opensips_bin, tmp_path_factory.mktemp("reload"), work) as state:
        yield state


@pytest.fixture
def browser(chromium: Any, site: web.Server) -> Iterator[Any]:
    """A browser context (closed at the end) for one JsSIP phone."""
    context = chromium.new_context(ignore_https_errors=True, permissions=["microphone"])
    try:
        yield context
    finally:
        context.close()


@dataclass
class Connected:
    """A browser registered over WSS, and its WebSocket as OpenSIPS lists it."""

    phone: WebPhone
    connection: Dict[str, Any]


def websocket_of(rig: Rig, phone: WebPhone) -> Dict[str, Any]:
    """The browser's connection in MI list_tcp_conns (its ID, type, remote and local address): the one from
    the source its contact was received from."""
    (contact,) = mi.contacts(rig.gw.mi_url)[phone.user]
    match = re.match(r"sip:127\.0\.0\.1:(\d+);transport=wss", contact["Received"])
    assert match, contact
    connections = (mi.call(rig.gw.mi_url, "list_tcp_conns") or {}).get("Connections", [])
    (found,) = [c for c in connections if c.get("Remote") == f"127.0.0.1:{match.group(1)}"]
    assert found["Type"] == "wss", found
    return {key: found[key] for key in ("ID", "Type", "Remote", "Local")}


def connect(rig: Rig, site: web.Server, context: Any) -> Connected:
    page = context.new_page()
    page.goto(site.url, timeout=15000)
    phone = WebPhone(page, user("webreload")).start(rig, True)
    return Connected(phone, websocket_of(rig, phone))


def still_connected_and_callable(state: Reloading, browser: Connected, offset: int) -> None:
    """The browser's WebSocket is the one it had (same ID, same source port), JsSIP neither lost it nor
    registered again, and a SIPp phone's call reaches it over it: answered, audio both ways (the browser's
    counters and rtpengine's), hung up by the browser.
    Its answer came over the WebSocket to a TCP worker, which had loaded the new rules too (since ``offset``)."""
    rig = state.rig
    assert websocket_of(rig, browser.phone) == browser.connection
    events = browser.phone.events()
    assert "disconnected" not in events and events.count("registered") == 1, events
    caller = sipp.Phone(user("webcaller"), host="127.0.0.35", contact_host="127.0.0.35")
    call_id = new_call_id("to-browser")
    uac = sipp.run(sipp.uac_scenario(sipp.Call((("expect_bye",),))), state.work, "to-browser", caller, rig.sip,
                   service=browser.phone.user, call_id=call_id)  # fmt: skip
    try:
        browser.phone.wait_event("incoming")
        assert browser.phone.call_id() == call_id
        browser.phone.answer()
        browser.phone.wait_event("session confirmed")
        browser.phone.media_grows()
        browser.phone.hangup()
        browser.phone.wait_event("session ended")
        assert uac.wait() == 0, uac.errors()
    finally:
        uac.stop()
    packets = media_both_ways(rig.relay.commands(call_id), call_id)
    assert len(packets) == 2, packets
    settle(rig, call_id)
    assert websocket_of(rig, browser.phone) == browser.connection
    reloaded = set(logged(rig, offset, "gateway: rules loaded again"))
    assert reloaded & workers(rig, "TCP receiver"), f"no TCP worker among those that reloaded: {sorted(reloaded)}"


def assert_reloaded(state: Reloading, offset: int, after: List[Dialled], changed: Path) -> None:
    """Every worker that routed a call after the change loaded the rules again first, and said so once."""
    loaded = logged(state.rig, offset, "gateway: rules loaded again")
    assert loaded, f"OpenSIPS never logged 'rules loaded again' ({state.rig.gw.log_path})"
    assert all(len(lines) == 1 for lines in loaded.values()), loaded
    assert all(str(changed) in lines[0] for lines in loaded.values()), loaded
    assert {d.pid for d in after} <= set(loaded), (Counter(d.pid for d in after), sorted(loaded))
    assert not logged(state.rig, offset, "new rules refused")


def test_a_changed_policy_routes_every_next_call_and_the_browser_stays(
    reloading: Reloading, site: web.Server, browser: Any
) -> None:
    state = reloading
    web_phone = connect(state.rig, site, browser)
    before = state.dial(PREMIUM)
    assert {d.final for d in before} == {"403 Refused by rules 1"}, before
    offset = state.rig.log_size()
    replace(state.policy, TO_TRUNK_B)
    time.sleep(WAIT)
    after = state.dial_until_every_worker(PREMIUM)
    assert {d.final for d in after} == {"486 Busy at trunk B"}, Counter(d.final for d in after)
    assert_reloaded(state, offset, after, state.policy)
    still_connected_and_callable(state, web_phone, offset)


def test_a_changed_dial_plan_routes_every_next_call_and_the_browser_stays(
    reloading: Reloading, site: web.Server, browser: Any
) -> None:
    state = reloading
    web_phone = connect(state.rig, site, browser)
    before = state.dial(INTERNATIONAL)
    assert {d.final for d in before} == {"486 Busy at trunk A"}, before
    offset = state.rig.log_size()
    replace(state.ini, state.settings(international="b"))
    time.sleep(WAIT)
    after = state.dial_until_every_worker(INTERNATIONAL)
    assert {d.final for d in after} == {"486 Busy at trunk B"}, Counter(d.final for d in after)
    assert_reloaded(state, offset, after, state.ini)
    still_connected_and_callable(state, web_phone, offset)


BROKEN_POLICY = REFUSED.replace(
    "def route(request: Request, default: Decision) -> Decision:", "def route(request, default)"
)
BROKEN_INI_REASON = "names trunk 'nowhere', not in [trunks]"


def assert_refused_once_per_worker(state: Reloading, offset: int, after: List[Dialled], reason: str) -> None:
    """The broken file was refused with ``reason`` by every worker that routed a call since, each saying so
    once (however many times it looked again), and nothing was loaded."""
    refused = logged(state.rig, offset, "gateway: new rules refused")
    assert refused, f"OpenSIPS never logged the refusal ({state.rig.gw.log_path})"
    print(f"FIGURE opensips-{state.rig.gw.version}: refusal ({reason}) logged by {len(refused)} processes, "
          f"{sum(len(v) for v in refused.values())} lines")  # fmt: skip
    assert all(len(lines) == 1 for lines in refused.values()), refused
    assert all(reason in lines[0] and "the previous ones keep routing" in lines[0] for lines in refused.values())
    assert {d.pid for d in after} <= set(refused), (Counter(d.pid for d in after), sorted(refused))
    assert len(refused) <= len(state.rig.gw.workers)
    assert not logged(state.rig, offset, "rules loaded again")


def test_broken_files_are_refused_once_per_worker_and_the_rules_before_keep_routing(reloading: Reloading) -> None:
    state = reloading
    assert {d.final for d in state.dial(PREMIUM)} == {"403 Refused by rules 1"}
    # a policy that does not compile
    offset = state.rig.log_size()
    replace(state.policy, BROKEN_POLICY)
    time.sleep(WAIT)
    after = state.dial_until_every_worker(PREMIUM)
    time.sleep(WAIT)
    after += state.dial(PREMIUM)  # each worker has looked again since: still refused, not logged again
    assert {d.final for d in after} == {"403 Refused by rules 1"}, Counter(d.final for d in after)
    assert_refused_once_per_worker(state, offset, after, "SyntaxError")
    # mended: taken
    offset = state.rig.log_size()
    replace(state.policy, TO_TRUNK_B)
    time.sleep(WAIT)
    after = state.dial_until_every_worker(PREMIUM)
    assert {d.final for d in after} == {"486 Busy at trunk B"}, Counter(d.final for d in after)
    assert_reloaded(state, offset, after, state.policy)
    # a gateway.ini whose dial plan names no trunk of its own: the rules before (the mended policy) route
    offset = state.rig.log_size()
    replace(state.ini, state.settings(international="nowhere"))
    time.sleep(WAIT)
    after = state.dial_until_every_worker(INTERNATIONAL)
    assert {d.final for d in after} == {"486 Busy at trunk A"}, Counter(d.final for d in after)
    premium = state.dial(PREMIUM)
    assert {d.final for d in premium} == {"486 Busy at trunk B"}, Counter(d.final for d in premium)
    assert_refused_once_per_worker(state, offset, after + premium, BROKEN_INI_REASON)


def test_a_policy_saved_twice_within_one_second_routes_as_last_saved(
    opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory, work: Path
) -> None:
    """As a site runs it, OpenSIPS's interpreter writing bytecode (PYTHONDONTWRITEBYTECODE unset; this
    suite's environment sets it).  The operator saves rules 2, a call comes (a worker loads them), and
    within the same second saves rules 3, as long: every worker then routes by rules 3.  The loader once
    imported the policy through importlib, which took the .pyc of rules 2 for the file of rules 3 (same
    whole-second mtime, same size): 'rules loaded again' was logged and every call got rules 2's reply,
    on 3.6.8 and 4.0.1, until the file changed again."""
    folder = tmp_path_factory.mktemp("reload-same-second")
    with reload_rig(opensips_bin, folder, work, env={"PYTHONDONTWRITEBYTECODE": ""}) as state:
        assert {d.final for d in state.dial(PREMIUM)} == {"403 Refused by rules 1"}
        rules = {n: REFUSED.replace("Refused by rules 1", f"Refused by rules {n}") for n in (2, 3)}
        assert len(rules[2]) == len(rules[3]) == len(REFUSED)
        for _attempt in range(3):
            time.sleep(WAIT)  # every worker looks at the files on its next message
            deadline = time.monotonic() + 1.5
            while time.time() % 1 > 0.1 and time.monotonic() < deadline:
                time.sleep(0.01)  # the start of a second
            replace(state.policy, rules[2])
            saved = state.policy.stat()
            with SipSocket(state.rig.sip) as sip:  # one quick call: a worker loads rules 2
                reply = sip.final(sip.request("INVITE", f"sip:{PREMIUM}@127.0.0.1", body=SDP), 5)
            replace(state.policy, rules[3])
            again = state.policy.stat()
            loaded_first = reply is not None and reply.reason == "Refused by rules 2"
            if loaded_first and int(saved.st_mtime) == int(again.st_mtime) and saved.st_size == again.st_size:
                break
        else:
            pytest.skip("could not save twice within one second with the first save loaded in between")
        offset = state.rig.log_size()
        time.sleep(WAIT)
        after = state.dial_until_every_worker(PREMIUM)
        assert {d.final for d in after} == {"403 Refused by rules 3"}, Counter(d.final for d in after)
        assert_reloaded(state, offset, after, state.policy)
