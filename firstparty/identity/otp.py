"""Phone verification by one-time code: `start` sends a code, `verify` checks it and links devices.

What is stored (table `otp_codes`, one row per code asked for): the phone's keyed hash
(`users.phone_key`), `HMAC(secret, otp_id || code)` (never the code; NULL when the provider makes
and checks codes), a keyed hash of the client address, the visitor (fp_id) that asked, the times,
and the tries. Tries are logged in `otp_attempts`. Rows older than two days are deleted, since no
limit looks further back.

Limits (docs/identity.md), counted in the database so they hold across processes:

    sends_per_hour, sends_per_day codes to every number together (spend caps; always on)
    sends_per_ip_per_hour         codes asked for from one address
    phones_per_ip_per_day         distinct numbers asked for from one address
    sends_per_visitor_per_hour    codes asked for by one browser (its fp_id visitor)
    sends_per_phone_per_hour      codes sent to one number
    resend_interval_seconds       wait before another code to the same number, doubling with
                                  each send in the last hour (30 s, 60 s, 120 s, ...; at most 1 h)
    verifies_per_ip_per_hour      codes tried from one address
    verifies_per_phone_per_hour   codes tried for one number
    max_attempts                  wrong tries per code, after which it is dead
    allowed_countries, line_types where codes may go at all (a 422, not a limit)

Every limit hit is a 429 whose Retry-After is the time until the binding limit (the one that
frees last) lets a request through, and each refusal is counted by `Refusal` in
firstparty_otp_refused_total. An address is the client's IPv4 address, or its /64 network for
IPv6 (one host owns a whole /64); a server source's backend has none (`ip=None`: only the limits
that are not per address apply). A failed or refused send still counts against the limits. Only
the newest code sent to a number can be checked: asking for a new one invalidates the previous
one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import ipaddress
import math
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import phonenumbers
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty import ids, metrics
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


def count_refusal(reason: Refusal) -> None:
    metrics.OTP_REFUSED.labels(reason.value).inc()


@dataclass(frozen=True)
class Started:
    """A code is on its way: valid `expires_in` s; another may be asked after `resend_after` s."""

    expires_in: int
    resend_after: int


@dataclass(frozen=True)
class Verified:
    user_id: str
    visitor_id: str | None  # None: a server source's call naming no visitor


@dataclass(frozen=True)
class _Hit:
    """A limit reached: why, and how long until it lets a request through."""

    reason: Refusal
    message: str
    wait: timedelta
    then: str = "try again"


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
    visitor_id: str | None,
    now: Clock = utcnow,
) -> Started:
    """Check the limits, record and send a new code. Same answer for known and unknown numbers.

    `ip` and `visitor_id` are None when the caller has none (a server source's backend): the
    limits on them are then not counted."""
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
        "visitor_id": visitor_id,
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
    visitor_id: str | None,
    now: Clock = utcnow,
) -> Verified:
    """Check the code; on success the phone's user (created if new) gets this visitor (if any)."""
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
    _check_country(number, otp.countries)
    _check_line(number, otp.line_types)
    return e164


def _check_country(number: phonenumbers.PhoneNumber, countries: frozenset[str] | None) -> None:
    region = phonenumbers.region_code_for_number(number) or "unknown"
    if countries is not None and region not in countries:
        served = ", ".join(sorted(countries))
        _unserved(Refusal.COUNTRY, f"is a number in {region}; codes go to numbers in {served} only")


def _check_line(number: phonenumbers.PhoneNumber, line_types: Sequence[str]) -> None:
    line = LINE_TYPES.get(phonenumbers.number_type(number), "unknown")
    if line not in line_types:
        message = f"is a {line.replace('_', ' ')} number, which cannot receive codes here"
        _unserved(Refusal.LINE_TYPE, message)


def _unserved(reason: Refusal, message: str) -> NoReturn:
    """422 on `phone`: a number no code goes to (not a limit: waiting does not help)."""
    count_refusal(reason)
    raise InputError(422, "invalid phone", [FieldError("phone", message)])


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
        sent, last = _sent_to(conn, row["phone_key"], t)
        hits = [*_send_limits(conn, otp, row, t), _resend(sent, last, t, otp)]
        _refuse_any(hits, "phone")
        conn.execute(sa.insert(otp_codes).values(**row))
    return _wait_after(sent + 1, otp.resend_interval_seconds)


def _send_limits(
    conn: Connection, otp: OtpSettings, row: dict[str, Any], t: datetime
) -> Iterator[_Hit | None]:
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
) -> _Hit | None:
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
    return _Hit(reason, MESSAGES[reason], freeing + window - t)


