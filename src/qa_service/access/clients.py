"""Whom per-client limits count when there is no key: an address, or an IPv6 block.

One IPv6 host is given a whole /64, and one site commonly a /56 (RFC 6177;
RIPE-690 recommends /56 for end sites, /48 for businesses and servers). Counted
per address, or even per /64, one subscriber could rotate through fresh
limits at will: a /56 holds 256 /64s. So an IPv6 client is the block of
QA_IPV6_CLIENT_PREFIX bits its address is in. IPv4 addresses (and IPv4-mapped
IPv6 ones) count one by one: NAT already puts many users behind one.
"""

from __future__ import annotations

import ipaddress


def address_client(host: str, ipv6_prefix: int) -> str:
    """The client id of a peer at `host` (an address, or whatever the server named it)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"ip:{host}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        return f"ip:{ipaddress.IPv6Network((address, ipv6_prefix), strict=False)}"
    return f"ip:{address}"
