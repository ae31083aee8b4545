"""Identifiers: time-ordered row ids and random visitor ids."""

from __future__ import annotations

import base64
import os
import secrets
import time

# RFC 4648 base32 letters -> Crockford's, whose order is ASCII order: ids sort as they encode.
_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def new_id() -> str:
    """26 characters: 48 bits of milliseconds then 80 random bits, sortable by time."""
    raw = int(time.time() * 1000).to_bytes(6, "big") + os.urandom(10)
    return base64.b32encode(raw).decode()[:26].translate(_CROCKFORD)


def new_visitor_id() -> str:
    """128 random bits, URL-safe: unguessable on its own, and signed in the cookie."""
    return secrets.token_urlsafe(16)


def new_uuid() -> str:
    """A random UUID4 string, for event ids generated on the caller's behalf."""
    import uuid

    return str(uuid.uuid4())
