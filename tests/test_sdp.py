"""The SDP facts: the cfg's private-address expression agrees with the ipaddress module."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from gateway.sdp import has_private_address, is_private_address

#: Addresses near the edges of the private ranges, and anywhere.
ADDRESSES = st.one_of(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.builds(
        lambda net, offset: int(ipaddress.IPv4Network(net).network_address) + offset,
        st.sampled_from(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8"]),
        st.integers(min_value=-300, max_value=2**24),
    ).filter(lambda v: 0 <= v < 2**32),
)
ADDRESSES_V6 = st.one_of(
    st.integers(min_value=0, max_value=2**128 - 1),
    st.builds(
        lambda net, offset: int(ipaddress.IPv6Network(net).network_address) + offset,
        st.sampled_from(["fc00::/7", "fe80::/10", "fec0::/10", "fb00::/8", "::ffff:0:0/96", "2001:db8::/32"]),
        st.integers(min_value=-(2**118), max_value=2**122),
    ).filter(lambda v: 0 <= v < 2**128),
)
LINE_ENDS = st.sampled_from(["\r\n", "\n", "/127\r\n", " \r\n"])


def sdp(connection: str, end: str = "\r\n") -> str:
    return f"v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\n{connection}{end}m=audio 4000 RTP/AVP 0\r\n"


def test_private_addresses_in_session_or_media_lines() -> None:
    assert has_private_address("v=0\r\nc=IN IP4 192.168.1.5\r\nm=audio 4000 RTP/AVP 0\r\n")
    assert has_private_address("v=0\r\nc=IN IP4 203.0.113.1\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 10.0.0.1/127\r\n")
    assert has_private_address("v=0\r\nc=IN IP6 fd00::5\r\n")
    assert has_private_address("v=0\r\nc=IN IP4 10.0.0.1")  # the body's last line, without its CRLF
    assert not has_private_address("v=0\r\nc=IN IP4 127.0.0.1\r\nc=IN IP6 2001:db8::1\r\nc=IN IP4 host.example\r\n")
    assert not has_private_address("v=0\r\na=note:c=IN IP4 10.0.0.1\r\n")  # a c= line, not a c= anywhere
    assert not has_private_address("v=0\r\nc=IN IP4 10.0.0.1.5\r\nc=IN IP4 10.0.0.256\r\n")
    assert not has_private_address("")


@given(ADDRESSES, LINE_ENDS)
def test_an_ipv4_c_line_is_private_exactly_when_its_address_is(value: int, end: str) -> None:
    text = str(ipaddress.IPv4Address(value))
    assert has_private_address(sdp(f"c=IN IP4 {text}", end)) == is_private_address(text)


@given(ADDRESSES_V6, LINE_ENDS, st.booleans(), st.booleans(), st.booleans())
def test_an_ipv6_c_line_is_private_exactly_when_its_address_is(
    value: int, end: str, exploded: bool, upper: bool, brackets: bool
) -> None:
    address = ipaddress.IPv6Address(value)
    text = address.exploded if exploded else str(address)
    text = text.upper() if upper else text
    text = f"[{text}]" if brackets else text
    assert has_private_address(sdp(f"c=IN IP6 {text}", end)) == is_private_address(text)


def test_it_reads_bytes_as_the_cfg_does_one_to_a_character_up_to_a_nul() -> None:
    assert has_private_address(b"v=0\r\ns=caf\xe9\r\nc=IN IP4 192.168.0.9\r\n")  # Latin-1: not UTF-8
    assert has_private_address("v=0\r\nC=in ip4 192.168.0.9\r\n")  # REG_ICASE
    assert not has_private_address("v=0\r\ns=\0\r\nc=IN IP4 192.168.0.9\r\n")  # regexec stops at the NUL
