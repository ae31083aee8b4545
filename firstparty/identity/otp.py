"""Phone verification by one-time code: `start` sends a code, `verify` checks it and links devices.

What is stored (table `otp_codes`, one row per code asked for): the phone's keyed hash
(`users.phone_key`), `HMAC(secret, otp_id || code)` (never the code; NULL when the provider makes
and checks codes), a keyed hash of the client address, the times, and the tries. Tries are
logged in `otp_attempts`. Rows older than two days are deleted, since no limit looks further back.

Limits (docs/identity.md), counted in the database so they hold across processes:

    sends_per_day                 every number together (a spend cap; off by default)
    sends_per_ip_per_hour         codes asked for from one address
    phones_per_ip_per_day         distinct numbers asked for from one address
    sends_per_phone_per_hour      codes sent to one number
    resend_interval_seconds       wait before another code to the same number, doubling with
                                  each send in the last hour (30 s, 60 s, 120 s, ...; at most 1 h)
    verifies_per_ip_per_hour      codes tried from one address
    verifies_per_phone_per_hour   codes tried for one number
    max_attempts                  wrong tries per code, after which it is dead

An address is the client's IPv4 address, or its /64 network for IPv6 (one host owns a whole /64).
A failed or refused send still counts against the limits. Only the newest code sent to a number
can be checked: asking for a new one invalidates the previous one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import math
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import phonenumbers
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty import ids
from firstparty.errors import FieldError, InputError
from firstparty.identity import pii, sms, users
from firstparty.settings import OtpSettings, Settings
from firstparty.store.models import otp_attempts, otp_codes

Clock = Callable[[], datetime]
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
KEEP = timedelta(days=2)
MAX_RESEND_WAIT = 3600
VERIFY_TTL_CAP = 600  # Twilio Verify forgets a verification after 10 minutes
LINE_TYPES = {
    phonenumbers.PhoneNumberType.MOBILE: "mobile",
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile",
    phonenumbers.PhoneNumberType.FIXED_LINE: "fixed_line",
    phonenumbers.PhoneNumberType.VOIP: "voip",
    phonenumbers.PhoneNumberType.PERSONAL_NUMBER: "personal_number",
    phonenumbers.PhoneNumberType.TOLL_FREE: "toll_free",
    phonenumbers.PhoneNumberType.PREMIUM_RATE: "premium_rate",
    phonenumbers.PhoneNumberType.SHARED_COST: "shared_cost",
    phonenumbers.PhoneNumberType.PAGER: "pager",
    phonenumbers.PhoneNumberType.UAN: "uan",
    phonenumbers.PhoneNumberType.VOICEMAIL: "voicemail",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Started:
    """A code is on its way: valid `expires_in` s; another may be asked after `resend_after` s."""

    expires_in: int
    resend_after: int


@dataclass(frozen=True)
class Verified:
    user_id: str
    visitor_id: str


@dataclass(frozen=True)
class _Code:
    id: str
    code_hash: str | None
    attempts: int


# ---------------------------------------------------------------- the two service functions


async def start(
    *,
    engine: Engine,
    settings: Settings,
    provider: sms.Provider,
    phone: str,
    ip: str | None,
    now: Clock = utcnow,
) -> Started:
    """Check the limits, record and send a new code. Same answer for known and unknown numbers."""
    otp = settings.otp
    e164 = normalise(phone, otp)
    secret = settings.secret_key.get_secret_value()
    code = None if provider.makes_codes else new_code(otp.code_length)
    otp_id = ids.new_id()
    t = now()
    row = {
        "id": otp_id,
        "phone_key": users.phone_key(secret, e164),
        "code_hash": None if code is None else code_hash(secret, otp_id, code),
        "created_at": t,
        "expires_at": t + timedelta(seconds=_ttl(otp, provider)),
        "attempts": 0,
        "used_at": None,
        "ip": ip_key(secret, ip),
        "sent_at": None,
    }
    resend_after = await asyncio.to_thread(_reserve, engine, otp, row)
    await provider.send(phone=e164, code=code)
    await asyncio.to_thread(_mark_sent, engine, otp_id, now())
    return Started(expires_in=_ttl(otp, provider), resend_after=resend_after)


async def verify(
    *,
    engine: Engine,
    settings: Settings,
    provider: sms.Provider,
    phone: str,
    code: str,
    ip: str | None,
    visitor_id: str,
    now: Clock = utcnow,
) -> Verified:
    """Check the code; on success the phone's user (created if new) gets this visitor."""
    otp = settings.otp
    e164 = normalise(phone, otp)
    code = _clean_code(code)
    secret = settings.secret_key.get_secret_value()
    key = users.phone_key(secret, e164)
    found = await asyncio.to_thread(_take_try, engine, otp, key, ip_key(secret, ip), now())
    if provider.makes_codes:
        right = await provider.check(phone=e164, code=code)
    else:
        right = found.code_hash is not None and hmac.compare_digest(
            found.code_hash, code_hash(secret, found.id, code)
        )
    if not right:
        left = otp.max_attempts - found.attempts
        message = f"wrong code; {left} attempt{'s' if left != 1 else ''} left"
        if left == 0:
            message += "; request a new code"
        raise InputError(422, "wrong code", [FieldError("code", message)])
    return await asyncio.to_thread(_use, engine, found.id, secret, e164, visitor_id, now())


