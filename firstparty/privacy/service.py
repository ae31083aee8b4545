"""Erase or export everything held about one person.

A person is a user (a verified phone) with every visitor ever linked to it, or a visitor alone.
An email or phone finds the person through the hashes stored with events (and, for a phone, the
user it verified). Erasing deletes rather than anonymises: the person's events, visitors, device
links, click ids, outbox rows, one-time codes (to their numbers or asked by their visitors), and
every outgoing request that carried one of their events (the whole logged request: its body holds
their hashes), and every logged audience request that carried their hashes (audiences: the
platforms themselves drop the person at the next sync, from the acknowledged hashes kept for
that). Reports count fewer events afterwards; the replay audit (`replays`) holds only
counts and is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty.identity import pii, users
from firstparty.operators import audit
from firstparty.reports import rollups
from firstparty.store.models import (
    audience_members_acked,
    audience_runs,
    click_ids,
    deliveries,
    event_keys,
    events,
    otp_attempts,
    otp_codes,
    track_events,
    tracks,
    visitor_users,
    visitors,
)
from firstparty.store.models import users as users_table

CHUNK = 500


@dataclass(frozen=True)
class Who:
    """How the operator names the person (at least one field)."""

    user_id: str | None = None
    visitor_id: str | None = None
    phone: str | None = None
    email: str | None = None


@dataclass
class Person:
    """Every id found for the person."""

    user_ids: set[str] = field(default_factory=set)
    visitor_ids: set[str] = field(default_factory=set)
    event_pks: set[str] = field(default_factory=set)
    phone_keys: set[str] = field(default_factory=set)

    @property
    def found(self) -> bool:
        return bool(self.user_ids or self.visitor_ids or self.event_pks)


def _chunks(values: Iterable[Any]) -> Iterator[list[Any]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]


def _column_values(conn: Connection, column: sa.Column[Any], where: Any) -> set[Any]:
    return {row[0] for row in conn.execute(sa.select(column).where(where)) if row[0] is not None}


def _events_with_hash(conn: Connection, digest: str) -> set[str]:
    # The `user` column is JSON on every engine; its text holds the digest when the event has it.
    text = sa.cast(events.c.user, sa.Text)
    return _column_values(conn, events.c.id, text.contains(digest, autoescape=True))


def _hashes_of(who: Who, default_region: str) -> list[str]:
    digests: list[str] = []
    if who.email:
        email = pii.normalise_email(who.email)
        digests += [pii.sha256(email), pii.sha256(pii.google_email(email))]
    if who.phone:
        e164 = pii.normalise_phone(who.phone, default_region)
        digests += list(users.phone_hashes(e164).values())
    return digests


def find(conn: Connection, *, who: Who, secret: str, default_region: str) -> Person:
    """Resolve the person: users, then every visitor linked to them, then their events."""
    person = Person()
    if who.user_id and users.exists(conn, who.user_id):
        person.user_ids.add(who.user_id)
    if who.visitor_id:
        person.visitor_ids.add(who.visitor_id)
        found = users.user_of(conn, who.visitor_id)
        if found is not None:
            person.user_ids.add(found)
    if who.phone:
        found = users.find_by_phone(conn, secret, who.phone, default_region)
        if found is not None:
            person.user_ids.add(found)
        e164 = pii.normalise_phone(who.phone, default_region)
        person.phone_keys.add(users.phone_key(secret, e164))
    for digest in _hashes_of(who, default_region):
        person.event_pks |= _events_with_hash(conn, digest)
    for chunk in _chunks(person.event_pks):
        rows = conn.execute(
            sa.select(events.c.visitor_id, events.c.user_id).where(events.c.id.in_(chunk))
        )
        for row in rows:
            person.visitor_ids |= {row.visitor_id} - {None}
            person.user_ids |= {row.user_id} - {None}
    for chunk in _chunks(person.user_ids):
        person.visitor_ids |= _column_values(
            conn, visitor_users.c.visitor_id, visitor_users.c.user_id.in_(chunk)
        )
        person.visitor_ids |= _column_values(conn, visitors.c.id, visitors.c.user_id.in_(chunk))
        person.phone_keys |= _column_values(
            conn, users_table.c.phone_key, users_table.c.id.in_(chunk)
        )
        person.event_pks |= _column_values(conn, events.c.id, events.c.user_id.in_(chunk))
    for chunk in _chunks(person.visitor_ids):
        person.event_pks |= _column_values(conn, events.c.id, events.c.visitor_id.in_(chunk))
    return person


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _rows(conn: Connection, table: sa.Table, column: sa.Column[Any], keys: set[Any]) -> list[Any]:
    out: list[dict[str, Any]] = []
    for chunk in _chunks(keys):
        for row in conn.execute(sa.select(table).where(column.in_(chunk)).order_by(column)):
            out.append({k: _plain(v) for k, v in row._mapping.items()})
    return out


def export(conn: Connection, person: Person) -> dict[str, list[dict[str, Any]]]:
    """What is held about the person, table by table (JSON-ready)."""
    users_rows = _rows(conn, users_table, users_table.c.id, person.user_ids)
    for row in users_rows:
        row.pop("phone_key", None)  # a keyed hash: meaningless outside this server
    return {
        "users": users_rows,
        "visitors": _rows(conn, visitors, visitors.c.id, person.visitor_ids),
        "device_links": _rows(conn, visitor_users, visitor_users.c.visitor_id, person.visitor_ids),
        "click_ids": _rows(conn, click_ids, click_ids.c.visitor_id, person.visitor_ids)
        + _rows(conn, click_ids, click_ids.c.event_pk, person.event_pks),
        "events": _rows(conn, events, events.c.id, person.event_pks),
        "deliveries": _rows(conn, deliveries, deliveries.c.event_pk, person.event_pks),
        "otp_codes": _otp_codes(conn, person),
    }


def _otp_codes(conn: Connection, person: Person) -> list[dict[str, Any]]:
    """The person's one-time codes: to their numbers or asked by their visitors (once each)."""
    rows = _rows(conn, otp_codes, otp_codes.c.phone_key, person.phone_keys)
    rows += _rows(conn, otp_codes, otp_codes.c.visitor_id, person.visitor_ids)
    unique = {row["id"]: row for row in rows}
    for row in unique.values():
        for keyed in ("phone_key", "code_hash", "ip"):  # keyed hashes: meaningless elsewhere
            row.pop(keyed, None)
    return sorted(unique.values(), key=lambda row: str(row["created_at"]))


