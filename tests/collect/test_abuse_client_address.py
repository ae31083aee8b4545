"""The client address is the one the trusted proxies saw, never what the client wrote."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from firstparty.collect import client_address


def _request(forwarded: str | None, peer: str = "10.0.0.2") -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "headers": headers, "client": (peer, 1234)})


@pytest.mark.parametrize(
    ("forwarded", "trust", "hops", "expected"),
    [
        ("6.6.6.6, 203.0.113.9", True, 1, "203.0.113.9"),
        ("6.6.6.6, 203.0.113.9, 10.0.0.1", True, 2, "203.0.113.9"),
        ("203.0.113.9", True, 2, "10.0.0.2"),
        ("6.6.6.6, 203.0.113.9", False, 1, "10.0.0.2"),
        (None, True, 1, "10.0.0.2"),
    ],
)
def test_forwarded_for_is_read_from_the_right(
    forwarded: str | None, trust: bool, hops: int, expected: str
) -> None:
    ip = client_address.client_ip(_request(forwarded), trust_forwarded_for=trust, trusted_hops=hops)
    assert ip == expected


def test_every_header_line_counts_and_the_proxys_own_line_comes_last() -> None:
    """HAProxy's `option forwardfor` adds a line of its own after the client's (issue 14)."""
    lines = [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"203.0.113.9")]
    request = Request({"type": "http", "headers": lines, "client": ("10.0.0.2", 1234)})
    ip = client_address.client_ip(request, trust_forwarded_for=True, trusted_hops=1)
    assert ip == "203.0.113.9"
    two_hops = client_address.client_ip(request, trust_forwarded_for=True, trusted_hops=2)
    assert two_hops == "6.6.6.6"
