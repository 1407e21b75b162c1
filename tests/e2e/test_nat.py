"""Calls through real NAT: the gateway on a public address, SIP phones at two sites behind NAT and one without.

The network (rig/netns.py) is made for this module and torn down after it: site A behind a NAT
that keeps ports where it can, site B behind a symmetric one (a new random port per
destination), a public phone, and the gateway (OpenSIPS and rtpengine) at 198.51.100.10.
Every phone registers its private Contact; SDP carries its private address.  Each call is
checked for media both ways (rtpengine's counters per leg), for the SIPp scripts on both ends
(hold and resume, hang-up), and for what crossed a NAT: no SDP a party received names a private
address of another site.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from rig import baresip, mi, netns, sipp, web
from rig.gateway import version_of

from .conftest import NO_OPENSIPS, Rig, need, own_rig
from .sipcalls import call, media_both_ways, messages, new_call_id, register_phone, settle, user
from .webphones import WebPhone, baresip_calls, hold_each_side_then_baresip_hangs_up

#: Where the gateway stands: its namespace, its own address, and the public one a 1:1 NAT maps to it.
POSITIONS = {
    "public": ("gw", netns.GATEWAY, None),  # the public address on the host
    "cloud": ("cloud", netns.CLOUD_PRIVATE, netns.CLOUD_PUBLIC),  # behind a 1:1 NAT, as clouds give a host
    "dual": ("dual", netns.DUAL_PUBLIC, None),  # dual-homed: and netns.DUAL_PRIVATE, with the PBX there
}
#: The PBX on the dual-homed gateway's private network: a trunk of its dial plan, for numbers 8...
PBX_PORT = 5060


def settings(public: str, dual: bool = False) -> str:
    text = f"""\
[gateway]
domains = {public} gateway.local
sip_destination =
trusted_sources =
topology_hiding = no
"""
    if dual:  # the PBX calls in to the gateway's private address
        text = (
            text.replace(f"domains = {public}", f"domains = {public} {netns.DUAL_PRIVATE}")
            + f"""
[trunks]
pbx = sip:{netns.PBX}:{PBX_PORT}
[dialplan]
8 = pbx
[interfaces]
public =
private = {netns.DUAL_PRIVATE.rsplit(".", 2)[0]}.0.0/16
"""
        )
    return text


@pytest.fixture(scope="module")
def network() -> Iterator[netns.Network]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"no test network: {reason}")
    net = netns.Network.make(f"gwn{os.getpid() % 100000}")
    try:
        yield net
    finally:
        net.close()


def gateway_options(network: netns.Network, position: str, **more: Any) -> Dict[str, Any]:
    """Gateway.start's options for a gateway at ``position`` (POSITIONS) of the test network."""
    role, address, advertised = POSITIONS[position]
    public = advertised or address
    dual = position == "dual"
    return {"settings": settings(public, dual), "address": address, "advertised": advertised, "host": public,
            "private": netns.DUAL_PRIVATE if dual else None, "namespace": network.ns(role), **more}  # fmt: skip


@pytest.fixture(scope="module")
def gateways(
    opensips_bin: Optional[str], network: netns.Network, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Rig]]:
    """The gateway at a position (POSITIONS), started when a test first asks for it, stopped at the end."""
    if opensips_bin is None:
        pytest.skip(NO_OPENSIPS)
    need("sipp")
    with contextlib.ExitStack() as stack:
        started: Dict[str, Rig] = {}

        def at(position: str) -> Rig:
            if position not in started:
                folder = tmp_path_factory.mktemp(f"nat-{position}-{version_of(str(opensips_bin))}")
                started[position] = stack.enter_context(
                    own_rig(opensips_bin, folder, **gateway_options(network, position))
                )
            return started[position]

        yield at


_hosts: Dict[str, Iterator[int]] = {}


@dataclass
class Party:
    """A registered SIPp phone at its place, and the audio packets delivered to its media port so far."""

    phone: sipp.Phone
    where: str
    heard: Callable[[], int]


