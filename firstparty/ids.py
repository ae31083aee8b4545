"""Identifiers: time-ordered row ids and random visitor ids."""

from __future__ import annotations

import os
import secrets
import time

# Crockford's base32, whose order is ASCII order: ids sort as they encode.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_SHIFTS = tuple(range(120, -1, -10))
# Two characters per 10 bits: half the lookups of one character per 5.
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)


def new_id() -> str:
    """26 characters: 48 bits of milliseconds then 80 random bits, sortable by time."""
    # The 128 bits read 5 at a time (the last character carries 3 bits and two zeros), as
    # base32 of the 16 bytes would, without base64's pure-Python encoder; 10 bits a lookup.
    n = ((int(time.time() * 1000) & 0xFFFFFFFFFFFF) << 82) | (
        int.from_bytes(os.urandom(10), "big") << 2
    )
    return "".join([_PAIRS[(n >> shift) & 1023] for shift in _SHIFTS])


def new_visitor_id() -> str:
    """128 random bits, URL-safe: unguessable on its own, and signed in the cookie."""
    return secrets.token_urlsafe(16)


def new_uuid() -> str:
    """A random UUID4 string, for event ids generated on the caller's behalf.

    The text `str(uuid.uuid4())` gives, without building the UUID object (hot path).
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
