"""Address lists from the settings (TRUSTED_PROXIES, MPESA_CALLBACK_ALLOWLIST), parsed once."""

from __future__ import annotations

import functools
import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """The settings refuse an entry that is no address or network (config.py); one that
    reaches here anyway can never match, and is left out rather than failing every request."""
    parsed: list[Network] = []
    for entry in entries:
        try:
            parsed.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    return tuple(parsed)


def in_networks(address: str, among: tuple[Network, ...]) -> bool:
    """Whether `address` (as a peer or a proxy wrote it) is in one of `among`."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in among)