def _delete(conn: Connection, table: sa.Table, column: sa.Column[Any], keys: set[Any]) -> int:
    removed = 0
    for chunk in _chunks(keys):
        removed += conn.execute(sa.delete(table).where(column.in_(chunk))).rowcount
    return removed


def erase(conn: Connection, person: Person) -> dict[str, int]:
    """Delete every row of the person; the number removed per table."""
    track_ids: set[Any] = set()
    for chunk in _chunks(person.event_pks):
        track_ids |= _column_values(
            conn, track_events.c.track_id, track_events.c.event_pk.in_(chunk)
        )
    track_ids |= _audience_tracks(conn, person)
    rollups.take(conn, person.event_pks)  # the reports count the person's events no more
    _delete(conn, event_keys, event_keys.c.event_pk, person.event_pks)  # part of each event
    removed = {
        "track_events": _delete(conn, track_events, track_events.c.track_id, track_ids)
        + _delete(conn, track_events, track_events.c.event_pk, person.event_pks),
        "tracks": _delete(conn, tracks, tracks.c.id, track_ids),
        "deliveries": _delete(conn, deliveries, deliveries.c.event_pk, person.event_pks),
        "click_ids": _delete(conn, click_ids, click_ids.c.event_pk, person.event_pks)
        + _delete(conn, click_ids, click_ids.c.visitor_id, person.visitor_ids),
        "events": _delete(conn, events, events.c.id, person.event_pks),
        "visitor_users": _delete(
            conn, visitor_users, visitor_users.c.visitor_id, person.visitor_ids
        )
        + _delete(conn, visitor_users, visitor_users.c.user_id, person.user_ids),
        "visitors": _delete(conn, visitors, visitors.c.id, person.visitor_ids),
        "otp_codes": _delete(conn, otp_codes, otp_codes.c.phone_key, person.phone_keys)
        + _delete(conn, otp_codes, otp_codes.c.visitor_id, person.visitor_ids),
        "otp_attempts": _delete(conn, otp_attempts, otp_attempts.c.phone_key, person.phone_keys),
        "users": _delete(conn, users_table, users_table.c.id, person.user_ids),
    }
    return removed