def _phones_over(conn: Connection, row: dict[str, Any], t: datetime, most: int) -> _Hit | None:
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
    return _Hit(Refusal.PHONES_PER_IP, message, lasts[len(lasts) - most] + DAY - t)


def _sent_to(conn: Connection, key: str, t: datetime) -> tuple[int, datetime | None]:
    """How many codes went to this number in the last hour, and when the last one did."""
    sent, last = conn.execute(
        sa.select(sa.func.count(), sa.func.max(otp_codes.c.created_at)).where(
            otp_codes.c.phone_key == key, otp_codes.c.created_at > t - HOUR
        )
    ).one()
    return int(sent or 0), last


def _resend(sent: int, last: datetime | None, t: datetime, otp: OtpSettings) -> _Hit | None:
    """A hit when the last code to this number is too recent for another."""
    if not sent or last is None:
        return None
    wait = last + timedelta(seconds=_wait_after(sent, otp.resend_interval_seconds)) - t
    if wait <= timedelta(0):
        return None
    return _Hit(Refusal.RESEND_WAIT, "a code was sent to this number moments ago", wait)


def _wait_after(sent: int, base: int) -> int:
    """Seconds before another code, after `sent` codes this hour: base, doubling each time."""
    if sent <= 0:
        return 0
    return min(base << (sent - 1), MAX_RESEND_WAIT)


def _refuse_any(hits: list[_Hit | None], field: str) -> None:
    """429 for the hit that frees last (retrying sooner would meet it), if any."""
    found = [hit for hit in hits if hit is not None]
    if found:
        _refuse(max(found, key=lambda hit: hit.wait), field)


def _refuse(hit: _Hit, field: str) -> NoReturn:
    """429 with Retry-After: the whole seconds until `hit` frees (at least 1), counted."""
    seconds = max(1, math.ceil(hit.wait.total_seconds()))
    count_refusal(hit.reason)
    raise InputError(
        429,
        hit.message,
        [FieldError(field, f"{hit.message}; {hit.then} in {seconds} s")],
        {"Retry-After": str(seconds)},
    )


def _mark_sent(engine: Engine, otp_id: str, t: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(otp_codes).where(otp_codes.c.id == otp_id).values(sent_at=t))


def _take_try(engine: Engine, otp: OtpSettings, key: str, ip: str | None, t: datetime) -> _Code:
    """Count one try against the newest sent code of this number, or refuse (410/429)."""
    with _serialised(engine) as conn:
        _refuse_any(list(_try_limits(conn, otp, key, ip, t)), "code")
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
            _refuse(_dead(conn, otp, key, t), "code")
        conn.execute(
            sa.update(otp_codes).where(otp_codes.c.id == row.id).values(attempts=row.attempts + 1)
        )
        conn.execute(sa.insert(otp_attempts).values(phone_key=key, ip=ip, created_at=t))
    return _Code(row.id, row.code_hash, row.attempts + 1)


def _try_limits(
    conn: Connection, otp: OtpSettings, key: str, ip: str | None, t: datetime
) -> Iterator[_Hit | None]:
    """Every limit on tries that applies, each checked (a hit or None)."""
    if ip is not None:
        by_ip = otp_attempts.c.ip == ip
        most = otp.verifies_per_ip_per_hour
        yield _over(conn, otp_attempts, by_ip, t, HOUR, most, Refusal.VERIFIES_PER_IP)
    by_phone = otp_attempts.c.phone_key == key
    most = otp.verifies_per_phone_per_hour
    yield _over(conn, otp_attempts, by_phone, t, HOUR, most, Refusal.VERIFIES_PER_PHONE)


def _dead(conn: Connection, otp: OtpSettings, key: str, t: datetime) -> _Hit:
    """A code past max_attempts: waiting until a new code may be asked for this number."""
    sent, last = _sent_to(conn, key, t)
    by_phone = otp_codes.c.phone_key == key
    most = otp.sends_per_phone_per_hour
    blocking = [
        _resend(sent, last, t, otp),
        _over(conn, otp_codes, by_phone, t, HOUR, most, Refusal.PER_PHONE),
    ]
    wait = max((hit.wait for hit in blocking if hit is not None), default=timedelta(0))
    return _Hit(Refusal.DEAD_CODE, "too many wrong codes", wait, then="request a new code")


def _use(
    engine: Engine, otp_id: str, secret: str, e164: str, visitor_id: str | None, t: datetime
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
        if visitor_id is not None:
            users.link_visitor(conn, visitor_id=visitor_id, user_id=user_id, now=t)
    return Verified(user_id=user_id, visitor_id=visitor_id)
