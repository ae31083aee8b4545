"""People proven by a verified phone, and which devices (visitors) belong to them.

A user is an opaque `user_id`. The phone is never kept in clear: `phone_key` (HMAC with the
server secret of the E.164 form) finds the user again, `phone_hashes` holds what the platforms
want (`ph`: SHA-256 of the digits without "+", for Meta; `ph_e164`: SHA-256 of "+E.164", for
TikTok and Google).

A visitor belongs to at most one user at a time (`visitors.user_id`); `visitor_users` keeps the
history, so a visitor verified later with another phone moves to that user while its past stays
with the user it had then. Events are never rewritten: each keeps the user_id it was stored with.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from firstparty.identity import pii
from firstparty.store import db
from firstparty.store.models import users, visitor_users, visitors


def new_user_id() -> str:
    """An opaque, unguessable user id (no meaning, no order)."""
    return "u_" + secrets.token_urlsafe(16)


def phone_key(secret: str, e164: str) -> str:
    """What finds a user by phone: HMAC(secret, "+E.164")."""
    return pii.keyed_hash(secret, e164)


def phone_hashes(e164: str) -> dict[str, str]:
    """The platforms' hashed forms of a "+E.164" number."""
    return {"ph": pii.sha256(e164[1:]), "ph_e164": pii.sha256(e164)}


def ensure(conn: Connection, *, secret: str, e164: str, now: datetime) -> str:
    """The user_id of this verified phone, created on its first verification."""
    key = phone_key(secret, e164)
    row = {
        "id": new_user_id(),
        "phone_key": key,
        "phone_hashes": phone_hashes(e164),
        "created_at": now,
        "verified_at": now,
    }
    # The unique phone_key settles a race between two first verifications: one row wins.
    db.insert_ignore(conn, users, [row])
    user_id: str = conn.execute(sa.select(users.c.id).where(users.c.phone_key == key)).scalar_one()
    conn.execute(sa.update(users).where(users.c.id == user_id).values(verified_at=now))
    return user_id


def find_by_phone(conn: Connection, secret: str, raw_phone: str, default_region: str) -> str | None:
    """The user verified with this phone (any common format), or None; invalid numbers too."""
    try:
        e164 = pii.normalise_phone(raw_phone, default_region)
    except pii.InvalidValue:
        return None
    key = phone_key(secret, e164)
    found = conn.execute(sa.select(users.c.id).where(users.c.phone_key == key)).scalar()
    return str(found) if found is not None else None


def exists(conn: Connection, user_id: str) -> bool:
    """Whether this user_id names a known user."""
    return conn.execute(sa.select(users.c.id).where(users.c.id == user_id)).first() is not None


def phone_hashes_for(conn: Connection, user_id: str) -> dict[str, str]:
    """The user's hashed phone ({"ph", "ph_e164"}), or {} for an unknown user."""
    return phone_hashes_of(conn, user_ids={user_id}).get(user_id, {})


def phone_hashes_of(conn: Connection, *, user_ids: Collection[str]) -> dict[str, dict[str, str]]:
    """The hashed phone of each of these users that is known, in one query."""
    if not user_ids:
        return {}
    query = sa.select(users.c.id, users.c.phone_hashes).where(users.c.id.in_(sorted(user_ids)))
    return {row.id: _strings(row.phone_hashes) for row in conn.execute(query)}


def user_of(conn: Connection, visitor_id: str) -> str | None:
    """The user this visitor belongs to now, if any."""
    found = conn.execute(sa.select(visitors.c.user_id).where(visitors.c.id == visitor_id)).scalar()
    return str(found) if found is not None else None


def link_visitor(conn: Connection, *, visitor_id: str, user_id: str, now: datetime) -> None:
    """Make this visitor one of the user's devices (creating the visitor row if needed)."""
    blank: dict[str, Any] = {
        "id": visitor_id,
        "user_id": None,
        "first_seen_at": now,
        "last_seen_at": now,
        "first_touch": {},
        "last_touch": {},
    }
    db.insert_ignore(conn, visitors, [blank])
    query = sa.select(visitors.c.user_id).where(visitors.c.id == visitor_id)
    if conn.dialect.name != "sqlite":  # SQLite's BEGIN IMMEDIATE already serialises writers
        query = query.with_for_update()
    current = conn.execute(query).scalar()
    if current == user_id:
        return
    if current is not None:
        conn.execute(
            sa.update(visitor_users)
            .where(visitor_users.c.visitor_id == visitor_id, visitor_users.c.unlinked_at.is_(None))
            .values(unlinked_at=now)
        )
    conn.execute(sa.update(visitors).where(visitors.c.id == visitor_id).values(user_id=user_id))
    conn.execute(
        sa.insert(visitor_users).values(
            visitor_id=visitor_id, user_id=user_id, linked_at=now, unlinked_at=None
        )
    )


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}
