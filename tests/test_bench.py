"""The benchmark's native reference takes the decisions the Python router takes (what can be checked offline)."""

from __future__ import annotations

import pathlib
import re
from collections import Counter
from typing import List, Optional, Tuple

from bench.run import SippStats, with_mpath
from gateway import core
from gateway.host import NULL, RECORD_VAR, SEP, Router
from gateway.model import Do, Verdict
from gateway.profiles import DEFAULT_PROFILES, UNTRUSTED_SIP_SOURCE
from gateway.settings import Settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
NATIVE = (ROOT / "bench" / "native.cfg").read_text()
PYTHON = (ROOT / "opensips" / "opensips.cfg").read_text()


def test_native_uses_every_flag_string_of_the_profile_table() -> None:
    strings = set(re.findall(r'\$var\(flags\) = "([^"]+)"', NATIVE))
    assert {flags for flags in DEFAULT_PROFILES.values() if flags} == strings


def test_native_adds_what_the_router_adds_to_the_profile() -> None:
    assert f'" {UNTRUSTED_SIP_SOURCE}"' in NATIVE
    assert '" via-branch-param=br" + $T_branch_idx' in NATIVE
    assert 'rtpengine_delete("via-branch-param=br$var(idx)")' in NATIVE


def test_native_runs_the_same_nat_test_and_flags() -> None:
    assert f'nat_uac_test("{core.NAT_TESTS}")' in NATIVE
    for flag in ("SRC_WS", "SRC_NAT"):
        assert f'setflag("{flag}")' in NATIVE
    for flag in ("WEBRTC", "NATED"):
        assert f'setbflag("{flag}")' in NATIVE


def test_native_loads_the_same_modules_minus_python() -> None:
    modules = set(re.findall(r'^loadmodule "(\w+)\.so"', PYTHON, re.M))
    assert set(re.findall(r'^loadmodule "(\w+)\.so"', NATIVE, re.M)) == modules - {"python"}


def test_mpath_goes_on_the_first_line() -> None:
    text = with_mpath("#\n# cfg\nlog_level = 3\n", "/opt/x/modules/")
    assert text.splitlines()[0] == 'mpath = "/opt/x/modules/" #'
    assert len(text.splitlines()) == 3


def test_sipp_statistics_are_read_from_the_last_line(tmp_path: pathlib.Path) -> None:
    stat = tmp_path / "s.csv"
    stat.write_text(
        "TotalCallCreated;SuccessfulCall(C);FailedCall(C);Retransmissions(C);CallRate(C);\n"
        "5;4;1;0;2.5;\n"
        "10;9;1;3;5.0;\n"
    )
    assert SippStats.read(stat) == SippStats(10, 9, 1, 3, 5.0)
    assert SippStats.read(tmp_path / "missing.csv") == SippStats(0, 0, 0, 0, 0.0)


def test_native_sets_the_same_module_parameters_minus_python() -> None:
    def params(text: str) -> set[str]:
        return {line for line in re.findall(r"^modparam\(.*\)$", text, re.M) if '"python"' not in line}

    assert params(NATIVE) == params(PYTHON)


def calls_through_the_fake(nat_caller: bool, execs: Optional[List[str]] = None) -> Counter[str]:
    from fakes.runtime import Gateway
    from fakes.ua import Network

    gateway = Gateway()
    net = Network(gateway)
    caller, callee = net.phone("carol", nat=nat_caller), net.phone("erin")
    net.register(caller)
    net.register(callee)
    gateway.counts.clear()
    start = len(gateway.events)
    call = net.invite(caller, "erin")
    net.reply(call, callee, 180)
    net.reply(call, callee, 200)
    net.bye(call, "caller")
    assert gateway.sessions() == [] and gateway.dialogs == {}
    if execs is not None:
        execs += [e.text.split('"')[1] for e in gateway.events[start:] if e.kind == "exec" and "python_exec(" in e.text]
    return gateway.counts


def test_a_plain_call_costs_the_router_three_host_calls() -> None:
    """Issue 5: the cfg does the router's actions; a whole plain SIP->SIP call (INVITE, 180, 200, ACK,
    BYE) reads the SDP once (private addresses) and stores the call record twice (request, branch)."""
    assert calls_through_the_fake(nat_caller=False) == {"get_pseudoVar": 1, "set_pseudoVar": 2}


def test_a_call_through_rtpengine_makes_no_call_function() -> None:
    """With a NATed caller: the record at INVITE, branch and 200, and rtpengine's flags for the offer,
    the answer and the delete; still no call_function and no getHeader."""
    assert calls_through_the_fake(nat_caller=True) == {"get_pseudoVar": 1, "set_pseudoVar": 6}


def test_a_plain_call_enters_python_four_times() -> None:
    """INVITE, its branch, ACK, BYE: no reply route for a branch without the media proxy, and no
    second python_exec for the in-dialog requests of a dialog no branch tracked."""
    execs: List[str] = []
    calls_through_the_fake(nat_caller=False, execs=execs)
    assert execs == ["on_request", "on_branch", "on_request", "on_request"]


def test_a_call_through_rtpengine_enters_python_for_every_message() -> None:
    execs: List[str] = []
    calls_through_the_fake(nat_caller=True, execs=execs)
    assert execs == ["on_request", "on_branch", "on_reply", "on_reply"] + ["on_request", "on_in_dialog"] * 2


class StubMsg:
    """Just what on_request touches for an initial INVITE."""

    def __init__(self) -> None:
        self.sets: List[Tuple[str, str]] = []

    def get_pseudoVar(self, fmt: str) -> str:  # noqa: N802 - the host's name
        return "v=0\r\nc=IN IP4 203.0.113.5\r\nm=audio 4000 RTP/AVP 0\r\n"

    def set_pseudoVar(self, name: str, value: str) -> None:  # noqa: N802 - the host's name
        self.sets.append((name, value))


def test_a_bar_in_a_uri_or_a_header_does_not_shift_the_facts() -> None:
    """The facts are one per line: a "|" in a (malformed) R-URI user or in Content-Type stays in its field."""
    router = Router(Settings(), lambda text: None)
    fields = ["INVITE", "udp", "0", "120", NULL, "1", "203.0.113.9", "5060", "bob|evil.example", "127.0.0.1"]
    fields += ["127.0.0.1", "127.0.0.1", 'application/sdp;x="a|b\nc"']
    msg = StubMsg()
    code = router.on_request(msg, SEP.join(fields))
    assert code & Do.VERDICT_MASK == Verdict.RELAY_INITIAL and code & Do.LOOKUP
    assert msg.sets == [(RECORD_VAR, "c=S0;o=e;p=0")]