def party(rig: Rig, network: netns.Network, work: Path, where: str, prefix: str) -> Party:
    """A SIPp phone at ``where`` (a site: its next LAN address and a private Contact; or "pub"), registered."""
    if where == "pub":
        host = netns.PUBLIC_PHONE
    else:
        hosts = network.hosts[where]
        host = hosts[next(_hosts.setdefault(where, itertools.cycle(range(len(hosts)))))]
    phone = sipp.Phone(user(prefix), host=host, contact_host=host, namespace=network.ns(where))
    register_phone(rig, work, phone)
    received_from(rig, phone.user, where)
    return Party(phone, where, network.counter(where, host, phone.media_port))


def received_from(rig: Rig, name: str, where: str) -> str:
    """Assert the gateway saw ``name``'s registration come from ``where``'s public face: its NAT's
    address for a site (the Contact stays private), its own for the public phone."""
    with rig.gw.inside():
        (contact,) = mi.contacts(rig.gw.mi_url)[name]
    if where not in netns.SITES:  # nothing translated: no received address kept, the Contact is public
        assert not contact.get("Received") and f"@{netns.PUBLIC_PHONE}:" in contact["Contact"], contact
        return str(contact["Contact"])
    received = str(contact.get("Received"))
    assert received.startswith(f"sip:{netns.SITES[where][1]}:"), f"{name} at {where}: {contact}"
    return received


PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")]
ADDRESS = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3})\b")


def private_addresses_received(work: Path, name: str, own: str) -> List[Tuple[str, str]]:
    """(first line, address) for each private address in an SDP that SIPp run ``name`` received, but
    those of the phone's own network (the /24 of ``own``: its site's LAN, the PBX's private network)."""
    found = []
    lan = ipaddress.ip_network(f"{own}/24", strict=False)
    for message in messages(work, name):
        if message.sent or "\n\n" not in message.text:
            continue
        body = message.text.split("\n\n", 1)[1]
        for text in ADDRESS.findall(body):
            address = ipaddress.ip_address(text)
            if address not in lan and any(address in net for net in PRIVATE):
                found.append((message.first_line, text))
    return found


def talk(rig: Rig, work: Path, caller: Party, callee: Party, name: str, hold_by: str = "caller",
         bye_by: str = "caller") -> Dict[str, int]:  # fmt: skip
    """A call with hold and resume by ``hold_by`` and hang-up by ``bye_by``; both phones send audio (a
    phone behind NAT must send first for rtpengine to learn its mapping, as real phones do).  Asserts
    audio both ways: rtpengine got it from each leg, and each phone's media port got it (counted in
    its own namespace, past the NAT); the packets of each."""
    caller_steps: List[sipp.Step] = []
    callee_steps: List[sipp.Step] = [("play",)]
    if hold_by == "caller":
        caller_steps += [("pause", 1200), ("reinvite", "sendonly"), ("pause", 400), ("reinvite", "sendrecv")]
        callee_steps += [("expect_reinvite",), ("expect_reinvite",)]
    else:
        callee_steps += [("pause", 1200), ("reinvite", "sendonly"), ("pause", 400), ("reinvite", "sendrecv")]
        caller_steps += [("expect_reinvite",), ("expect_reinvite",)]
    if bye_by == "caller":
        caller_steps += [("pause", 800), ("bye",)]
        callee_steps += [("expect_bye",)]
    else:
        callee_steps += [("pause", 800), ("bye",)]
        caller_steps += [("expect_bye",)]
    before = {"caller": caller.heard(), "callee": callee.heard()}
    outcome = call(rig, work, caller.phone, callee.phone, sipp.Call(tuple(caller_steps)),
                   sipp.Call(tuple(callee_steps)), name=name)  # fmt: skip
    sent = media_both_ways(outcome.commands, outcome.call_id)
    heard = {"caller": caller.heard() - before["caller"], "callee": callee.heard() - before["callee"]}
    assert all(n > 20 for n in heard.values()) and len(heard) == 2, f"{name}: packets each phone got: {heard}"
    for side, who in (("uac", caller), ("uas", callee)):
        leaked = private_addresses_received(work, f"{name}-{side}", who.phone.host)
        assert not leaked, f"{name}: the {side} ({who.phone.host}) got SDP naming private addresses: {leaked}"
    settle(rig, outcome.call_id)
    return {**{f"rtpengine got from {tag}": n for tag, n in sent.items()}, **{f"{k} got": v for k, v in heard.items()}}


