"""The client's address for rate limits: X-Forwarded-For is believed only from TRUSTED_PROXIES.

Behind trusted proxies, the client is the right-most address in X-Forwarded-For that is not a
trusted proxy itself: every proxy appends the address it saw, so entries to its left may be
whatever the client wrote, but that one was written by our own proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import Request

from invoiceiq.kit.net import in_networks, networks


def client_address(request: Request, trusted_proxies: Sequence[str]) -> str:
    peer = request.client.host if request.client else "unknown"
    trusted = networks(tuple(trusted_proxies))
    if not trusted or not in_networks(peer, trusted):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not in_networks(hop, trusted):
            return hop
    return hops[0] if hops else peer


def limit_subject(address: str) -> str:
    """Who the rate limits count a request against: an IPv6 address by its /64 (one
    subscriber's network, which they may fill with as many addresses as they like), an
    IPv4-mapped one as the IPv4 address it is; anything else as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
