"""Identifiers: time-ordered row ids and random visitor ids."""

from __future__ import annotations

import os
import secrets
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id() -> str:
    """A 26-character ULID: 48 bits of milliseconds then 80 random bits, sortable by time."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, rest = divmod(value, 32)
        chars.append(_CROCKFORD[rest])
    return "".join(reversed(chars))


def new_visitor_id() -> str:
    """128 random bits, URL-safe: unguessable on its own, and signed in the cookie."""
    return secrets.token_urlsafe(16)


def new_uuid() -> str:
    """A random UUID4 string, for event ids generated on the caller's behalf."""
    import uuid

    return str(uuid.uuid4())