# (caller's place, callee's place): across the two NATs, a public phone and a NATed one, the same LAN.
PAIRS = [
    ("public", "siteA", "siteB"),
    ("public", "siteB", "siteA"),
    ("public", "pub", "siteA"),
    ("public", "siteA", "pub"),
    ("public", "pub", "siteB"),
    ("public", "siteB", "pub"),
    ("public", "siteA", "siteA"),
    ("cloud", "siteA", "siteB"),
    ("cloud", "pub", "siteB"),
]


@pytest.mark.parametrize(("position", "caller_at", "callee_at"), PAIRS, ids=[f"{g}-{a}-to-{b}" for g, a, b in PAIRS])
def test_sip_phones_talk_through_nat(
    gateways: Callable[[str], Rig], network: netns.Network, work: Path, position: str, caller_at: str, callee_at: str
) -> None:
    nat_rig = gateways(position)
    caller = party(nat_rig, network, work, caller_at, "nc")
    callee = party(nat_rig, network, work, callee_at, "nd")
    for hold_by, bye_by in (("caller", "caller"), ("callee", "callee")):
        name = f"{caller_at}-{callee_at}-{hold_by}-{bye_by}"
        packets = talk(nat_rig, work, caller, callee, name, hold_by, bye_by)
        print(f"{name}: {packets}")


# -- browsers: Chromium inside a site's namespace, its page served on that namespace's own loopback --


@dataclass
class Site:
    """A site's Chromium (started inside the site's namespace) and the web server of its pages there."""

    browser: Any
    server: web.Server


@pytest.fixture(scope="module")
def sites(
    playwright: Any, network: netns.Network, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dict[str, Site]]:
    folder = tmp_path_factory.mktemp("nat-web")
    try:
        pages = web.site(folder / "pages")
    except web.MissingTool as exc:
        pytest.skip(str(exc))
    chromium = web.chromium_path()
    made: Dict[str, Site] = {}
    try:
        for where in netns.SITES:
            with netns.entered(network.ns(where)):  # a page on loopback is a secure context (getUserMedia)
                server = web.Server(pages)
            wrapper = folder / f"chromium-{where}"
            wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {network.ns(where)} {chromium} "$@"\n')
            wrapper.chmod(0o755)
            try:
                browser = playwright.chromium.launch(
                    executable_path=str(wrapper), headless=True, args=web.CHROMIUM_ARGS
                )
            except BaseException:
                server.close()
                raise
            made[where] = Site(browser, server)
        yield made
    finally:
        for site in made.values():
            site.browser.close()
            site.server.close()


@pytest.fixture
def browser_at(sites: Dict[str, Site]) -> Iterator[Callable[[Rig, str, str], WebPhone]]:
    """A new browser phone at a site (a context of its Chromium), registered with the rig's gateway."""
    contexts: List[Any] = []

    def make(nat_rig: Rig, where: str, prefix: str) -> WebPhone:
        context = sites[where].browser.new_context(ignore_https_errors=True, permissions=["microphone"])
        contexts.append(context)
        page = context.new_page()
        page.goto(sites[where].server.url, timeout=15000)
        phone = WebPhone(page, user(prefix)).start(nat_rig, domain=nat_rig.sip[0])
        received_from(nat_rig, phone.user, where)
        return phone

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


def private_in(sdp: str, own: str = "") -> List[str]:
    """The private addresses an SDP names, but ``own``."""
    return [a for a in ADDRESS.findall(sdp) if a != own and any(ipaddress.ip_address(a) in n for n in PRIVATE)]


def browser_talks(phone: WebPhone) -> None:
    """Audio both ways at the browser (getStats), and nothing private in the SDP it got."""
    phone.media_grows()
    leaked = private_in(phone.remote_sdp())
    assert not leaked, f"{phone.user} got SDP naming private addresses {leaked}:\n{phone.remote_sdp()}"


#: The SIPp phone's hold and resume, after the browser's (a re-INVITE each way: no glare).
PHONE_HOLDS: Tuple[sipp.Step, ...] = (
    ("pause", 500),
    ("reinvite", "sendonly"),
    ("pause", 400),
    ("reinvite", "sendrecv"),
)


def held_by_the_phone(phone: WebPhone) -> None:
    """The browser saw the phone hold and resume (PHONE_HOLDS), and audio flows both ways again."""
    phone.wait_event("session hold remote")
    phone.wait_event("session unhold remote")
    phone.media_grows()


