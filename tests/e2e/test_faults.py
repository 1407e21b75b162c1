"""Faults on the real OpenSIPS: rtpengine stopped, slow, restarted mid-call; the Python side failing.

This module's rig has two rtpengines in rtpengine_sock, each behind a relay that can hold its answers
(a slow rtpengine) or close its port (a stopped one, as OpenSIPS sees it: ICMP port unreachable), and
the router behind rig/probe/fault_entry.py, which fails on a marker header.  The cfg's promises:
rtpengine_tout 1 s x rtpengine_retr 2 per node, a failed node disabled for rtpengine_disable_tout 10 s
and re-tested by rtpengine's timer (every 5 s); a call with no media proxy left gets 503; a Python
failure gets the fail-safe (500 for initial requests, in-dialog ones still routed), counted and logged
with the Call-ID.  Each measured time is printed as a FIGURE line (pytest -s shows them).

The engines run with the short timeouts the README tells a deployment to give them (ENGINE_TIMEOUT), so
the session a timed-out offer leaves behind ends.  Each test holds on its own, in any order: before it,
both engines run and OpenSIPS uses both again (bounded); after it, the rig must hold nothing (bounded):
no transaction in use (tm keeps a finished one about 5 s), no live dialog, no session on either engine.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from rig import ng, sipp
from rig.gateway import DEFAULT_SETTINGS, REPO

from .conftest import Rig, need, own_rig, python_quiet
from .rawsip import SDP, Reply, SipSocket
from .sipcalls import SHORT_CALL_STEPS, Outcome, call, new_call_id, registered

FAULT_ENTRY = REPO / "rig" / "probe" / "fault_entry.py"
MARKER = "X-Gateway-Fault"
SHORT_CALL = SHORT_CALL_STEPS
#: rtpengine's --offer-timeout and --timeout on this rig (seconds).  rtpengine 10.5 ends a call that got
#: an offer and no answer after the larger of the two (measured: --offer-timeout alone leaves it for the
#: default --timeout, 60 s); no call here is silent that long.
ENGINE_TIMEOUT = 8


@pytest.fixture(scope="session")
def faulty(opensips_bin: Optional[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    need("sipp")
    # A delete row with flags: the BYEs of the phones' calls go to the router (no Do.QUIET_BYE), so a
    # fault in its in-dialog route meets them (test_python_failure_in_dialog_still_routes_the_bye).
    settings = DEFAULT_SETTINGS + "[profiles]\nsip->sip delete = delete-delay=0\n"
    timeouts = (f"--offer-timeout={ENGINE_TIMEOUT}", f"--timeout={ENGINE_TIMEOUT}")
    with own_rig(
        opensips_bin, tmp_path_factory.mktemp("faults"), entry=FAULT_ENTRY, engines=2, settings=settings,
        rtpengine_options=timeouts,
    ) as rig:  # fmt: skip
        yield rig


@pytest.fixture(autouse=True)
def fault_free_around(faulty: Rig) -> Iterator[None]:
    """Before each test: both engines up, fast, and in use by OpenSIPS.  After it (whatever its outcome):
    the same again, and nothing held (bounded)."""
    restore_engines(faulty)
    yield
    restore_engines(faulty)
    nothing_held(faulty, seconds=12)


def restore_engines(rig: Rig) -> None:
    for index, engine in enumerate(rig.gw.engines):
        engine.relay.delay = 0.0
        rig.gw.start_engine(index)  # a no-op for a running one
    all_enabled_within(rig, 20)


def running_engines(rig: Rig) -> List[int]:
    return [index for index, engine in enumerate(rig.gw.engines) if engine.process.poll() is None]


def nothing_held(rig: Rig, seconds: float) -> None:
    """Wait (bounded) until OpenSIPS has no transaction in use and no live dialog and no engine a session."""

    def held() -> Dict[str, object]:
        found: Dict[str, object] = {
            "inuse_transactions": rig.statistics("inuse_transactions")["inuse_transactions"],
            "live dialogs": [d.get("callid") for d in rig.live_dialogs()],
        }
        for index in running_engines(rig):
            found[f"engine {index} sessions"] = engine_calls(rig, index)
        return {what: value for what, value in found.items() if value}

    deadline = time.monotonic() + seconds
    while held() and time.monotonic() < deadline:
        time.sleep(0.25)
    left = held()
    assert not left, f"{seconds:.0f}s after the test OpenSIPS {rig.gw.version} still holds {left}"


def figure(rig: Rig, text: str) -> None:
    print(f"FIGURE opensips-{rig.gw.version}: {text}")


def engine_calls(rig: Rig, index: int) -> List[str]:
    return ng.call_ids(rig.gw.engines[index].relay.engine)


def all_enabled_within(rig: Rig, seconds: float) -> float:
    """Seconds until OpenSIPS has every rtpengine enabled again (bounded)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if all(int(node["disabled"]) == 0 for node in rig.engine_nodes()):
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"rtpengines still disabled after {seconds}s: {rig.engine_nodes()}")


