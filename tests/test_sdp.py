"""The SDP facts: the fast IPv4 test agrees with the ipaddress module everywhere."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from gateway.sdp import _private_v4, has_private_address, is_private_address

#: Addresses near the edges of the private ranges, and anywhere.
ADDRESSES = st.one_of(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.builds(
        lambda net, offset: int(ipaddress.IPv4Network(net).network_address) + offset,
        st.sampled_from(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8"]),
        st.integers(min_value=-300, max_value=2**24),
    ).filter(lambda v: 0 <= v < 2**32),
)


@given(ADDRESSES)
def test_the_fast_ipv4_test_agrees_with_ipaddress(value: int) -> None:
    text = str(ipaddress.IPv4Address(value))
    assert _private_v4(text) == is_private_address(text)


@given(st.sampled_from(["10", "172", "192", "100", "127", "300", "x", "", "01"]), st.text("0123456789.", max_size=12))
def test_the_fast_ipv4_test_never_says_more_than_ipaddress(head: str, tail: str) -> None:
    text = head + "." + tail
    fast = _private_v4(text)
    assert fast is None or fast == is_private_address(text)


def test_private_addresses_in_session_or_media_lines() -> None:
    assert has_private_address("v=0\r\nc=IN IP4 192.168.1.5\r\nm=audio 4000 RTP/AVP 0\r\n")
    assert has_private_address("v=0\r\nc=IN IP4 203.0.113.1\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 10.0.0.1/127\r\n")
    assert has_private_address("v=0\r\nc=IN IP6 fd00::5\r\n")
    assert not has_private_address("v=0\r\nc=IN IP4 127.0.0.1\r\nc=IN IP6 2001:db8::1\r\nc=IN IP4 host.example\r\n")
    assert not has_private_address("")


@given(ADDRESSES, st.sampled_from(["\r\n", "\n", "/127\r\n", " \r\n"]))
def test_a_c_line_is_private_exactly_when_its_address_is(value: int, end: str) -> None:
    text = str(ipaddress.IPv4Address(value))
    body = f"v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\nc=IN IP4 {text}{end}m=audio 4000 RTP/AVP 0\r\n"
    assert has_private_address(body) == is_private_address(text)
