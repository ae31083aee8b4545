"""A failure nobody anticipated: one log line with an error id, counted, the id answered.

One line, not a traceback: a 5 kB multi-line trace per 31-byte request floods the log and is
split apart by log shippers. The line carries the exception and its innermost frames (where a
bug is found), innermost first; the caller gets the same id to quote in a report.
"""

from __future__ import annotations

import logging
import secrets
import traceback

from firstparty import metrics

log = logging.getLogger("firstparty.crash")
FRAMES = 6


def record(exc: BaseException, *, where: str) -> str:
    """Log `exc` on one line under a new error id, count it, and return the id."""
    error_id = secrets.token_hex(6)
    log.error("error %s on %s: %s", error_id, where, compact(exc))
    metrics.INTERNAL_ERRORS.labels(type(exc).__name__).inc()
    return error_id


def compact(exc: BaseException) -> str:
    """`Type: message | at file:line in function < ...`, innermost frame first, bounded."""
    message = " ".join(str(exc).split())[:300]
    frames = traceback.extract_tb(exc.__traceback__)[-FRAMES:]
    where = " < ".join(f"{_short(f.filename)}:{f.lineno} in {f.name}" for f in reversed(frames))
    return f"{type(exc).__name__}: {message} | at {where or '?'}"


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/firstparty/"):
        if marker in path:
            head = "firstparty/" if marker == "/firstparty/" else ""
            return head + path.rsplit(marker, 1)[1]
    return path.rsplit("/", 1)[-1]
