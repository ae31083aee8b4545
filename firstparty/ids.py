"""Identifiers: time-ordered row ids and random visitor ids."""

from __future__ import annotations

import os
import secrets
import time

# Crockford's base32, whose order is ASCII order: ids sort as they encode.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_SHIFTS = tuple(range(125, -1, -5))


def new_id() -> str:
    """26 characters: 48 bits of milliseconds then 80 random bits, sortable by time."""
    # The 128 bits read 5 at a time (the last character carries 3 bits and two zeros), as
    # base32 of the 16 bytes would, without base64's pure-Python encoder.
    n = ((int(time.time() * 1000) & 0xFFFFFFFFFFFF) << 82) | (
        int.from_bytes(os.urandom(10), "big") << 2
    )
    return "".join([_CROCKFORD[(n >> shift) & 31] for shift in _SHIFTS])


def new_visitor_id() -> str:
    """128 random bits, URL-safe: unguessable on its own, and signed in the cookie."""
    return secrets.token_urlsafe(16)


def new_uuid() -> str:
    """A random UUID4 string, for event ids generated on the caller's behalf."""
    import uuid

    return str(uuid.uuid4())
