"""The client's address for rate limits: X-Forwarded-For is believed only from TRUSTED_PROXIES.

Behind trusted proxies, the client is the right-most address in X-Forwarded-For that is not a
trusted proxy itself: every proxy appends the address it saw, so entries to its left may be
whatever the client wrote, but that one was written by our own proxy.
"""

from __future__ import annotations

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
