"""Random call flows (hypothesis state machine): registrations from both kinds, calls in every direction,
1xx/2xx/3xx-6xx, CANCEL, re-INVITE from either side (hold, resume, late re-offer), late offer, forking,
BYE from either side; OpenSIPS restarting (gracefully, or killed right after its timer wrote the
database) with calls between phones going on and browsers coming back over new WebSockets; a browser
reloading its page (a new binding beside its dead one, which OpenSIPS must never dial).

After every step: every route returned a non-zero int with no exception pending (the fake host fails
the test otherwise), nothing was logged as an error, nothing was undeliverable, and every SDP a UA
received has the shape its kind needs (so the flags followed the legs' kinds).  At the end every call
is hung up or cancelled and rtpengine holds no session, OpenSIPS no dialog and no transaction.
"""

from __future__ import annotations

import os
from typing import Dict, List, Set

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fakes.runtime import Gateway
from fakes.ua import UA, Call, Network
from gateway.settings import Settings
from tests.flowcheck import assert_clean, received_sdp_problems

EXAMPLES = int(os.environ.get("GATEWAY_STATEFUL_EXAMPLES", "300"))

# Which directions and steps the runs went through, across all examples (see test_coverage_of_the_runs).
SEEN: Set[str] = set()


class CallFlows(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.gateway = Gateway(Settings(topology_hiding=False))
        self.net = Network(self.gateway)
        net = self.net
        self.uas: Dict[str, UA] = {
            "web1": net.browser("web1"),
            "web2": net.browser("web2", secure=False),
            "nat": net.phone("nat", nat=True),
            "plain": net.phone("plain"),
            "tcp": net.phone("tcp", proto="tcp"),
        }
        # One user on a browser and a phone at once: calls to "both" fork.
        self.both = [net.browser("both"), net.phone("both", nat=True)]
        for ua in list(self.uas.values()) + self.both:
            net.register(ua)
        self.ringing: List[Call] = []
        self.established: List[Call] = []
        self.checked = 0

    def kind(self, ua: UA) -> str:
        return "web" if ua.is_browser else "sip"

    @rule(
        caller=st.sampled_from(["web1", "web2", "nat", "plain", "tcp"]),
        callee=st.sampled_from(["web1", "web2", "nat", "plain", "tcp", "both", "nobody"]),
        sdp=st.booleans(),
    )
    def place_call(self, caller: str, callee: str, sdp: bool) -> None:
        if caller == callee:
            return
        call = self.net.invite(self.uas[caller], callee, sdp=sdp)
        targets = self.net.callees(call)
        if targets:
            self.ringing.append(call)
            for target in targets:
                SEEN.add(f"{self.kind(call.caller)}->{self.kind(target)} {'offer' if sdp else 'late-offer'}")
            if len(targets) > 1:
                SEEN.add("forking")
        else:
            assert callee == "nobody"
            assert [m.status for m in call.caller.inbox if m.call_id == call.call_id and not m.is_request] == [404]

    @precondition(lambda self: self.ringing)
    @rule(data=st.data(), code=st.sampled_from([180, 183]), sdp=st.booleans())
    def provisional(self, data: st.DataObject, code: int, sdp: bool) -> None:
        call = data.draw(st.sampled_from(self.ringing))
        callee = data.draw(st.sampled_from(self.net.callees(call)))
        self.net.reply(call, callee, code, sdp=sdp)

    @precondition(lambda self: self.ringing)
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        call = data.draw(st.sampled_from(self.ringing))
        callee = data.draw(st.sampled_from(self.net.callees(call)))
        self.net.reply(call, callee, 200)
        self.ringing.remove(call)
        assert call.established
        self.established.append(call)
        SEEN.add(f"answer {self.kind(callee)}->{self.kind(call.caller)}")

    @precondition(lambda self: self.ringing)
    @rule(data=st.data(), code=st.sampled_from([302, 404, 486, 480, 500, 503, 603]))
    def reject(self, data: st.DataObject, code: int) -> None:
        call = data.draw(st.sampled_from(self.ringing))
        callee = data.draw(st.sampled_from(self.net.callees(call)))
        self.net.reply(call, callee, code)
        if not self.net.callees(call):
            self.ringing.remove(call)
            statuses = [m.status for m in call.caller.inbox if m.call_id == call.call_id and not m.is_request]
            assert statuses[-1] >= 300
        SEEN.add(f"reject {code // 100}xx")

    @precondition(lambda self: self.ringing)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        call = data.draw(st.sampled_from(self.ringing))
        self.net.cancel(call)
        self.ringing.remove(call)
        assert self.net.callees(call) == []
        SEEN.add("cancel")

    @precondition(lambda self: self.established)
    @rule(data=st.data(), side=st.sampled_from(["caller", "callee"]), sdp=st.booleans(), hold=st.booleans())
    def reinvite(self, data: st.DataObject, side: str, sdp: bool, hold: bool) -> None:
        call = data.draw(st.sampled_from(self.established))
        ua, _ = self.net.party(call, side)
        before = len(ua.inbox)
        self.net.reinvite(call, side, sdp=sdp, hold=hold and sdp)
        assert [m.status for m in ua.inbox[before:] if not m.is_request] == [200]
        SEEN.add(f"re-INVITE from {side} {'hold' if hold and sdp else 'offer' if sdp else 'late'}")

    @precondition(lambda self: self.established)
    @rule(data=st.data(), side=st.sampled_from(["caller", "callee"]))
    def hang_up(self, data: st.DataObject, side: str) -> None:
        self.end(data.draw(st.sampled_from(self.established)), side)
        SEEN.add(f"BYE from {side}")

    def end(self, call: Call, side: str) -> None:
        ua, _ = self.net.party(call, side)
        before = len(ua.inbox)
        self.net.bye(call, side)
        self.established.remove(call)
        assert [m.status for m in ua.inbox[before:] if not m.is_request] == [200]

    def browsers(self) -> List[UA]:
        return [ua for ua in [*self.uas.values(), *self.both] if ua.is_browser]

    def in_call(self, ua: UA) -> bool:
        return any(ua is call.caller or ua is self.net.party(call, "callee")[0] for call in self.established)

    @precondition(lambda self: not self.ringing)
    @rule(kill=st.booleans())
    def restart(self, kill: bool) -> None:
        """A call with a browser ends first (its WebSocket goes with OpenSIPS); calls between phones go on
        (the next steps re-INVITE and hang them up); every browser reconnects and registers again, as
        JsSIP does, keeping its Contact."""
        for call in list(self.established):
            if call.caller.is_browser or self.net.party(call, "callee")[0].is_browser:
                self.end(call, "caller")
        if kill:
            self.gateway.flush()  # dialog's and usrloc's timer wrote just before
        self.gateway.restart(kill=kill)
        for ua in self.browsers():
            self.net.reconnect(ua)
            assert self.net.register(ua).status == 200
        SEEN.add(f"restart {'kill' if kill else 'graceful'}")

    @precondition(lambda self: not self.ringing)
    @rule(data=st.data())
    def reload_page(self, data: st.DataObject) -> None:
        """A browser not in a call reloads its page: a new WebSocket and a new Contact; its old binding stays."""
        idle = [ua for ua in self.browsers() if not self.in_call(ua)]
        if not idle:
            return
        ua = data.draw(st.sampled_from(idle))
        self.net.reconnect(ua, reload=True)
        assert self.net.register(ua).status == 200
        SEEN.add("reload")

    @invariant()
    def no_connection_opened_toward_a_browser(self) -> None:
        assert [e for e in self.gateway.dialled if e.proto in ("ws", "wss")] == []

    @invariant()
    def nothing_went_wrong(self) -> None:
        assert self.gateway.errors == []
        assert self.net.undelivered == []
        assert self.gateway.python_failures == 0
        assert received_sdp_problems(self.net) == []

    @invariant()
    def sessions_belong_to_live_calls(self) -> None:
        live = {c.call_id for c in self.ringing + self.established}
        assert {s.call_id for s in self.gateway.sessions()} <= live

    def teardown(self) -> None:
        for call in list(self.ringing):
            self.net.cancel(call)
        for call in list(self.established):
            self.net.bye(call, "caller")
        assert_clean(self.gateway, self.net)


CallFlows.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=35,
    derandomize=True,  # the same flows each run: test_coverage_of_the_runs holds or fails for good, not by luck
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCallFlows = CallFlows.TestCase


def test_coverage_of_the_runs() -> None:
    """Runs after the state machine (file order): the random flows went through every direction and step."""
    if not SEEN:
        import pytest

        pytest.skip("run together with TestCallFlows")
    wanted = {f"{a}->{b} offer" for a in ("web", "sip") for b in ("web", "sip")}
    wanted |= {f"{a}->{b} late-offer" for a in ("web", "sip") for b in ("web", "sip")}
    wanted |= {f"answer {a}->{b}" for a in ("web", "sip") for b in ("web", "sip")}
    wanted |= {"forking", "cancel", "reject 3xx", "reject 4xx", "reject 5xx", "reject 6xx"}
    wanted |= {f"re-INVITE from {s} {k}" for s in ("caller", "callee") for k in ("hold", "offer", "late")}
    wanted |= {"BYE from caller", "BYE from callee", "restart graceful", "restart kill", "reload"}
    assert wanted - SEEN == set()