def phone_side_heard(
    rig: Rig, work: Path, call_id: str, phone: Party, before: int, run: str, label: str, seen: Dict[str, Any]
) -> None:
    """After a call between a browser and a SIPp phone (SIPp run ``run``): rtpengine got audio from both
    legs, the phone's media port got it (``before``: its counter before the call), the SDP the phone got
    names no other site's private address; nothing of the call is left.  ``seen``: the browser's stats."""
    sent = media_both_ways(rig.relay.commands(call_id), call_id)
    got = phone.heard() - before
    assert got > 20, f"{label}: the phone at {phone.where} got {got} packets"
    print(f"{label}: rtpengine got {sent}, the phone got {got}, the browser {seen}")
    leaked = private_addresses_received(work, run, phone.phone.host)
    assert not leaked, f"{label}: the phone at {phone.where} got SDP naming private addresses: {leaked}"
    settle(rig, call_id)


BROWSER_AND_PHONE = [
    ("public", "siteA", "siteB"),
    ("public", "siteB", "siteA"),
    ("public", "siteA", "pub"),
    ("public", "siteB", "pub"),
    ("cloud", "siteA", "siteB"),
    ("cloud", "siteB", "pub"),
]


@pytest.mark.parametrize(("position", "browser_site", "phone_at"), BROWSER_AND_PHONE,
                         ids=[f"{g}-browser-{a}-phone-{b}" for g, a, b in BROWSER_AND_PHONE])  # fmt: skip
def test_browser_calls_a_sip_phone_through_nat(
    gateways: Callable[[str], Rig], network: netns.Network, work: Path,
    browser_at: Callable[[Rig, str, str], WebPhone], position: str, browser_site: str, phone_at: str,
) -> None:  # fmt: skip
    """The browser calls, holds and resumes; the phone holds and resumes; the browser hangs up."""
    nat_rig = gateways(position)
    alice = browser_at(nat_rig, browser_site, "nwa")
    bob = party(nat_rig, network, work, phone_at, "npb")
    browser_calls_phone(nat_rig, work, alice, bob, bob.phone.user, nat_rig.sip, f"browser {browser_site} -> "
                        f"phone {phone_at}")  # fmt: skip


def browser_calls_phone(
    rig: Rig, work: Path, alice: WebPhone, bob: Party, dialled: str, proxy: Tuple[str, int], label: str
) -> str:
    """``alice`` calls ``dialled``, which reaches ``bob`` (a SIPp UAS that sends its in-dialog requests to
    ``proxy``); each holds and resumes, ``alice`` hangs up; the SDP the browser got."""
    heard = bob.heard()
    script = sipp.Call((("play",), ("expect_reinvite",), ("expect_reinvite",), *PHONE_HOLDS, ("expect_bye",)),
                       ring_ms=300)  # fmt: skip
    uas = sipp.run(sipp.uas_scenario(script), work, "uas", bob.phone, proxy, domain=rig.sip[0], echo=True)
    try:
        alice.call(f"sip:{dialled}@{rig.sip[0]}")
        alice.wait_event("session confirmed")
        call_id = alice.call_id()
        sdp = alice.remote_sdp()
        browser_talks(alice)
        alice.hold_and_resume()
        held_by_the_phone(alice)
        seen = alice.stats()
        alice.hangup()
        alice.wait_event("session ended")
        assert uas.wait() == 0, uas.errors()
    finally:
        uas.stop()
    phone_side_heard(rig, work, call_id, bob, heard, "uas", label, seen)
    return sdp


@pytest.mark.parametrize(("position", "browser_site", "phone_at"), BROWSER_AND_PHONE,
                         ids=[f"{g}-phone-{b}-browser-{a}" for g, a, b in BROWSER_AND_PHONE])  # fmt: skip
