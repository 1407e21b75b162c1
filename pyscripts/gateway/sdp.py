"""Facts about an SDP body, without parsing more than the router needs."""

from __future__ import annotations

import ipaddress
import re
from typing import Union

# RFC 1918, plus RFC 6598 carrier-grade NAT space.  Loopback is not private here
# (nathelper's private-sdp test does count 127.0.0.0/8: docs/host-facts.md), so
# test rigs on 127.0.0.0/8 behave like public hosts.
_PRIVATE_V4 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"))
_PRIVATE_V6 = (ipaddress.ip_network("fc00::/7"), ipaddress.ip_network("fe80::/10"))


def is_private_address(text: str) -> bool:
    """True for an RFC 1918/6598 IPv4 or a ULA/link-local IPv6 address; False for names and junk."""
    try:
        addr: Union[ipaddress.IPv4Address, ipaddress.IPv6Address] = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv4Address):
        return any(addr in net for net in _PRIVATE_V4)
    return any(addr in net for net in _PRIVATE_V6)


_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: A c= line (never an SDP's first: v= is) naming a private address: an RFC 1918/6598 IPv4 dotted
#: quad, or an IPv6 address whose first group is in fc00::/7 or fe80::/10.  The cfg tests the body
#: with this very expression, natively (`$rb =~ "..."`, POSIX extended, case-insensitive, up to the
#: first NUL: tests/test_cfg.py keeps the two equal), so it keeps to what POSIX and Python's re
#: read alike: no lookahead, no \d, no anchors but the end of the text.
PRIVATE_SDP = (
    f"\nc=IN IP4 (10(\\.{_OCTET}){{3}}"
    "|(172\\.(1[6-9]|2[0-9]|3[01])|192\\.168|100\\.(6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7]))"
    f"(\\.{_OCTET}){{2}})([/ \t\r\n]|$)"
    "|\nc=IN IP6 \\[?(f[cd][0-9a-f][0-9a-f]|fe[89ab][0-9a-f]):"
)
_PRIVATE_SDP = re.compile(PRIVATE_SDP, re.IGNORECASE | re.ASCII)


def has_private_address(body: Union[str, bytes]) -> bool:
    """True when a c= line of the SDP (session or media level) names a private address, as the
    cfg's native test finds it: bytes are read one to a character, the body ends at a NUL."""
    text = body.decode("latin-1") if isinstance(body, bytes) else body
    return _PRIVATE_SDP.search(text.split("\0", 1)[0]) is not None


def is_sdp(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";")[0].strip().lower() == "application/sdp"
