"""Which address a request comes from, for rate limits."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from invoiceiq.web.addresses import client_address, limit_subject


def request(peer: str, *forwarded: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "client": (peer, 1234), "headers": headers})


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.5", ["198.51.100.1"], [], "203.0.113.5"),  # no proxies: the header is a lie
        ("203.0.113.5", ["198.51.100.1"], ["10.0.0.0/8"], "203.0.113.5"),  # untrusted peer
        ("10.0.0.2", ["198.51.100.1"], ["10.0.0.0/8"], "198.51.100.1"),
        # The client may write anything on the left; our proxy appended the real address.
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1"], ["10.0.0.0/8"], "198.51.100.1"),
        ("10.0.0.2", ["198.51.100.1, 10.0.0.9"], ["10.0.0.0/8"], "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6", "198.51.100.1"], ["10.0.0.0/8"], "198.51.100.1"),
        ("10.0.0.2", [], ["10.0.0.0/8"], "10.0.0.2"),
        ("10.0.0.2", ["10.0.0.7"], ["10.0.0.0/8"], "10.0.0.7"),
        ("172.16.0.1", ["2001:db8::1"], ["172.16.0.1", "not-an-address"], "2001:db8::1"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], trusted: list[str], expected: str) -> None:
    assert client_address(request(peer, *forwarded), trusted) == expected


@pytest.mark.parametrize(
    ("address", "subject"),
    [
        ("203.0.113.5", "203.0.113.5"),
        # One subscriber's /64 is one client, however many addresses they take from it.
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:1:2:3", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("unknown", "unknown"),
    ],
)
def test_limits_count_an_ipv6_client_by_its_network(address: str, subject: str) -> None:
    assert limit_subject(address) == subject
