"""The client address as the proxies we trust see it."""

from __future__ import annotations

from starlette.requests import Request


def client_ip(request: Request, *, trust_forwarded_for: bool, trusted_hops: int) -> str | None:
    """The peer address, or behind `trusted_hops` proxies the X-Forwarded-For entry they appended.

    Read from the right: the client writes the leftmost entries, so they are never taken. Every
    header line counts, in order (RFC 9110 5.3): HAProxy adds its own line after the client's.
    """
    peer = request.client.host if request.client else None
    forwarded = ", ".join(request.headers.getlist("x-forwarded-for"))
    if not (trust_forwarded_for and forwarded):
        return peer
    entries = [entry.strip() for entry in forwarded.split(",") if entry.strip()]
    if len(entries) < trusted_hops:
        return peer
    return entries[-trusted_hops]