def test_sip_phone_calls_a_browser_through_nat(
    gateways: Callable[[str], Rig], network: netns.Network, work: Path,
    browser_at: Callable[[Rig, str, str], WebPhone], position: str, browser_site: str, phone_at: str,
) -> None:  # fmt: skip
    """The phone calls; the browser answers, holds and resumes; the phone holds and resumes, and hangs up."""
    nat_rig = gateways(position)
    carol = party(nat_rig, network, work, phone_at, "npc")
    dan = browser_at(nat_rig, browser_site, "nwd")
    heard = carol.heard()
    call_id = new_call_id("phone-to-browser")
    script = sipp.Call((("expect_reinvite",), ("expect_reinvite",), *PHONE_HOLDS, ("pause", 3000), ("bye",)))
    uac = sipp.run(sipp.uac_scenario(script), work, "uac", carol.phone, nat_rig.sip, service=dan.user,
                   call_id=call_id, domain=nat_rig.sip[0])  # fmt: skip
    try:
        dan.wait_event("incoming")
        assert dan.call_id() == call_id
        dan.answer()
        dan.wait_event("session confirmed")
        browser_talks(dan)
        dan.hold_and_resume()
        held_by_the_phone(dan)
        seen = dan.stats()
        dan.wait_event("session ended", timeout=20)
        assert uac.wait() == 0, uac.errors()
    finally:
        uac.stop()
    phone_side_heard(nat_rig, work, call_id, carol, heard, "uac", f"phone {phone_at} -> browser {browser_site}", seen)


BROWSERS = [("public", "siteA", "siteB"), ("public", "siteB", "siteA"), ("public", "siteA", "siteA"),
            ("cloud", "siteA", "siteB")]  # fmt: skip


@pytest.mark.parametrize(("position", "caller_site", "callee_site"), BROWSERS,
                         ids=[f"{g}-{a}-to-{b}" for g, a, b in BROWSERS])  # fmt: skip
def test_browsers_call_each_other_through_nat(
    gateways: Callable[[str], Rig], browser_at: Callable[[Rig, str, str], WebPhone], position: str,
    caller_site: str, callee_site: str,
) -> None:  # fmt: skip
    """Across the two NATs each way, and on the same LAN: hold and resume from each side; the callee hangs
    up, or the caller when the callee's site comes first in the alphabet."""
    nat_rig = gateways(position)
    alice = browser_at(nat_rig, caller_site, "nwe")
    bob = browser_at(nat_rig, callee_site, "nwf")
    call_id = alice.calls_and_is_answered_by(bob, nat_rig.sip[0])
    for phone in (alice, bob):
        browser_talks(phone)
    for holder in (alice, bob):
        holder.hold_and_resume()
        alice.media_grows()
        bob.media_grows()
    stats = {"caller": alice.stats(), "callee": bob.stats()}
    hangs_up, other = (alice, bob) if callee_site < caller_site else (bob, alice)
    hangs_up.hangup()
    other.wait_event("session ended")
    sent = media_both_ways(nat_rig.relay.commands(call_id), call_id)
    print(f"browser {caller_site} -> browser {callee_site}: rtpengine got {sent}, the browsers {stats}")
    settle(nat_rig, call_id)


# -- keep-alives: a NAT forgets an idle mapping; the gateway's pings must keep it ------------------

#: nathelper's natping_interval on the rig that pings (seconds); the NATs forget a mapping after
#: network.udp_timeout seconds without a packet.
PING = 5


@pytest.fixture(scope="module")
def pinging_rig(
    opensips_bin: Optional[str],
    network: netns.Network,
    gateways: Callable[[str], Rig],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Rig]:
    """A second gateway in the same namespace (its own ports) with nathelper's keep-alive OPTIONS on, as
    opensips.cfg has them (the other rig turns them off: a ping landing on a SIPp callee mid-call)."""
    folder = tmp_path_factory.mktemp(f"nat-ping-{version_of(str(opensips_bin))}")
    options = gateway_options(network, "public", extra_params=f'modparam("nathelper", "natping_interval", {PING})')
    with own_rig(opensips_bin, folder, **options) as rig:
        yield rig