def invite(rig: Rig, callee: sipp.Phone, headers: tuple[str, ...] = (), timeout: float = 10.0) -> tuple[Reply, str]:
    with SipSocket(rig.sip) as sip:
        data = sip.request("INVITE", f"sip:{callee.user}@127.0.0.1", headers=headers, body=SDP)
        call_id = re.search(rb"Call-ID: (\S+)", data).group(1).decode()  # type: ignore[union-attr]
        reply = sip.final(data, timeout)
    assert reply is not None, f"no final reply to the INVITE within {timeout}s"
    return reply, call_id


def no_dialog_left(rig: Rig, call_id: str, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while rig.live_dialogs(call_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not rig.live_dialogs(call_id), rig.live_dialogs(call_id)


def working_call(rig: Rig, work: Path, name: str, engine: Optional[int] = None) -> Outcome:
    caller, callee = registered(rig, work, "fcaller"), registered(rig, work, "fcallee")
    return call(rig, work, caller, callee, *SHORT_CALL, name=name, call_id=call_id_for(rig, engine))


def call_id_for(rig: Rig, engine: Optional[int]) -> str:
    """A Call-ID that OpenSIPS's rtpengine module sends to rtpengine ``engine`` first (of two, equal
    weights: the sum of its bytes mod 256, even for the first node of its list); any for None."""
    call_id = f"fault-{time.time_ns()}@127.0.0.1"
    if engine is None:
        return call_id
    # The position in OpenSIPS's own list (MI), which is the order it walks.
    url = f"udp:127.0.0.1:{rig.gw.engines[engine].relay.address[1]}"
    position = [node["url"] for node in rig.engine_nodes()].index(url)
    return call_id if (sum(call_id.encode()) & 0xFF) % 2 == position else "y" + call_id  # "y": odd, flips it


def test_rtpengine_stopped_survivor_carries_calls_none_gives_503_restarted_used_again(faulty: Rig, work: Path) -> None:
    callee = registered(faulty, work, "nomedia")
    # One of two stopped: every call goes through the survivor.
    faulty.gw.stop_engine(0)
    for n in range(2):
        started = time.monotonic()
        working_call(faulty, work, f"survivor{n}", engine=0)  # each one meant for the stopped engine
        figure(faulty, f"engine 1 of 2 stopped: call {n + 1} answered and ended in {time.monotonic() - started:.2f}s")
    urls = {f"udp:127.0.0.1:{engine.relay.address[1]}": n for n, engine in enumerate(faulty.gw.engines)}
    disabled = {urls[node["url"]]: int(node["disabled"]) for node in faulty.engine_nodes()}
    figure(faulty, f"rtpengines disabled afterwards (by rtpengine_sock order): {disabled}")
    assert disabled == {0: 1, 1: 0}
    # Both stopped: the caller gets 503 at once (a closed port answers with ICMP).
    faulty.gw.stop_engine(1)
    for n in range(2):
        reply, call_id = invite(faulty, callee)
        figure(faulty, f"all engines stopped: INVITE {n + 1} -> {reply.status} {reply.reason} in {reply.seconds:.3f}s")
        assert (reply.status, reply.reason) == (503, "Service Unavailable") and reply.seconds < 3.0
        no_dialog_left(faulty, call_id)
    assert all(int(node["disabled"]) == 1 for node in faulty.engine_nodes()), faulty.engine_nodes()
    # Both back: OpenSIPS's timer re-tests a disabled node (disable_tout 10 s, timer every 5 s).
    faulty.gw.start_engine(0)
    faulty.gw.start_engine(1)
    back = all_enabled_within(faulty, 20)
    figure(faulty, f"engines restarted: OpenSIPS used them again {back:.1f}s later")
    for index in range(2):  # each engine carries a call again
        outcome = working_call(faulty, work, f"back{index}", engine=index)
        assert faulty.gw.engines[index].relay.commands(outcome.call_id), f"engine {index} did not get {outcome.call_id}"


def test_python_failure_on_an_initial_request_gets_500_counted_and_logged(
    faulty: Rig, work: Path, python_failures_expected: None
) -> None:
    callee = registered(faulty, work, "pyfail")
    requests = (("OPTIONS", "sip:127.0.0.1", ""), ("INVITE", f"sip:{callee.user}@127.0.0.1", SDP))
    for fault in ("raise", "inside"):  # not parametrized: one test asks for the rig's failures
        before = faulty.statistics("python_failures")["python_failures"]
        offset = faulty.log_size()
        call_ids = []
        with SipSocket(faulty.sip) as sip:
            for method, ruri, body in requests:
                data = sip.request(method, ruri, headers=(f"{MARKER}: {fault}",), body=body)
                reply = sip.final(data, 5)
                assert reply is not None and (reply.status, reply.reason) == (500, "Server Error - Routing Failed")
                call_ids.append(re.search(rb"Call-ID: (\S+)", data).group(1).decode())  # type: ignore[union-attr]
                no_dialog_left(faulty, call_ids[-1])
        assert faulty.statistics("python_failures")["python_failures"] == before + 2
        log = faulty.log_since(offset)  # this fault's lines only
        for method, call_id in zip(("OPTIONS", "INVITE"), call_ids):
            assert f"gateway: python routing failed for {method} from 127.0.0.1, Call-ID {call_id}" in log
            if fault == "inside":  # the router's guard caught it and said where, down to the line that raised
                failed = rf"gateway: request route failed for Call-ID {re.escape(call_id)}: InjectedFault: "
                assert re.search(failed + r".*\(at \S+/fault_entry\.py:\d+ in \w+\)\n", log), log
        if fault == "raise":
            assert "InjectedFault: injected: on_request raised" in log
        figure(faulty, f"python fault '{fault}': OPTIONS and INVITE -> 500, python_failures +2, logged with Call-ID")
    # The guard every other test runs under (conftest.no_python_failure) sees such a failure.
    with pytest.raises(AssertionError, match=r"python_failures (\d+) -> (?!\1)\d+\n(?s:.*)python routing failed"):
        with python_quiet(faulty), SipSocket(faulty.sip) as sip:
            reply = sip.final(sip.request("OPTIONS", "sip:127.0.0.1", headers=(f"{MARKER}: raise",)), 5)
            assert reply is not None and reply.status == 500, reply


def test_rtpengine_restarted_mid_call_the_call_goes_on_and_ends_clean(faulty: Rig, work: Path) -> None:
    caller, callee = registered(faulty, work, "midcaller"), registered(faulty, work, "midcallee")
    before = faulty.statistics("calls_sip_to_sip", "media_proxy_calls")
    call_id = new_call_id("mid")
    script = (("pause", 2500), ("reinvite", "sendonly"), ("pause", 300), ("reinvite", "sendrecv"), ("pause", 300),
              ("bye",))  # fmt: skip
    callee_script = (("expect_reinvite",), ("expect_reinvite",), ("expect_bye",))
    result: List[Outcome] = []
    failure: List[BaseException] = []

    def run() -> None:
        try:
            result.append(
                call(faulty, work, caller, callee, sipp.Call(script), sipp.Call(callee_script), "mid", call_id)
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        answered_within(faulty, call_id, 10)  # the call is up (its answer went through rtpengine)
        started = time.monotonic()
        for index in range(2):
            faulty.gw.stop_engine(index)
            faulty.gw.start_engine(index)
        figure(faulty, f"both engines restarted mid-call in {time.monotonic() - started:.2f}s")
    finally:
        thread.join(timeout=40)
    assert not thread.is_alive(), "the call did not end within 40 s"
    assert not failure, failure
    (outcome,) = result
    commands = [e for engine in faulty.gw.engines for e in engine.relay.commands(outcome.call_id)]
    ops = [str(e.sent.get("command")) for e in sorted(commands, key=lambda e: e.at)]
    results = [(e.answer or {}).get("result") for e in sorted(commands, key=lambda e: e.at)]
    figure(faulty, f"restarted mid-call: rtpengine commands {ops}, answers {results}")
    assert ops == ["offer", "answer", "offer", "answer", "offer", "answer", "delete"]
    assert results == ["ok"] * len(ops), results  # the restarted engines took the re-offers as new calls
    no_dialog_left(faulty, outcome.call_id)
    assert all(outcome.call_id not in engine_calls(faulty, index) for index in range(2))
    after = faulty.statistics("calls_sip_to_sip", "media_proxy_calls")
    assert after == {name: value + 1 for name, value in before.items()}, (before, after)


def answered_within(rig: Rig, call_id: str, seconds: float) -> ng.Exchange:
    """The answered ``answer`` command of ``call_id`` on whichever engine got it (bounded wait)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for engine in rig.gw.engines:
            for exchange in engine.relay.commands(call_id):
                if exchange.sent.get("command") == "answer" and exchange.answer is not None:
                    return exchange
        time.sleep(0.05)
    raise AssertionError(f"no answered rtpengine answer for {call_id} within {seconds}s")


def test_python_failure_in_dialog_still_routes_the_bye(faulty: Rig, work: Path, python_failures_expected: None) -> None:
    caller, callee = registered(faulty, work, "pybye"), registered(faulty, work, "pybyee")
    before = faulty.statistics("python_failures")["python_failures"]
    outcome = call(
        faulty, work, caller, callee,
        sipp.Call((("pause", 300), ("bye", f"{MARKER}: raise"))), sipp.Call((("expect_bye",),)), "pybye",
    )  # fmt: skip
    assert outcome.caller_code == 0 and outcome.callee_code == 0  # the callee got the BYE, the caller its 200
    assert faulty.statistics("python_failures")["python_failures"] == before + 1
    assert f"python routing failed for BYE from 127.0.0.1, Call-ID {outcome.call_id}" in faulty.gw.log()
    no_dialog_left(faulty, outcome.call_id)
    held = [index for index in range(2) if outcome.call_id in engine_calls(faulty, index)]
    figure(faulty, f"python fault on BYE: routed by the fail-safe; rtpengine sessions left: {held}")
    assert held == [], f"the fail-safe's BYE left {outcome.call_id} on engine(s) {held}"


def test_rtpengine_slow_gives_503_within_the_timeouts_and_its_leaked_sessions_end(faulty: Rig, work: Path) -> None:
    callee = registered(faulty, work, "slowmedia")
    for engine in faulty.gw.engines:
        engine.relay.delay = 4.5  # beyond rtpengine_tout (1 s) x rtpengine_retr (2)
    try:
        reply, call_id = invite(faulty, callee)
        figure(faulty, f"all engines slow (4.5s): INVITE -> {reply.status} {reply.reason} in {reply.seconds:.3f}s")
        # 1 s x 2 tries on each of the two engines
        assert (reply.status, reply.reason) == (503, "Service Unavailable") and 3.5 < reply.seconds < 6.0
        no_dialog_left(faulty, call_id)
        # Each engine got the offer and made the session before its answer came too late: nobody
        # deletes it (OpenSIPS gave up on that offer); only rtpengine's own timeout ends it.
        offered = [i for i, engine in enumerate(faulty.gw.engines) if engine.relay.commands(call_id)]
        held = [index for index in range(2) if call_id in engine_calls(faulty, index)]
        figure(faulty, f"slow engines: the timed-out offer left a session on engine(s) {held}")
        assert offered == [0, 1] and held == offered, f"offered to engines {offered}, sessions on {held}"
    finally:
        for engine in faulty.gw.engines:
            engine.relay.delay = 0.0
    started = time.monotonic()
    leaked = held
    while leaked and time.monotonic() - started < ENGINE_TIMEOUT + 5:
        time.sleep(0.25)
        leaked = [index for index in range(2) if call_id in engine_calls(faulty, index)]
    figure(faulty, f"slow engines: the leaked sessions ended {time.monotonic() - started:.1f}s after the 503")
    assert not leaked, (
        f"{call_id}: the session the timed-out offer made is still on engine(s) {leaked} "
        f"{ENGINE_TIMEOUT + 5}s after the 503 (rtpengine --offer-timeout/--timeout {ENGINE_TIMEOUT})"
    )
    back = all_enabled_within(faulty, 20)
    figure(faulty, f"engines fast again: OpenSIPS used them again {back:.1f}s later")
    working_call(faulty, work, "afterslow")
