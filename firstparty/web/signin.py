"""Admin sign-in guards kept in the database, so every server process applies them alike.

Growing delays: each try of the admin token (the sign-in form or a bearer token on the admin API)
or of an operator's password is first recorded as a failure of its client address (a keyed hash
of it, never the address) — and a password try also as one of the account (a keyed hash of the
email, known or not, so the delay names nobody) — then
judged by the failures before it: after `FREE_FAILURES` within `WINDOW`, the next try waits
2, 4, 8, ... seconds after the latest failure, at most `MAX_DELAY_SECONDS`. A refused try is not
checked and not counted; a right token clears its address. Recording first means concurrent tries
see each other, so a burst gets no more than the free tries. A right admin token from an address
with no failure in the window goes through with nothing written (`clean`): on SQLite the three
writes queued for the write lock behind ingest, and each admin API call took seconds under load.

Revocations: signing out stores the session's nonce until the session's own expiry; a session
whose nonce is stored is refused.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request

from firstparty import metrics
from firstparty.collect import client_address
from firstparty.identity import otp, pii
from firstparty.runtime import Runtime
from firstparty.store import db
from firstparty.store.models import admin_login_failures, admin_revocations

FREE_FAILURES = 5
WINDOW = timedelta(hours=24)
MAX_DELAY_SECONDS = 15 * 60


class Surface(StrEnum):
    """Where the admin token was tried."""

    UI = "ui"
    API = "api"
    ACCOUNT = "account"  # an operator account's password, whatever the address


@dataclass(frozen=True)
class Attempt:
    """A try let through (`retry_after` 0, its failure row recorded) or refused."""

    address: str
    row_id: int | None
    retry_after: int

    @property
    def refused(self) -> bool:
        return self.retry_after > 0


def address_key(secret: str, address: str | None) -> str:
    """The keyed hash stored for a client address (IPv6 by its /64)."""
    return otp.ip_key(secret, address) or otp.ip_key(secret, "unknown") or ""


def account_key(secret: str, email: str) -> str:
    """The keyed hash stored for the operator account an email names (existing or not)."""
    return pii.keyed_hash(secret, "operator-account:" + email.strip().lower())


def delay_after(failures: int) -> int:
    """Seconds to wait after the latest of `failures` recent failures."""
    if failures < FREE_FAILURES:
        return 0
    return min(1 << min(failures - FREE_FAILURES + 1, 20), MAX_DELAY_SECONDS)


def begin_key(engine: Engine, *, key: str, surface: Surface, now: datetime) -> Attempt:
    """Record this try as a failure of `key`, then let it through or refuse it (counted in a
    metric)."""
    insert = sa.insert(admin_login_failures).values(address=key, created_at=now)
    with engine.begin() as conn:
        inserted = conn.execute(insert).inserted_primary_key
    assert inserted is not None
    row_id = int(inserted[0])
    table = admin_login_failures.c
    earlier = sa.select(sa.func.count(), sa.func.max(table.created_at)).where(
        table.address == key, table.created_at > now - WINDOW, table.id < row_id
    )
    with engine.begin() as conn:
        count, latest = conn.execute(earlier).one()
        wait = _remaining(latest, delay_after(int(count)), now)
        if wait:
            conn.execute(sa.delete(admin_login_failures).where(table.id == row_id))
    if wait:
        metrics.ADMIN_REFUSED.labels(surface.value).inc()
        return Attempt(key, None, wait)
    return Attempt(key, row_id, 0)


async def begin_request(request: Request, runtime: Runtime, surface: Surface) -> Attempt:
    """`begin_key` for this request's client address (as the trusted proxies saw it)."""
    key = _request_key(request, runtime)
    return await asyncio.to_thread(
        begin_key, runtime.engine, key=key, surface=surface, now=datetime.now(UTC)
    )


async def clean_request(request: Request, runtime: Runtime) -> bool:
    """`clean` for this request's client address."""
    key = _request_key(request, runtime)
    return await asyncio.to_thread(clean, runtime.engine, key=key, now=datetime.now(UTC))


def clean(engine: Engine, *, key: str, now: datetime) -> bool:
    """Whether `key` has no failure within WINDOW: a right token from it needs nothing recorded
    and nothing cleared. Only reads (`db.reader`: no SQLite write lock)."""
    table = admin_login_failures.c
    query = sa.select(table.id).where(table.address == key, table.created_at > now - WINDOW)
    with db.reader(engine) as conn:
        return conn.execute(query.limit(1)).first() is None


def _request_key(request: Request, runtime: Runtime) -> str:
    settings = runtime.settings
    address = client_address.client_ip(
        request,
        trust_forwarded_for=settings.collect.trust_forwarded_for,
        trusted_hops=settings.collect.trusted_hops,
    )
    return address_key(settings.secret_key.get_secret_value(), address)


async def begin_account(runtime: Runtime, email: str) -> Attempt:
    """`begin_key` for the operator account this email names."""
    key = account_key(runtime.settings.secret_key.get_secret_value(), email)
    return await asyncio.to_thread(
        begin_key, runtime.engine, key=key, surface=Surface.ACCOUNT, now=datetime.now(UTC)
    )


def _remaining(latest: datetime | None, delay: int, now: datetime) -> int:
    if latest is None or delay == 0:
        return 0
    until = latest.replace(tzinfo=UTC) + timedelta(seconds=delay)
    return max(0, math.ceil((until - now).total_seconds()))


def succeeded(engine: Engine, attempt: Attempt) -> None:
    """The right token: forget this address's failures."""
    with engine.begin() as conn:
        conn.execute(
            sa.delete(admin_login_failures).where(admin_login_failures.c.address == attempt.address)
        )


def revoke(engine: Engine, *, nonce: str, expires_at: datetime) -> None:
    """End a session in every process until its expiry (signing out twice is harmless)."""
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(admin_revocations).values(nonce=nonce, expires_at=expires_at))
    except IntegrityError:
        pass  # already revoked


def revoked(engine: Engine, nonce: str) -> bool:
    """Whether a session with this nonce was signed out."""
    query = sa.select(admin_revocations.c.nonce).where(admin_revocations.c.nonce == nonce)
    with engine.connect() as conn:
        return conn.execute(query).first() is not None