def test_keepalives_keep_an_idle_phone_behind_nat_reachable(
    gateways: Callable[[str], Rig], pinging_rig: Rig, network: netns.Network, work: Path
) -> None:
    """Two phones behind the symmetric NAT register, one with each gateway, and stay idle past the NAT's
    UDP timeout.  The one the gateway pinged takes a call with audio both ways; the other one's mapping
    is gone: the gateway's INVITE never reaches it."""
    nat_rig = gateways("public")
    kept = party(pinging_rig, network, work, "siteB", "nka")
    lost = party(nat_rig, network, work, "siteB", "nkl")
    caller = party(pinging_rig, network, work, "pub", "nkc")
    # what reaches each phone's SIP port past the NAT while it is idle (nothing listens there meanwhile)
    pings = {p.phone.user: network.counter("siteB", p.phone.host, p.phone.port) for p in (kept, lost)}
    time.sleep(network.udp_timeout + 2 * PING)
    reached = {name: read() for name, read in pings.items()}
    assert reached[kept.phone.user] >= 2 and reached[lost.phone.user] == 0, reached
    # The pings stop for the call (MI nh_enable_ping; 4.0 names it nathelper:enable_ping): SIPp answers
    # one call per run, and a ping landing on the callee first would be taken for it.  The mapping they
    # kept lasts the NAT's timeout.
    with pinging_rig.gw.inside():
        for command in ("nh_enable_ping", "nathelper:enable_ping"):
            try:
                mi.call(pinging_rig.gw.mi_url, command, {"status": 0})
                break
            except mi.MIError:
                continue
        else:
            raise AssertionError("neither nh_enable_ping nor nathelper:enable_ping answered")
    time.sleep(1)
    packets = talk(pinging_rig, work, caller, kept, "after-idle")
    print(
        f"after {network.udp_timeout + 2 * PING} s idle: keep-alives that reached each phone {reached}; "
        f"the pinged one's call {packets}"
    )
    call_id = new_call_id("unpinged")
    uas = sipp.run(sipp.uas_scenario(sipp.Call((("expect_bye",),))), work, "unpinged-uas", lost.phone, nat_rig.sip,
                   domain=nat_rig.sip[0], echo=True, timeout=12)  # fmt: skip
    try:
        uac = sipp.run(sipp.uac_scenario(sipp.Call((("bye",),))), work, "unpinged-uac", caller.phone, nat_rig.sip,
                       service=lost.phone.user, call_id=call_id, domain=nat_rig.sip[0], timeout=12)  # fmt: skip
        try:
            code = uac.wait()
            assert code != 0, "the call to a phone whose NAT mapping expired was answered"
            got = [m.first_line for m in messages(work, "unpinged-uac") if not m.sent]
            print(f"the unpinged phone's caller: SIPp exit {code}, got {got}")
        finally:
            uac.stop()
    finally:
        uas.stop()
    assert not [m for m in messages(work, "unpinged-uas") if not m.sent], "the unpinged phone got a message"
    settle(nat_rig, call_id, seconds=10)


# -- a dual-homed gateway: browsers on the public side, a PBX on a private network -------------------


def pbx_party(network: netns.Network) -> Party:
    """The PBX: a SIPp at 10.1.0.20 on the private network (no route beyond it), the dial plan's trunk."""
    phone = sipp.Phone(user("pbx"), port=PBX_PORT, host=netns.PBX, contact_host=netns.PBX, namespace=network.ns("pbx"))
    return Party(phone, "pbx", network.counter("pbx", netns.PBX, phone.media_port))


def addresses_in(sdp: str) -> List[str]:
    return [line.split()[-1] for line in sdp.replace("\r\n", "\n").split("\n") if line.startswith("c=IN IP4 ")]