def _audience_tracks(conn: Connection, person: Person) -> set[Any]:
    """The logged audience requests whose body holds one of the person's hashes (those of their
    events, and those the platforms acknowledged for them)."""
    destinations = _column_values(conn, audience_runs.c.destination, sa.true())
    if not destinations:
        return set()
    digests: set[str] = set()
    for chunk in _chunks(person.event_pks):
        for row in conn.execute(sa.select(events.c.user).where(events.c.id.in_(chunk))):
            digests |= _hashes(row.user)
    keys = {f"u:{u}" for u in person.user_ids} | {f"v:{v}" for v in person.visitor_ids}
    acked = audience_members_acked.c
    for chunk in _chunks(keys):
        for row in conn.execute(sa.select(acked.identifiers).where(acked.member_key.in_(chunk))):
            digests |= _hashes(row.identifiers)
    for chunk in _chunks(person.user_ids):
        for row in conn.execute(
            sa.select(users_table.c.phone_hashes).where(users_table.c.id.in_(chunk))
        ):
            digests |= _hashes(row.phone_hashes)
    text = sa.cast(tracks.c.request, sa.Text)
    found: set[Any] = set()
    for digest in sorted(digests):
        found |= _column_values(
            conn,
            tracks.c.id,
            sa.and_(
                tracks.c.destination.in_(sorted(destinations)),
                text.contains(digest, autoescape=True),
            ),
        )
    return found


# Hashes that name one person (a country's or a gender's hash is shared by many: never searched).
_PERSONAL = ("em", "em_google", "ph", "ph_e164", "external_id")


def _hashes(value: Any) -> set[str]:
    if not isinstance(value, dict):
        return set()
    found = (value.get(k) for k in _PERSONAL)
    return {v for v in found if isinstance(v, str) and pii.HASHED.match(v)}


def erase_person(
    engine: Engine, *, who: Who, secret: str, default_region: str, actor: str | None = None
) -> dict[str, int]:
    """Find and erase the person in one transaction; the rows removed per table. `actor`: who
    asked, written to the audit log in the same transaction (naming the kinds of identifier
    given, never their values: the log must not keep what was erased)."""
    with engine.begin() as conn:
        removed = erase(conn, find(conn, who=who, secret=secret, default_region=default_region))
        if actor is not None:
            named_by = [k for k in ("user_id", "visitor_id", "phone", "email") if getattr(who, k)]
            detail = {"named_by": named_by, "removed": sum(removed.values())}
            audit.record(
                conn, actor=actor, action=audit.Action.ERASE, subject="person", detail=detail
            )
        return removed


def export_person(
    engine: Engine, *, who: Who, secret: str, default_region: str
) -> dict[str, list[dict[str, Any]]]:
    """Find the person and return what is held about them."""
    with engine.connect() as conn:
        return export(conn, find(conn, who=who, secret=secret, default_region=default_region))


def who_from(
    values: dict[str, Any], names: Sequence[str] = ("user_id", "visitor_id", "phone", "email")
) -> Who:
    """A `Who` from a mapping of the operator's fields (unknown ones ignored)."""
    return Who(**{n: str(values[n]) for n in names if values.get(n)})
