"""Phone verification by one-time code: `start` sends a code, `verify` checks it and links devices.

What is stored (table `otp_codes`, one row per code asked for): the phone's keyed hash
(`users.phone_key`), `HMAC(secret, otp_id || code)` (never the code; NULL when the provider makes
and checks codes), a keyed hash of the client address, the visitor (fp_id) that asked, the times,
and the tries. Tries are logged in `otp_attempts`. Rows older than two days are deleted, since no
limit looks further back.

The limits (identity/otp_limits.py, docs/identity.md) are counted in the database, so they hold
across processes, in one serialised transaction with the code's own row. A code is answered the
same for known and unknown numbers. Only the newest code sent to a number can be checked: asking
for a new one invalidates the previous one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import phonenumbers
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty import ids
from firstparty.errors import FieldError, InputError
from firstparty.identity import otp_limits, pii, sms, users
from firstparty.settings import OtpSettings, Settings
from firstparty.store.models import otp_attempts, otp_codes

Clock = Callable[[], datetime]
KEEP = timedelta(days=2)
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
    visitor_id: str | None  # None: a server source's call naming no visitor


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
        message = f"is a number in {region}; codes go to numbers in {served} only"
        _unserved(otp_limits.Refusal.COUNTRY, message)


def _check_line(number: phonenumbers.PhoneNumber, line_types: Sequence[str]) -> None:
    line = LINE_TYPES.get(phonenumbers.number_type(number), "unknown")
    if line not in line_types:
        message = f"is a {line.replace('_', ' ')} number, which cannot receive codes here"
        _unserved(otp_limits.Refusal.LINE_TYPE, message)


def _unserved(reason: otp_limits.Refusal, message: str) -> NoReturn:
    """422 on `phone`: a number no code goes to (not a limit: waiting does not help)."""
    otp_limits.count(reason)
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
        sent = otp_limits.check_send(conn, otp, row, t)
        conn.execute(sa.insert(otp_codes).values(**row))
    return otp_limits.wait_after(sent + 1, otp.resend_interval_seconds)


def _mark_sent(engine: Engine, otp_id: str, t: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(otp_codes).where(otp_codes.c.id == otp_id).values(sent_at=t))


def _take_try(engine: Engine, otp: OtpSettings, key: str, ip: str | None, t: datetime) -> _Code:
    """Count one try against the newest sent code of this number, or refuse (410/429)."""
    with _serialised(engine) as conn:
        otp_limits.check_try(conn, otp, key, ip, t)
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
            otp_limits.refuse_dead_code(conn, otp, key, t)
        conn.execute(
            sa.update(otp_codes).where(otp_codes.c.id == row.id).values(attempts=row.attempts + 1)
        )
        conn.execute(sa.insert(otp_attempts).values(phone_key=key, ip=ip, created_at=t))
    return _Code(row.id, row.code_hash, row.attempts + 1)


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