def test_dual_homed_gateway_bridges_browsers_and_a_pbx_on_a_private_network(
    gateways: Callable[[str], Rig], network: netns.Network, work: Path,
    browser_at: Callable[[Rig, str, str], WebPhone],
) -> None:  # fmt: skip
    """A browser behind NAT dials the PBX (the dial plan's trunk on the private network) and the PBX
    calls a browser: the PBX's SDP names rtpengine's private address only, the browser's its public
    one only (each offer named both legs' interfaces), and audio flows both ways."""
    rig = gateways("dual")
    alice = browser_at(rig, "siteA", "nda")
    pbx = pbx_party(network)
    private = (netns.DUAL_PRIVATE, rig.gw.ports.sip)
    browser_sdp = browser_calls_phone(rig, work, alice, pbx, "8100", private, "browser siteA -> the PBX")
    pbx_sdps = [m.text.split("\n\n", 1)[1] for m in messages(work, "uas") if not m.sent and "\n\nv=0" in m.text]
    assert pbx_sdps and all(addresses_in(b) == [netns.DUAL_PRIVATE] for b in pbx_sdps), pbx_sdps
    assert addresses_in(browser_sdp) == [netns.DUAL_PUBLIC], browser_sdp

    dan = browser_at(rig, "siteB", "ndd")
    heard = pbx.heard()
    call_id = new_call_id("pbx-to-browser")
    script = sipp.Call((("expect_reinvite",), ("expect_reinvite",), ("pause", 1500), ("bye",)))
    uac = sipp.run(sipp.uac_scenario(script), work, "pbx-uac", pbx.phone, private,
                   service=dan.user, call_id=call_id, domain=netns.DUAL_PRIVATE)  # fmt: skip
    try:
        dan.wait_event("incoming")
        dan.answer()
        dan.wait_event("session confirmed")
        assert addresses_in(dan.remote_sdp()) == [netns.DUAL_PUBLIC], dan.remote_sdp()
        dan.media_grows()
        dan.hold_and_resume()
        seen = dan.stats()
        dan.wait_event("session ended", timeout=20)
        assert uac.wait() == 0, uac.errors()
    finally:
        uac.stop()
    pbx_sdps = [m.text.split("\n\n", 1)[1] for m in messages(work, "pbx-uac") if not m.sent and "\n\nv=0" in m.text]
    assert pbx_sdps and all(addresses_in(b) == [netns.DUAL_PRIVATE] for b in pbx_sdps), pbx_sdps
    phone_side_heard(rig, work, call_id, pbx, heard, "pbx-uac", "the PBX -> browser siteB", seen)


# -- a real softphone behind the symmetric NAT -------------------------------------------------------


def registered_soon(rig: Rig, name: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with rig.gw.inside():
            if mi.contacts(rig.gw.mi_url).get(name):
                return
        time.sleep(0.2)
    raise AssertionError(f"{name} did not register within {seconds}s")


def test_baresip_behind_the_symmetric_nat_calls_and_is_called_by_a_browser(
    gateways: Callable[[str], Rig], network: netns.Network, work: Path,
    browser_at: Callable[[Rig, str, str], WebPhone],
) -> None:  # fmt: skip
    """baresip (its own SIP and RTP stack, G.711, a tone as its microphone) at site B registers through
    the symmetric NAT; a browser at site A calls it (baresip answers by itself), both hold and resume,
    baresip hangs up; then baresip calls a browser, which answers and hangs up.  Audio both ways each
    time: the browser's getStats, rtpengine's per leg, and packets delivered to baresip's RTP ports."""
    reason = baresip.available()
    if reason is not None:
        pytest.skip(reason)
    rig = gateways("public")
    host = network.hosts["siteB"][0]  # baresip takes media on the interface's first address
    phone = baresip.Baresip.start(work / "baresip", user("nbr"), host, rig.sip, rig.sip[0], network.ns("siteB"))
    try:
        registered_soon(rig, phone.user)  # it registers at start, before ctrl_tcp may tell anyone
        received_from(rig, phone.user, "siteB")
        heard = network.counter("siteB", host, phone.rtp[0], phone.rtp[1])
        alice = browser_at(rig, "siteA", "nba")
        before = heard()
        alice.call(f"sip:{phone.user}@{rig.sip[0]}")
        alice.wait_event("session confirmed")
        call_id = alice.call_id()
        phone.wait_event("CALL_ESTABLISHED")
        browser_talks(alice)
        seen = hold_each_side_then_baresip_hangs_up(alice, phone)
        sent = media_both_ways(rig.relay.commands(call_id), call_id)
        got = heard() - before
        assert got > 20, f"baresip got {got} packets"
        print(f"browser siteA -> baresip siteB: rtpengine got {sent}, baresip got {got}, the browser {seen}")
        settle(rig, call_id)

        dan = browser_at(rig, "siteA", "nbd")
        before = heard()
        call_id = baresip_calls(phone, dan, rig.sip[0], calls=2)
        browser_talks(dan)
        seen = dan.stats()
        dan.hangup()
        phone.wait_event("CALL_CLOSED", count=2)
        sent = media_both_ways(rig.relay.commands(call_id), call_id)
        got = heard() - before
        assert got > 20, f"baresip got {got} packets"
        print(f"baresip siteB -> browser siteA: rtpengine got {sent}, baresip got {got}, the browser {seen}")
        settle(rig, call_id)
    finally:
        phone.stop()
