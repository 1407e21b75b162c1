"""A dual-homed gateway: rtpengine interfaces by network (gateway.ini [interfaces]), each offer naming both legs'.

Through the fake host running the cfg: a browser on the public side calls a PBX on a private
network (a trunk of the dial plan), the PBX calls the browser, and re-INVITEs from either end:
each offer carries in-iface (the interface facing the SDP's sender) and out-iface (facing its
receiver), which OpenSIPS hands rtpengine as its "direction" list.  Answers carry none: rtpengine
keeps the offer's.  With one interface (or none named) no offer names any.
"""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from fakes.runtime import Gateway
from fakes.ua import Network
from gateway.host import Router
from gateway.model import CallRecord, Exchange, Leg, Party
from gateway.policy import to_trunk
from gateway.settings import parse, uri_host
from tests.flowcheck import assert_clean

PBX = "10.1.0.20"


def settings(interfaces: str = "public =\nprivate = 10.1.0.0/16, fd00::/8\n") -> Any:
    # the PBX is the first UA made on the network: the fake gives a phone of a named host port 6000
    return parse(f"""
[gateway]
domains = 127.0.0.1
[trunks]
pbx = sip:{PBX}:6000
[dialplan]
8 = pbx
[interfaces]
{interfaces}
""")


def offers(commands: List[Dict[str, Any]]) -> List[Any]:
    return [c.get("direction") for c in commands if c["command"] == "offer"]


def commands(gateway: Gateway, call_id: str) -> List[Dict[str, Any]]:
    return [e.data[0] for e in gateway.events if e.kind == "rtpengine" and e.data[0].get("call-id") == call_id]


def test_side_of_an_address_by_network_and_the_default() -> None:
    found = settings()
    assert found.side_of("10.1.0.20") == "private"
    assert found.side_of("fd00::5") == found.side_of("[fd00::5]") == "private"
    assert found.side_of("198.51.100.7") == "public"
    assert found.side_of("pbx.example.net") == "public"  # a name: the interface without networks
    assert found.side_of("") == "public"
    # one interface, or none: rtpengine needs no direction
    assert settings("public =\n").side_of("10.1.0.20") == ""
    assert parse("[gateway]\ndomains = a\n").side_of("10.1.0.20") == ""
    # without an interface of no networks, the first one is the default
    assert settings("lan = 10.1.0.0/16\nwan = 0.0.0.0/0\n").side_of("pbx.example.net") == "lan"


@pytest.mark.parametrize(("text", "reason"), [
    ("pub/lic =\n", "not an rtpengine interface name"),
    ("public =\nprivate = 10.1.0.0/33\n", "private"),
])  # fmt: skip
def test_bad_interfaces_are_refused(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        settings(text)


@pytest.mark.parametrize("flag", ["direction=private", "in-iface=private", "out-iface=public", "internal"])
def test_interfaces_are_the_routers_to_name(flag: str) -> None:
    with pytest.raises(ValueError, match=r"\[interfaces\]"):
        parse(f"[profiles]\nweb->sip offer = RTP/AVP ICE=remove DTLS=off rtcp-mux-demux {flag}\n")
    with pytest.raises(ValueError, match=r"\[interfaces\]"):  # the sample call refuses such a rule
        Router.fixed(settings(), print, route=lambda request, default: to_trunk("pbx").with_rtpengine(flag))


def test_a_browser_calls_the_pbx_and_it_calls_back() -> None:
    gateway = Gateway(settings())
    net = Network(gateway)
    pbx = net.phone("pbx", host=PBX)
    alice = net.browser("alice")
    net.register(alice)

    call = net.invite(alice, "8100")
    ((endpoint, _invite),) = call.invites_sent()
    assert endpoint.host == PBX
    net.reply(call, pbx, 200)
    net.reinvite(call, "callee")  # the PBX re-offers: from the private side to the public one
    net.reinvite(call, "caller", hold=True)
    net.bye(call, "callee")
    sent = commands(gateway, call.call_id)
    assert offers(sent) == [["public", "private"], ["private", "public"], ["public", "private"]]
    assert all("direction" not in c for c in sent if c["command"] != "offer"), sent

    back = net.invite(pbx, "alice", domain="127.0.0.1")  # the PBX calls our browser
    net.reply(back, alice, 200)
    net.bye(back, "caller")
    assert offers(commands(gateway, back.call_id)) == [["private", "public"]]
    assert_clean(gateway, net)


def test_one_interface_names_none() -> None:
    gateway = Gateway(settings("public =\n"))
    net = Network(gateway)
    pbx = net.phone("pbx", host=PBX)
    alice = net.browser("alice")
    net.register(alice)
    call = net.invite(alice, "8100")
    net.reply(call, pbx, 200)
    net.bye(call, "caller")
    assert offers(commands(gateway, call.call_id)) == [None]
    assert_clean(gateway, net)


def test_the_callers_side_is_part_of_what_the_router_keeps() -> None:
    """Two calls that differ only in where the caller is: one router, kept answers and all, names
    each caller's own interface (the side is among a kept outcome's complete inputs)."""
    gateway = Gateway(settings())
    net = Network(gateway)
    pbx = net.phone("pbx", host=PBX)
    inside = net.phone("carol", nat=True, host="10.1.0.30")  # behind NAT: the call takes the media proxy
    outside = net.phone("dave", nat=True, host="198.51.100.30")
    for caller in (outside, inside, outside):
        call = net.invite(caller, "8100")
        net.reply(call, pbx, 200)
        net.bye(call, "caller")
        side = "private" if caller is inside else "public"
        assert offers(commands(gateway, call.call_id)) == [[side, "private"]], caller.name
    assert_clean(gateway, net)


def test_sides_survive_the_dialog_record_and_the_exchange() -> None:
    caller = Party(Leg.WEB, True, "wss:198.51.100.7:5000")
    record = CallRecord(caller, True, False, sides=("public", "private"))
    assert CallRecord.parse(str(record)) == record and ";d=public+private" in str(record)
    exchange = Exchange(caller, Party(Leg.SIP, False), True, sides=("private", "public"))
    assert Exchange.parse(str(exchange)) == exchange
    with pytest.raises(ValueError, match="bad interfaces"):
        CallRecord.parse("c=W1;o=e;p=0;d=public")


@pytest.mark.parametrize(("uri", "host"), [
    ("sip:10.1.0.20:6000", "10.1.0.20"), ("sip:pbx@10.1.0.20;transport=tcp", "10.1.0.20"),
    ("sips:[fd00::5]:5061", "fd00::5"), ("sip:trunk.example.net", "trunk.example.net"), ("", ""),
])  # fmt: skip
def test_uri_host(uri: str, host: str) -> None:
    assert uri_host(uri) == host
