"""Who belongs to an audience now: its rules over each person's events, read in one pass.

A person is a user (`u:<user id>`: the events stored with that user id and those of every device
linked to it now) or, where no user is known, a visitor alone (`v:<visitor id>`). Events of
robots and events with neither a visitor nor a user are never read. Erased people have no rows
left, so they are never members.

The events of the audience's look-back are streamed ordered by person (by code point, whatever
the database's collation), one person held at a time: memory follows neither the number of
events nor the number of members. What a person carries:

* identifiers: the hashes stored with their events (`events.user`, the latest value of each key
  wins) and, for a user, their verified phone's (`users.phone_hashes`);
* consent: per signal (`ad_user_data`, `ad_personalization`), the value of the latest event that
  states it. `Member.ad_user_data` / `ad_personalization` are true when it grants (`consent =
  "granted"`, the default) or does not deny (`consent = "not_denied"`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty.audiences.base import Member
from firstparty.audiences.definition import AudienceSettings, Rule
from firstparty.identity import pii
from firstparty.store import db
from firstparty.store.models import events, users, visitors

STREAM_ROWS = 2000  # rows fetched at a time
LOOKUP_CHUNK = 500  # people whose user and first-touch rows are read together
CONSENT_KEYS = ("ad_user_data", "ad_personalization")


@dataclass
class _Person:
    """What one person's events said so far."""

    key: str
    latest: datetime
    hits: list[bool]
    identifiers: dict[str, str] = field(default_factory=dict)
    consent: dict[str, str] = field(default_factory=dict)


def person_key() -> sa.ColumnElement[str]:
    """`u:<user id>` when the event or its visitor has a user, else `v:<visitor id>`."""
    user = sa.func.coalesce(events.c.user_id, visitors.c.user_id)
    return sa.case(
        (user.is_not(None), sa.literal("u:", sa.String) + user),
        else_=sa.literal("v:", sa.String) + events.c.visitor_id,
    )


def _query(audience: AudienceSettings, since: datetime, dialect: sa.Dialect) -> sa.Select[Any]:
    key = person_key()
    with_conditions = sorted({r.event for r in audience.rules if r.where and r.event})
    request = sa.case((events.c.name.in_(with_conditions), events.c.request), else_=sa.null())
    return (
        sa.select(
            key.label("person"),
            events.c.name,
            events.c.occurred_at,
            events.c.user,
            events.c.consent,
            request.label("request") if with_conditions else sa.null().label("request"),
        )
        .select_from(events.outerjoin(visitors, visitors.c.id == events.c.visitor_id))
        .where(
            events.c.occurred_at >= since,
            events.c.bot.is_(None),
            sa.or_(events.c.visitor_id.is_not(None), events.c.user_id.is_not(None)),
        )
        .order_by(db.code_point_order(key, dialect), events.c.occurred_at, events.c.id)
    )


def matching(
    engine: Engine, audience: AudienceSettings, *, now: datetime
) -> Generator[Member, None, None]:
    """Every person matching the audience's rules now, consent flags set (not filtered), in
    ascending order of their keys as Python compares strings (`db.code_point_order`)."""
    event_rules = [r for r in audience.rules if r.event is not None]
    conditions = [r.conditions for r in event_rules]
    cutoffs = [now - timedelta(days=r.within_days or 0) for r in event_rules]
    member_since = now - timedelta(days=audience.membership_days)
    since = now - timedelta(days=audience.lookback_days)
    buffer: list[_Person] = []
    with db.stream_reader(engine) as conn:
        query = _query(audience, since, engine.dialect)
        rows = conn.execution_options(yield_per=STREAM_ROWS).execute(query)
        person: _Person | None = None
        for row in rows:
            if row.person is None:
                continue
            if person is None or person.key != row.person:
                if person is not None and _passes(person, event_rules, member_since):
                    buffer.append(person)
                    if len(buffer) >= LOOKUP_CHUNK:
                        yield from _finish(engine, audience, buffer)
                        buffer = []
                person = _Person(row.person, row.occurred_at, [False] * len(event_rules))
            _take(person, row, event_rules, conditions, cutoffs)
        if person is not None and _passes(person, event_rules, member_since):
            buffer.append(person)
    yield from _finish(engine, audience, buffer)


