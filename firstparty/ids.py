"""Identifiers: time-ordered row ids and random visitor ids."""

from __future__ import annotations

import base64
import os
import threading
import time

# Crockford's base32, whose order is ASCII order: ids sort as they encode.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_SHIFTS = tuple(range(120, -1, -10))
# Two characters per 10 bits: half the lookups of one character per 5.
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
# Bytes read from the system's generator at a time, per thread (`random_bytes`).
BLOCK_BYTES = 4096


class _Pool(threading.local):
    def __init__(self) -> None:
        self.raw = b""
        self.at = 0


_pool = _Pool()


def _forget() -> None:
    _pool.raw, _pool.at = b"", 0


# A forked child never hands out the bytes its parent will.
os.register_at_fork(after_in_child=_forget)


def random_bytes(n: int) -> bytes:
    """`n` bytes of os.urandom, read BLOCK_BYTES at a time by each thread. Every os.urandom call
    lets go of the GIL, and the event loop then waits for whichever thread took it: under
    bench/growth's load at 5,000,000 events on SQLite (py-spy, blocking, the server pinned to
    one core) the event loop stood in `new_id`'s os.urandom in 10 % of the busy samples.
    bench/ingest (SQLite, two pairs): p99 at 1,000 events/s 30.7-34.8 -> 25.2-25.7 ms."""
    pool = _pool
    start = pool.at
    if start + n > len(pool.raw):
        pool.raw, start = os.urandom(max(BLOCK_BYTES, n)), 0
    pool.at = start + n
    return pool.raw[start : start + n]


def new_id() -> str:
    """26 characters: 48 bits of milliseconds then 80 random bits, sortable by time."""
    # The 128 bits read 5 at a time (the last character carries 3 bits and two zeros), as
    # base32 of the 16 bytes would, without base64's pure-Python encoder; 10 bits a lookup.
    n = ((int(time.time() * 1000) & 0xFFFFFFFFFFFF) << 82) | (
        int.from_bytes(random_bytes(10), "big") << 2
    )
    return "".join([_PAIRS[(n >> shift) & 1023] for shift in _SHIFTS])


def new_visitor_id() -> str:
    """128 random bits, URL-safe: unguessable on its own, and signed in the cookie (the text
    `secrets.token_urlsafe(16)` gives)."""
    return base64.urlsafe_b64encode(random_bytes(16)).rstrip(b"=").decode("ascii")


def new_uuid() -> str:
    """A random UUID4 string, for event ids generated on the caller's behalf.

    The text `str(uuid.uuid4())` gives, without building the UUID object (hot path).
    """
    raw = bytearray(random_bytes(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
