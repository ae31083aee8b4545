"""The admin API's and admin UI's query fields, checked before they reach a query.

Each function answers the value or raises a 422 `InputError` naming the field, so a malformed
time, limit, cursor or filter is the caller's error on every engine, never a database's 500.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from firstparty.collect import prepare
from firstparty.errors import FieldError, InputError

MAX_TEXT = 256
MAX_LIMIT = 1000
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
MAX_BIGINT = 2**63 - 1
_ROW_ID = re.compile(r"^[0-9A-Za-z_\-]{1,64}$")


def invalid(field: str, message: str) -> InputError:
    return InputError(422, "validation failed", [FieldError(field, message)])


def text(field: str, raw: object) -> str | None:
    """A filter value: a string of at most 256 characters without NUL or unpaired surrogates."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise invalid(field, "must be a string")
    if len(raw) > MAX_TEXT or "\x00" in raw or not _encodable(raw):
        raise invalid(field, f"must be text of at most {MAX_TEXT} characters, without NUL")
    return raw


def _encodable(raw: str) -> bool:
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def row_id(field: str, raw: object) -> str | None:
    """An id (an event's, a visitor's, a user's): letters, digits, `_` and `-`, at most 64."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not _ROW_ID.match(raw):
        raise invalid(field, "must be an id (letters, digits, _ and -, at most 64)")
    return raw


def track_cursor(raw: str | None) -> int | None:
    """The outgoing-request cursor: a positive whole number below 2^63."""
    if not raw:
        return None
    number = track_id(raw)
    if number is None:
        raise invalid("cursor", "must be the next_cursor of a previous page")
    return number


def track_id(raw: str) -> int | None:
    """An outgoing request's id (a positive whole number below 2^63), or None."""
    if raw.isascii() and raw.isdigit() and len(raw) <= 19 and 0 < int(raw) <= MAX_BIGINT:
        return int(raw)
    return None


def limit(raw: str | None, default: int = 50) -> int:
    """A page size from 1 to 1000."""
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= MAX_LIMIT):
        raise invalid("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def time(field: str, raw: object) -> datetime | None:
    """ISO 8601 or epoch seconds/milliseconds, from 1970 to 9998."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > 64:
        raise invalid(field, "must be an ISO 8601 time or epoch seconds")
    try:
        parsed = prepare.parse_timestamp(raw).astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        raise invalid(field, "must be an ISO 8601 time or epoch seconds") from None
    if not EARLIEST <= parsed < LATEST:
        raise invalid(field, "must be between 1970-01-01 and 9998-12-31")
    return parsed


def choice(field: str, raw: object, choices: tuple[str, ...]) -> str | None:
    """One of `choices`."""
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise invalid(field, "must be one of " + ", ".join(choices))
    return str(raw)