def _take(
    person: _Person,
    row: Any,
    rules: list[Rule],
    conditions: list[list[Any]],
    cutoffs: list[datetime],
) -> None:
    person.latest = max(person.latest, row.occurred_at)
    if isinstance(row.user, dict):
        person.identifiers.update({k: v for k, v in row.user.items() if isinstance(v, str) and v})
    if isinstance(row.consent, dict):
        for key in CONSENT_KEYS:
            if row.consent.get(key) in ("granted", "denied"):
                person.consent[key] = row.consent[key]
    for index, rule in enumerate(rules):
        if person.hits[index] or row.name != rule.event or row.occurred_at < cutoffs[index]:
            continue
        if conditions[index]:
            request = row.request if isinstance(row.request, dict) else {}
            properties = request.get("properties")
            if not all(c.holds(properties) for c in conditions[index]):
                continue
        person.hits[index] = True


def _passes(person: _Person, rules: list[Rule], member_since: datetime) -> bool:
    if person.latest < member_since:
        return False
    return all(hit == (rule.did is not None) for rule, hit in zip(rules, person.hits, strict=True))


def _finish(engine: Engine, audience: AudienceSettings, people: list[_Person]) -> Iterator[Member]:
    """The people of one chunk that also pass the person rules (first touch, verified phone)."""
    if not people:
        return
    user_ids = [p.key[2:] for p in people if p.key.startswith("u:")]
    visitor_ids = [p.key[2:] for p in people if p.key.startswith("v:")]
    touch_rules = [r for r in audience.rules if r.first_touch is not None]
    phone_rules = [r for r in audience.rules if r.verified_phone is not None]
    with db.reader(engine) as conn:
        verified = _verified_phones(conn, user_ids)
        touches = _first_touches(conn, user_ids, visitor_ids) if touch_rules else {}
    for person in people:
        phone = verified.get(person.key[2:]) if person.key.startswith("u:") else None
        if any(bool(phone) != r.verified_phone for r in phone_rules):
            continue
        touch = touches.get(person.key, {})
        if not all(_touched(touch, r.first_touch or {}) for r in touch_rules):
            continue
        identifiers = person.identifiers | (phone or {})
        yield Member(
            key=person.key,
            identifiers=identifiers,
            ad_user_data=_allows(person.consent.get("ad_user_data"), audience.consent),
            ad_personalization=_allows(person.consent.get("ad_personalization"), audience.consent),
        )


def _allows(value: str | None, mode: str) -> bool:
    return value == "granted" if mode == "granted" else value != "denied"


def consented(member: Member) -> bool:
    """Whether this member may be sent to an ad platform."""
    return member.ad_user_data and member.ad_personalization


def _verified_phones(conn: Connection, user_ids: list[str]) -> dict[str, dict[str, str]]:
    """The phone hashes of each of these users whose phone is verified."""
    if not user_ids:
        return {}
    query = sa.select(users.c.id, users.c.phone_hashes).where(
        users.c.id.in_(user_ids), users.c.verified_at.is_not(None)
    )
    found: dict[str, dict[str, str]] = {}
    for row in conn.execute(query):
        hashes = row.phone_hashes if isinstance(row.phone_hashes, dict) else {}
        found[row.id] = {k: v for k, v in hashes.items() if isinstance(v, str) and v}
    return found


def _first_touches(
    conn: Connection, user_ids: list[str], visitor_ids: list[str]
) -> dict[str, Mapping[str, Any]]:
    """Person key -> the first touch of their earliest device."""
    c = visitors.c
    query = sa.select(c.id, c.user_id, c.first_seen_at, c.first_touch).where(
        sa.or_(c.user_id.in_(user_ids), c.id.in_(visitor_ids))
    )
    found: dict[str, tuple[datetime, Mapping[str, Any]]] = {}
    for row in conn.execute(query):
        key = f"u:{row.user_id}" if row.user_id in user_ids else f"v:{row.id}"
        touch = row.first_touch if isinstance(row.first_touch, dict) else {}
        if key not in found or row.first_seen_at < found[key][0]:
            found[key] = (row.first_seen_at, touch)
    return {key: touch for key, (_, touch) in found.items()}


def _touched(touch: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    """Whether the first touch carries every wanted UTM value (case-insensitive) / click id."""
    utm = touch.get("utm") if isinstance(touch.get("utm"), dict) else {}
    clicks = touch.get("click_ids") if isinstance(touch.get("click_ids"), dict) else {}
    assert isinstance(utm, dict) and isinstance(clicks, dict)
    for key, value in wanted.items():
        if key == "click_id":
            if value.lower() not in {str(k).lower() for k in clicks}:
                return False
        elif str(utm.get(key, "")).lower() != value.lower():
            return False
    return True


def hashed(identifiers: Mapping[str, str]) -> dict[str, str]:
    """Only the hashed identifiers (never the clear postal and country codes)."""
    return {k: v for k, v in identifiers.items() if pii.HASHED.match(v)}