# ---------------------------------------------------------------- values


def normalise(raw: str, otp: OtpSettings) -> str:
    """ "+E.164" for a number we may send SMS to, else 422 naming `phone`."""
    try:
        e164 = pii.normalise_phone(raw, otp.default_region)
    except pii.InvalidValue as exc:
        raise InputError(422, "invalid phone", [FieldError("phone", str(exc))]) from None
    number = phonenumbers.parse(e164)
    region = phonenumbers.region_code_for_number(number)
    if otp.allowed_countries and region not in otp.allowed_countries:
        raise InputError(
            422,
            "invalid phone",
            [FieldError("phone", "is in a country this service does not serve")],
        )
    line = LINE_TYPES.get(phonenumbers.number_type(number), "unknown")
    if line not in otp.line_types:
        message = f"is a {line.replace('_', ' ')} number, which cannot receive codes here"
        raise InputError(422, "invalid phone", [FieldError("phone", message)])
    return e164


def new_code(length: int) -> str:
    """A random numeric code of `length` digits (leading zeros kept)."""
    return str(secrets.randbelow(10**length)).zfill(length)


def code_hash(secret: str, otp_id: str, code: str) -> str:
    """What is stored of a code: HMAC(secret, otp_id || code); the id is fixed-length."""
    return pii.keyed_hash(secret, otp_id + code)


