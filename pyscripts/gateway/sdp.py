"""Facts about an SDP body, without parsing more than the router needs."""

from __future__ import annotations

import ipaddress
from typing import Union

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


def has_private_address(body: str) -> bool:
    """True when any c= line of the SDP names a private address (session or media level)."""
    for line in body.splitlines():
        if line.startswith("c="):
            parts = line[2:].split()
            if len(parts) >= 3 and is_private_address(parts[2].split("/")[0]):
                return True
    return False


def is_sdp(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";")[0].strip().lower() == "application/sdp"
