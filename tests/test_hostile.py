"""Bad input through the fake host: hostile headers, URIs, Contacts and SDP, and the RFC 4475 torture messages.

The fake host runs strict: a route that lets an exception escape, leaves one pending, returns 0 or a
non-int, or makes a call that would crash OpenSIPS fails the test by itself.  On top of that no
message may make the Python side fail (it must answer bad input itself), and every initial request
gets an answer or is dropped as OpenSIPS's parser would.
"""

from __future__ import annotations

import os
import pathlib
from typing import List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes.runtime import Endpoint, Gateway
from fakes.sipmsg import SipMessage
from fakes.ua import Network
from gateway.settings import Settings

EXAMPLES = int(os.environ.get("GATEWAY_HOSTILE_EXAMPLES", "400"))
SOURCES = [
    Endpoint("udp", "203.0.113.9", 5060),
    Endpoint("tcp", "203.0.113.9", 41000),
    Endpoint("ws", "203.0.113.9", 52000),
    Endpoint("wss", "198.51.100.3", 52001),
]

junk = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00"), max_size=80)
raw_junk = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
hosts = st.one_of(
    st.sampled_from(
        [
            "127.0.0.1",
            "localhost",
            "10.1.2.3",
            "192.168.0.7",
            "[2001:db8::1]",
            "[fe80::1]",
            "100.64.0.1",
            "x.invalid",
            "",
            "a" * 300,
            "1.2.3",
            "::1",
        ]
    ),
    st.ip_addresses().map(str),
    junk,
)
users = st.one_of(st.sampled_from(["alice", "bob", "", "%00", "a;b", "a|b", "<sip:x>", "*"]), junk)
uris = st.one_of(
    st.builds(
        lambda u, h, p: f"sip:{u}@{h}{p}", users, hosts, st.sampled_from(["", ":5060", ";transport=ws", ":0", ":99999"])
    ),
    st.sampled_from(["*", "sip:", "sips:@", "tel:+4930", "<sip:a@b>", "sip:a@b?x=<y>"]),
    junk,
)
addresses = st.one_of(
    st.builds(lambda u: f"<{u}>", uris),
    uris,
    st.just("*"),
    junk,
    st.builds(lambda u, t: f'"\\"x" <{u}>;tag={t}', uris, junk),
)


def c_line(host: str) -> str:
    return f"c=IN {'IP6' if ':' in host else 'IP4'} {host}"


sdp_lines = st.one_of(
    st.builds(c_line, hosts),
    st.sampled_from(
        [
            "v=0",
            "o=- 1 1 IN IP4 10.0.0.1",
            "s=-",
            "t=0 0",
            "m=audio 0 RTP/AVP 0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=sendonly",
            "a=rtcp-mux",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x",
            "m=",
            "c=",
            "c=IN",
            "a=candidate:1 1 udp 1 10.0.0.1 9 typ host",
            "m=video 9 RTP/SAVPF 96",
        ]
    ),
    junk,
)
bodies = st.one_of(
    st.lists(sdp_lines, max_size=12).map(lambda ls: ("\r\n".join(ls) + "\r\n").encode("utf-8", "surrogateescape")),
    raw_junk,
    st.just(b""),
    st.just(b"v=0\r\ns=Caf\xe9\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n"),
    st.binary(min_size=5000, max_size=20000),
)
methods = st.sampled_from(
    [
        "INVITE",
        "REGISTER",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "MESSAGE",
        "UPDATE",
        "PRACK",
        "INFO",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "PUBLISH",
        "FOO",
    ]
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(methods)
    ruri = draw(st.one_of(uris, st.just("sip:bob@127.0.0.1")))
    headers: List[Tuple[str, str]] = [
        ("Via", draw(st.one_of(st.just("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport"), junk))),
        (draw(st.sampled_from(["From", "f"])), draw(addresses) + draw(st.sampled_from([";tag=a1", ""]))),
        (draw(st.sampled_from(["To", "t"])), draw(addresses) + draw(st.sampled_from(["", ";tag=b2", ";tag="]))),
        (draw(st.sampled_from(["Call-ID", "i"])), draw(st.one_of(st.just("c1@x"), junk))),
        ("CSeq", f"{draw(st.integers(0, 2**32))} {method}"),
        ("Max-Forwards", draw(st.sampled_from(["70", "0", "1", "x"]))),
    ]
    for _ in range(draw(st.integers(0, 3))):
        headers.append(
            (
                draw(st.sampled_from(["Contact", "m", "Route", "Record-Route", "Expires", "Content-Type", "c"])),
                draw(st.one_of(addresses, st.sampled_from(["application/sdp", "0", "3600", "*"]), junk)),
            )
        )
    body = draw(bodies)
    if draw(st.booleans()):
        headers.append((draw(st.sampled_from(["Content-Type", "c"])), "application/sdp"))
    headers.append(("Content-Length", draw(st.sampled_from([str(len(body)), "0", "99999", "-1", "x"]))))
    head = f"{method} {ruri} SIP/2.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + body


def registered_gateway(*domains: str) -> Gateway:
    local = frozenset({"127.0.0.1", "localhost", *domains})
    gateway = Gateway(Settings(domains=local, sip_destination="sip:127.0.0.99:5080"))
    net = Network(gateway)
    for ua in (net.browser("alice"), net.phone("bob", nat=True), net.phone("carol")):
        net.register(ua)
    return gateway


def answered(gateway: Gateway, raw: bytes, source: Endpoint) -> None:
    try:
        message = SipMessage.parse(raw)
    except ValueError:
        message = None
    before, seen = len(gateway.errors), len(gateway.events)
    out = gateway.receive(raw, source)
    assert gateway.python_failures == 0, gateway.errors[before:]
    if message is None or not message.is_request or message.method == "ACK" or message.to_tag:
        return
    if any("retransmission" in e.text for e in gateway.events[seen:]):
        return  # several torture messages reuse one Via branch: tm takes them for retransmissions
    if message.method == "CANCEL":
        return  # a CANCEL for no transaction is dropped
    replies = [m for _, m in out if not m.is_request]
    forwarded = [m for _, m in out if m.is_request]
    assert replies or forwarded, f"{message.first_line!r} got neither a reply nor a relay"


@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(raw=requests(), source=st.sampled_from(SOURCES))
def test_hostile_requests_get_a_clear_answer(raw: bytes, source: Endpoint) -> None:
    answered(registered_gateway(), raw, source)


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=st.integers(100, 699),
    contact=addresses,
    body=bodies,
    record=st.one_of(st.none(), junk),
    exchange=st.one_of(st.none(), junk),
)
def test_hostile_replies_and_stored_state_are_survived(
    status: int, contact: str, body: bytes, record: str, exchange: str
) -> None:
    gateway = registered_gateway()
    net = Network(gateway)
    alice = net.browser("dave")
    net.register(alice)
    call = net.invite(alice, "bob")
    tx = next(iter(gateway.transactions.values()))
    if record is not None and tx.dialog is not None:
        tx.dialog.vals["gw"] = record
    if exchange is not None:
        tx.avps["gw_tx"] = exchange
    branch = tx.branches[0]
    reply = SipMessage(
        f"SIP/2.0 {status} X",
        [("Via", branch.message.header_values("via")[0])]
        + [(k, v) for k, v in branch.message.headers[1:] if k.lower() in ("via", "from", "call-id", "cseq")],
    )
    reply.headers.append(("To", (branch.message.header("to") or "") + ";tag=z9"))
    reply.headers.append(("Contact", contact))
    reply.set_body(body)
    gateway.receive(reply.to_bytes(), branch.endpoint)
    assert gateway.python_failures == 0
    assert call.call_id


