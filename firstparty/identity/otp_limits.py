"""The limits on one-time codes (identity/otp.py), counted in `otp_codes` and `otp_attempts`.

    sends_per_hour, sends_per_day codes to every number together (spend caps; always on)
    sends_per_ip_per_hour         codes asked for from one address
    phones_per_ip_per_day         distinct numbers asked for from one address (a number stops
                                  counting a day after its last code from there)
    sends_per_visitor_per_hour    codes asked for by one browser (its fp_id visitor)
    sends_per_phone_per_hour      codes sent to one number
    resend_interval_seconds       wait before another code to the same number, doubling with
                                  each send in the last hour (30 s, 60 s, 120 s, ...; at most 1 h)
    verifies_per_ip_per_hour      codes tried from one address
    verifies_per_phone_per_hour   codes tried for one number
    max_attempts                  wrong tries per code, after which it is dead

Each is a sliding window over stored times. A check answers a `Hit` (why, and how long until the
limit lets one more request through) or None; when any hits, the request is refused with a 429
whose Retry-After is the hit that frees last (retrying sooner would only meet it), and counted by
`Refusal` in firstparty_otp_refused_total. A caller without an address or a visitor (`None`: a
server source's backend) is not counted by the limits on them. The callers run these inside one
serialised transaction (otp._serialised), so concurrent requests cannot slip past a limit.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from firstparty import metrics
from firstparty.errors import FieldError, InputError
from firstparty.settings import OtpSettings
from firstparty.store.models import otp_attempts, otp_codes

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MAX_RESEND_WAIT = 3600


class Refusal(enum.StrEnum):
    """Why a code was not sent or not checked: the `reason` of firstparty_otp_refused_total."""

    PER_PHONE = "per_phone"
    RESEND_WAIT = "resend_wait"
    PER_IP = "per_ip"
    PHONES_PER_IP = "phones_per_ip"
    PER_VISITOR = "per_visitor"
    GLOBAL_HOUR = "global_hour"
    GLOBAL_DAY = "global_day"
    COUNTRY = "country"  # 422: a number in a country not served
    LINE_TYPE = "line_type"  # 422: a line type that gets no codes
    VERIFIES_PER_IP = "verifies_per_ip"
    VERIFIES_PER_PHONE = "verifies_per_phone"
    DEAD_CODE = "dead_code"  # max_attempts wrong tries
    RATE_LIMIT = "rate_limit"  # the write key's per-process rate limits (api/collect.py)


def count(reason: Refusal) -> None:
    metrics.OTP_REFUSED.labels(reason.value).inc()


@dataclass(frozen=True)
class Hit:
    """A limit reached: why, and how long until it lets a request through."""

    reason: Refusal
    message: str
    wait: timedelta
    then: str = "try again"


# ---------------------------------------------------------------- what otp.py calls


def check_send(conn: Connection, otp: OtpSettings, row: dict[str, Any], t: datetime) -> int:
    """429 when a send limit holds this code row back; else the codes sent to its number in the
    last hour."""
    sent, last = sent_to(conn, row["phone_key"], t)
    _refuse_any([*_sends(conn, otp, row, t), _resend(sent, last, t, otp)], "phone")
    return sent


def check_try(conn: Connection, otp: OtpSettings, key: str, ip: str | None, t: datetime) -> None:
    """429 when a limit on tries holds this one back."""
    _refuse_any(list(_tries(conn, otp, key, ip, t)), "code")


def refuse_dead_code(conn: Connection, otp: OtpSettings, key: str, t: datetime) -> NoReturn:
    """429 for a code past max_attempts, until a new code may be asked for its number."""
    _refuse(_dead(conn, otp, key, t), "code")


# ---------------------------------------------------------------- the checks


def _sends(
    conn: Connection, otp: OtpSettings, row: dict[str, Any], t: datetime
) -> Iterator[Hit | None]:
    """Every send limit that applies to this row, each checked (a hit or None)."""
    c = otp_codes.c
    yield _over(conn, otp_codes, sa.true(), t, HOUR, otp.sends_per_hour, Refusal.GLOBAL_HOUR)
    yield _over(conn, otp_codes, sa.true(), t, DAY, otp.sends_per_day, Refusal.GLOBAL_DAY)
    if row["ip"] is not None:
        by_ip = c.ip == row["ip"]
        yield _over(conn, otp_codes, by_ip, t, HOUR, otp.sends_per_ip_per_hour, Refusal.PER_IP)
        yield _phones_over(conn, row, t, otp.phones_per_ip_per_day)
    if row["visitor_id"] is not None:
        by_visitor = c.visitor_id == row["visitor_id"]
        most = otp.sends_per_visitor_per_hour
        yield _over(conn, otp_codes, by_visitor, t, HOUR, most, Refusal.PER_VISITOR)
    by_phone = c.phone_key == row["phone_key"]
    yield _over(conn, otp_codes, by_phone, t, HOUR, otp.sends_per_phone_per_hour, Refusal.PER_PHONE)


MESSAGES = {
    Refusal.GLOBAL_HOUR: "this service sent all the codes it may send this hour",
    Refusal.GLOBAL_DAY: "this service sent all the codes it may send today",
    Refusal.PER_IP: "too many codes asked from this address",
    Refusal.PER_VISITOR: "too many codes asked from this browser",
    Refusal.PER_PHONE: "too many codes sent to this number",
    Refusal.VERIFIES_PER_IP: "too many codes tried from this address",
    Refusal.VERIFIES_PER_PHONE: "too many codes tried for this number",
}


def _over(
    conn: Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    t: datetime,
    window: timedelta,
    most: int,
    reason: Refusal,
) -> Hit | None:
    """A hit when `most` rows matching `where` fall within `window` before `t`; its wait is
    until enough of them have left the window for one more."""
    recent = sa.and_(where, table.c.created_at > t - window)
    count = conn.execute(sa.select(sa.func.count()).select_from(table).where(recent)).scalar_one()
    if count < most:
        return None
    freeing = conn.execute(
        sa.select(table.c.created_at)
        .where(recent)
        .order_by(table.c.created_at)
        .offset(count - most)
        .limit(1)
    ).scalar_one()
    return Hit(reason, MESSAGES[reason], freeing + window - t)


def _phones_over(conn: Connection, row: dict[str, Any], t: datetime, most: int) -> Hit | None:
    """A hit when this address already asked codes for `most` other numbers within a day; a
    number stops counting a day after its last code from here."""
    lasts = sorted(
        conn.execute(
            sa.select(sa.func.max(otp_codes.c.created_at))
            .where(
                otp_codes.c.ip == row["ip"],
                otp_codes.c.created_at > t - DAY,
                otp_codes.c.phone_key != row["phone_key"],
            )
            .group_by(otp_codes.c.phone_key)
        ).scalars()
    )
    if len(lasts) < most:
        return None
    message = "too many phone numbers from this address"
    return Hit(Refusal.PHONES_PER_IP, message, lasts[len(lasts) - most] + DAY - t)


def sent_to(conn: Connection, key: str, t: datetime) -> tuple[int, datetime | None]:
    """How many codes went to this number in the last hour, and when the last one did."""
    sent, last = conn.execute(
        sa.select(sa.func.count(), sa.func.max(otp_codes.c.created_at)).where(
            otp_codes.c.phone_key == key, otp_codes.c.created_at > t - HOUR
        )
    ).one()
    return int(sent or 0), last


def _resend(sent: int, last: datetime | None, t: datetime, otp: OtpSettings) -> Hit | None:
    """A hit when the last code to this number is too recent for another."""
    if not sent or last is None:
        return None
    wait = last + timedelta(seconds=wait_after(sent, otp.resend_interval_seconds)) - t
    if wait <= timedelta(0):
        return None
    return Hit(Refusal.RESEND_WAIT, "a code was sent to this number moments ago", wait)


def wait_after(sent: int, base: int) -> int:
    """Seconds before another code, after `sent` codes this hour: base, doubling each time."""
    if sent <= 0:
        return 0
    return min(base << (sent - 1), MAX_RESEND_WAIT)


def _refuse_any(hits: list[Hit | None], field: str) -> None:
    """429 for the hit that frees last (retrying sooner would meet it), if any."""
    found = [hit for hit in hits if hit is not None]
    if found:
        _refuse(max(found, key=lambda hit: hit.wait), field)


def _refuse(hit: Hit, field: str) -> NoReturn:
    """429 with Retry-After: the whole seconds until `hit` frees (at least 1), counted."""
    seconds = max(1, math.ceil(hit.wait.total_seconds()))
    count(hit.reason)
    raise InputError(
        429,
        hit.message,
        [FieldError(field, f"{hit.message}; {hit.then} in {seconds} s")],
        {"Retry-After": str(seconds)},
    )


def _tries(
    conn: Connection, otp: OtpSettings, key: str, ip: str | None, t: datetime
) -> Iterator[Hit | None]:
    """Every limit on tries that applies, each checked (a hit or None)."""
    if ip is not None:
        by_ip = otp_attempts.c.ip == ip
        most = otp.verifies_per_ip_per_hour
        yield _over(conn, otp_attempts, by_ip, t, HOUR, most, Refusal.VERIFIES_PER_IP)
    by_phone = otp_attempts.c.phone_key == key
    most = otp.verifies_per_phone_per_hour
    yield _over(conn, otp_attempts, by_phone, t, HOUR, most, Refusal.VERIFIES_PER_PHONE)


def _dead(conn: Connection, otp: OtpSettings, key: str, t: datetime) -> Hit:
    """A code past max_attempts: waiting until a new code may be asked for this number."""
    sent, last = sent_to(conn, key, t)
    by_phone = otp_codes.c.phone_key == key
    most = otp.sends_per_phone_per_hour
    blocking = [
        _resend(sent, last, t, otp),
        _over(conn, otp_codes, by_phone, t, HOUR, most, Refusal.PER_PHONE),
    ]
    wait = max((hit.wait for hit in blocking if hit is not None), default=timedelta(0))
    return Hit(Refusal.DEAD_CODE, "too many wrong codes", wait, then="request a new code")
