"""Facts about an SDP body, without parsing more than the router needs."""

from __future__ import annotations

import ipaddress
import re
from typing import Optional, Union

# nathelper's private-sdp test: RFC 1918, plus RFC 6598 carrier-grade NAT space.
# Loopback is not private here (nathelper does not count it either), so test
# rigs on 127.0.0.0/8 behave like public hosts.
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


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}$")
_PRIVATE_QUAD = re.compile(
    rf"(?:10|172\.(?:1[6-9]|2\d|3[01])|192\.168|100\.(?:6[4-9]|[7-9]\d|1[01]\d|12[0-7]))(?:\.{_OCTET})+$"
)
_CONNECTION = re.compile(r"^c=IN (IP[46]) ([^\s/]+)", re.M)


def _private_v4(text: str) -> Optional[bool]:
    """is_private_address for a dotted quad with two regular expressions instead of the ipaddress
    module (several times faster); None if the text is not a dotted quad as ipaddress reads one."""
    if _DOTTED_QUAD.match(text) is None:
        return None
    return _PRIVATE_QUAD.match(text) is not None


# A c= line naming an RFC 1918/6598 IPv4 address, as a whole dotted quad (what _private_v4 accepts).
_PRIVATE_V4_LINE = re.compile(
    rf"^c=IN IP4 (?:10(?:\.{_OCTET}){{3}}"
    rf"|(?:172\.(?:1[6-9]|2\d|3[01])|192\.168|100\.(?:6[4-9]|[7-9]\d|1[01]\d|12[0-7]))(?:\.{_OCTET}){{2}})"
    r"(?=[\s/]|$)",
    re.M,
)


def has_private_address(body: str) -> bool:
    """True when any c= line of the SDP names a private address (session or media level)."""
    if _PRIVATE_V4_LINE.search(body) is not None:
        return True
    if "c=IN IP6" not in body:
        return False
    for version, address in _CONNECTION.findall(body):
        if version == "IP6" and is_private_address(address):
            return True
    return False


def is_sdp(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";")[0].strip().lower() == "application/sdp"