def ip_key(secret: str, ip: str | None) -> str | None:
    """Keyed hash of the client's address: IPv4 as is, IPv6 by its /64 network."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return pii.keyed_hash(secret, "ip:" + ip)
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        bucket = str(mapped) if mapped else str(ipaddress.ip_network(f"{address}/64", strict=False))
    else:
        bucket = str(address)
    return pii.keyed_hash(secret, "ip:" + bucket)


def _clean_code(raw: str) -> str:
    code = raw.strip().replace(" ", "").replace("-", "")
    if not code.isdigit() or not 4 <= len(code) <= 10:
        raise InputError(422, "invalid code", [FieldError("code", "must be 4 to 10 digits")])
    return code


def _ttl(otp: OtpSettings, provider: sms.Provider) -> int:
    return min(otp.ttl_seconds, VERIFY_TTL_CAP) if provider.makes_codes else otp.ttl_seconds


# ---------------------------------------------------------------- database steps (in a thread)


@contextlib.contextmanager
def _serialised(engine: Engine) -> Iterator[Connection]:
    """A transaction that no other OTP transaction runs beside, so counts cannot race."""
    with engine.connect() as conn:
        mysql = conn.dialect.name in ("mysql", "mariadb")
        if mysql:
            # MySQL's named lock belongs to the session: taken before, released after the commit.
            got = conn.execute(sa.text("SELECT GET_LOCK('firstparty_otp', 10)")).scalar()
            conn.commit()
            if got != 1:
                raise RuntimeError("could not take the OTP lock within 10 s")
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(7406235001)"))
                # SQLite: BEGIN IMMEDIATE already makes this the only writer.
                yield conn
        finally:
            if mysql:
                conn.execute(sa.text("SELECT RELEASE_LOCK('firstparty_otp')"))
                conn.commit()


def _reserve(engine: Engine, otp: OtpSettings, row: dict[str, Any]) -> int:
    """Refuse with 429 when a send limit is hit; else record the code. Returns the next wait."""
    t: datetime = row["created_at"]
    with _serialised(engine) as conn:
        conn.execute(sa.delete(otp_codes).where(otp_codes.c.created_at < t - KEEP))
        conn.execute(sa.delete(otp_attempts).where(otp_attempts.c.created_at < t - KEEP))
        if otp.sends_per_day is not None:
            _limit(conn, otp_codes, sa.true(), t, DAY, otp.sends_per_day, "codes sent today")
        if row["ip"] is not None:
            by_ip = otp_codes.c.ip == row["ip"]
            _limit(conn, otp_codes, by_ip, t, HOUR, otp.sends_per_ip_per_hour, "codes asked")
            _limit_phones(conn, row, t, otp.phones_per_ip_per_day)
        by_phone = otp_codes.c.phone_key == row["phone_key"]
        _limit(conn, otp_codes, by_phone, t, HOUR, otp.sends_per_phone_per_hour, "codes sent")
        sent = _resend_wait(conn, row["phone_key"], t, otp.resend_interval_seconds)
        conn.execute(sa.insert(otp_codes).values(**row))
    return _wait_after(sent + 1, otp.resend_interval_seconds)


def _limit(
    conn: Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    t: datetime,
    window: timedelta,
    most: int,
    what: str,
) -> None:
    """429 when `most` rows matching `where` fall within `window` before `t`."""
    count, oldest = conn.execute(
        sa.select(sa.func.count(), sa.func.min(table.c.created_at)).where(
            where, table.c.created_at > t - window
        )
    ).one()
    if count >= most:
        _too_many(f"too many {what}", oldest + window - t)


def _limit_phones(conn: Connection, row: dict[str, Any], t: datetime, most: int) -> None:
    """429 when this address already asked codes for `most` other numbers today."""
    others = (
        sa.select(otp_codes.c.phone_key, sa.func.min(otp_codes.c.created_at).label("first"))
        .where(
            otp_codes.c.ip == row["ip"],
            otp_codes.c.created_at > t - DAY,
            otp_codes.c.phone_key != row["phone_key"],
        )
        .group_by(otp_codes.c.phone_key)
    )
    firsts = [r.first for r in conn.execute(others)]
    if len(firsts) >= most:
        _too_many("too many phone numbers from this address", min(firsts) + DAY - t)


def _resend_wait(conn: Connection, key: str, t: datetime, base: int) -> int:
    """429 when the last code to this number is too recent; else how many went out this hour."""
    sent, last = conn.execute(
        sa.select(sa.func.count(), sa.func.max(otp_codes.c.created_at)).where(
            otp_codes.c.phone_key == key, otp_codes.c.created_at > t - HOUR
        )
    ).one()
    if sent:
        wait = timedelta(seconds=_wait_after(sent, base))
        if t - last < wait:
            _too_many("a code was sent to this number moments ago", last + wait - t)
    return int(sent or 0)


def _wait_after(sent: int, base: int) -> int:
    """Seconds before another code, after `sent` codes this hour: base, doubling each time."""
    if sent <= 0:
        return 0
    return min(base << (sent - 1), MAX_RESEND_WAIT)


def _too_many(message: str, wait: timedelta) -> NoReturn:
    seconds = max(1, math.ceil(wait.total_seconds()))
    raise InputError(
        429,
        message,
        [FieldError("phone", f"{message}; try again in {seconds} seconds")],
        {"Retry-After": str(seconds)},
    )


def _mark_sent(engine: Engine, otp_id: str, t: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(otp_codes).where(otp_codes.c.id == otp_id).values(sent_at=t))


def _take_try(engine: Engine, otp: OtpSettings, key: str, ip: str | None, t: datetime) -> _Code:
    """Count one try against the newest sent code of this number, or refuse (410/429)."""
    with _serialised(engine) as conn:
        if ip is not None:
            by_ip = otp_attempts.c.ip == ip
            _limit(conn, otp_attempts, by_ip, t, HOUR, otp.verifies_per_ip_per_hour, "tries")
        by_phone = otp_attempts.c.phone_key == key
        _limit(conn, otp_attempts, by_phone, t, HOUR, otp.verifies_per_phone_per_hour, "tries")
        row = conn.execute(
            sa.select(otp_codes)
            .where(otp_codes.c.phone_key == key, otp_codes.c.sent_at.is_not(None))
            .order_by(otp_codes.c.sent_at.desc(), otp_codes.c.id.desc())
            .limit(1)
        ).first()
        if row is None:
            raise InputError(410, "no code", [FieldError("code", "no code sent; request one")])
        if row.used_at is not None:
            raise InputError(
                410, "code used", [FieldError("code", "already used; request a new code")]
            )
        if t >= row.expires_at:
            raise InputError(
                410, "code expired", [FieldError("code", "expired; request a new code")]
            )
        if row.attempts >= otp.max_attempts:
            raise InputError(
                429,
                "too many wrong codes",
                [FieldError("code", "too many wrong codes; request a new code")],
                {"Retry-After": str(max(1, otp.resend_interval_seconds))},
            )
        conn.execute(
            sa.update(otp_codes).where(otp_codes.c.id == row.id).values(attempts=row.attempts + 1)
        )
        conn.execute(sa.insert(otp_attempts).values(phone_key=key, ip=ip, created_at=t))
    return _Code(row.id, row.code_hash, row.attempts + 1)


def _use(
    engine: Engine, otp_id: str, secret: str, e164: str, visitor_id: str, t: datetime
) -> Verified:
    """Spend the code (once only), then find or create the user and link the visitor."""
    with engine.begin() as conn:
        spent = conn.execute(
            sa.update(otp_codes)
            .where(otp_codes.c.id == otp_id, otp_codes.c.used_at.is_(None))
            .values(used_at=t)
        )
        if spent.rowcount != 1:
            raise InputError(
                410, "code used", [FieldError("code", "already used; request a new code")]
            )
        user_id = users.ensure(conn, secret=secret, e164=e164, now=t)
        users.link_visitor(conn, visitor_id=visitor_id, user_id=user_id, now=t)
    return Verified(user_id=user_id, visitor_id=visitor_id)
