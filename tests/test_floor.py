"""bench.run --floor: the router with a call's answer kept by the head of its facts routes bench.run's calls
as the router does, and says so when a call with the same head gets another answer."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import List, Tuple

import pytest

from bench.run import FLOOR_ENTRY
from fakes.runtime import Gateway
from fakes.ua import UA, Network
from gateway.settings import Settings

TRUSTED = "198.51.100.10"
SETTINGS = Settings(auth_realm="gateway.test", trusted_sources=frozenset({TRUSTED}))


def floor_module() -> ModuleType:
    Gateway()  # installs the OpenSIPS module the entry imports
    spec = importlib.util.spec_from_file_location("opensips_floor_under_test", FLOOR_ENTRY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
    return module


def address(body: bytes) -> str:
    return body.split(b"\nc=", 1)[-1].split(b"\r", 1)[0].decode()


def calls(net: Network, floor: bool, logged: List[str]) -> List[Tuple[str, List[str]]]:
    """Trusted SIP phones call a registered phone, twice each kind: where each INVITE went, and how it ended."""
    if floor:
        net.gateway.router = floor_module().Floor(net.gateway.router, logged.append)
    carol = net.phone("carol", host=TRUSTED)
    dave = net.phone("dave", nat=True, host=TRUSTED)
    erin = net.phone("erin")
    net.registered(carol, dave, erin)
    seen = []
    for caller in (carol, dave, carol, dave):
        call = net.invite(caller, "erin")
        net.reply(call, erin, 200)
        assert call.established
        # the R-URI and the SDP's address (rtpengine's when the call took it)
        sent = [f"{msg.first_line} {address(msg.body)}" for _to, msg in call.invites_sent()]
        net.bye(call, "caller")
        seen.append((caller.name, sent))
    return seen


def test_the_floor_routes_the_benchs_calls_as_the_router_does() -> None:
    logged: List[str] = []
    with_router = calls(Network(Gateway(SETTINGS)), False, logged)
    net = Network(Gateway(SETTINGS))
    with_floor = calls(net, True, logged)
    assert with_floor == with_router
    assert net.gateway.router._given == 2 and logged == []  # the second call of each kind took the kept answer


def test_the_floor_says_when_a_kept_answer_was_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our user at an untrusted address sends the head a trusted phone sent: the floor's check decides afresh
    (each time here), logs the difference and the caller is challenged, as by the router."""
    module = floor_module()
    monkeypatch.setattr(module, "CHECK_EVERY", 1)
    logged: List[str] = []
    net = Network(Gateway(SETTINGS))
    floor = module.Floor(net.gateway.router, logged.append)
    net.gateway.router = floor
    carol, erin = net.phone("carol", host=TRUSTED), net.phone("erin")
    alice: UA = net.phone("alice", host="198.51.100.77")
    net.registered(carol, erin, alice)
    call = net.invite(carol, "erin")
    net.reply(call, erin, 200)
    net.bye(call, "caller")
    net.invite(alice, "erin")
    assert [m.status for m in alice.inbox if not m.is_request and m.cseq_method == "INVITE"] == [407]
    assert len(logged) == 1 and "floor: another answer for the same head" in logged[0]
