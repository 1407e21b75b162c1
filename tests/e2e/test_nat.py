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

import ipaddress
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from rig import netns, sipp
from rig.gateway import version_of

from .conftest import NO_OPENSIPS, Rig, need, own_rig
from .sipcalls import call, media_both_ways, messages, register_phone, settle, user

SETTINGS = f"""\
[gateway]
domains = {netns.GATEWAY} gateway.local
sip_destination =
trusted_sources =
topology_hiding = no
"""


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


@pytest.fixture(scope="module")
def nat_rig(
    opensips_bin: Optional[str], network: netns.Network, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rig]:
    if opensips_bin is None:
        pytest.skip(NO_OPENSIPS)
    need("sipp")
    folder = tmp_path_factory.mktemp(f"nat-{version_of(opensips_bin)}")
    with own_rig(opensips_bin, folder, settings=SETTINGS, address=netns.GATEWAY, namespace=network.ns("gw")) as rig:
        yield rig


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
    return Party(phone, where, network.counter(where, host, phone.media_port))


PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")]
ADDRESS = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3})\b")


def private_addresses_received(work: Path, name: str, own: str) -> List[Tuple[str, str]]:
    """(first line, address) for each private address in an SDP that SIPp run ``name`` received, but
    the phone's own (``own``)."""
    found = []
    for message in messages(work, name):
        if message.sent or "\n\n" not in message.text:
            continue
        body = message.text.split("\n\n", 1)[1]
        for text in ADDRESS.findall(body):
            address = ipaddress.ip_address(text)
            if text != own and any(address in net for net in PRIVATE):
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
    ("siteA", "siteB"),
    ("siteB", "siteA"),
    ("pub", "siteA"),
    ("siteA", "pub"),
    ("pub", "siteB"),
    ("siteB", "pub"),
    ("siteA", "siteA"),
]


@pytest.mark.parametrize(("caller_at", "callee_at"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_sip_phones_talk_through_nat(
    nat_rig: Rig, network: netns.Network, work: Path, caller_at: str, callee_at: str
) -> None:
    caller = party(nat_rig, network, work, caller_at, "nc")
    callee = party(nat_rig, network, work, callee_at, "nd")
    for hold_by, bye_by in (("caller", "caller"), ("callee", "callee")):
        name = f"{caller_at}-{callee_at}-{hold_by}-{bye_by}"
        packets = talk(nat_rig, work, caller, callee, name, hold_by, bye_by)
        print(f"{name}: {packets}")