TORTURE = os.environ.get("GATEWAY_TESTDATA")
TORTURE_DOMAINS = ("example.com", "example.net", "chair-dnrc.example.com", "biloxi.com", "example.org")


def torture_messages() -> List[pathlib.Path]:
    if not TORTURE:
        return []
    return sorted((pathlib.Path(TORTURE) / "rfc4475").glob("*.dat"))


@pytest.mark.skipif(
    not TORTURE, reason="GATEWAY_TESTDATA is not set (the RFC 4475 messages live in ../shared/testdata)"
)
@pytest.mark.parametrize("source", SOURCES[::2], ids=lambda e: e.proto)
@pytest.mark.parametrize("domains", [(), TORTURE_DOMAINS], ids=["foreign", "local"])
def test_rfc4475_torture_messages(source: Endpoint, domains: Tuple[str, ...]) -> None:
    """As foreign domains (no relay: 403) and as our own (location lookups, registrations)."""
    files = torture_messages()
    assert len(files) == 50  # the 49 of RFC 4475 section 3 and test.dat
    gateway = registered_gateway(*domains)
    for path in files:
        answered(gateway, path.read_bytes(), source)
    gateway.timeout()  # what was relayed to nobody times out and is cleaned up
    net = Network(gateway)
    alice, carol = net.registered(net.browser("zed"), net.phone("yves"))
    call = net.invite(carol, "zed")
    net.reply(call, alice, 200)
    assert call.established
    net.bye(call, "caller")
    assert gateway.sessions() == [] and gateway.dialogs == {}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"From: <sip:dave@127.0.0.1>", b"From: <sip:dave@caf\xe9.example>"),
        (b"To: <sip:bob@127.0.0.1>", b"To: <sip:bob@127.0.0.1\xe9>"),
    ],
)
def test_a_request_whose_from_or_to_domain_is_not_utf8_gets_400_and_poisons_nothing(old: bytes, new: bytes) -> None:
    gateway = registered_gateway()
    net = Network(gateway)
    dave = net.phone("dave")
    net.register(dave)
    raw = (
        b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKlat1\r\n"
        b"From: <sip:dave@127.0.0.1>;tag=l1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: latin1@x\r\n"
        b"CSeq: 1 INVITE\r\nContact: <sip:dave@127.0.0.1:5090>\r\nContent-Length: 0\r\n\r\n"
    )
    assert old in raw
    out = gateway.receive(raw.replace(old, new), Endpoint("udp", "127.0.0.1", 5090))
    assert [m.first_line for _, m in out] == ["SIP/2.0 400 Bad Request - Not UTF-8"]
    assert gateway.python_failures == 0 and gateway.poisoned is None
    out = gateway.receive(raw.replace(b"latin1@x", b"utf8@x"), Endpoint("udp", "127.0.0.1", 5090))
    assert [m.first_line.split()[0] for _, m in out] == ["INVITE"]  # the worker still routes the next call
