"""Users and devices: one user per phone, visitors moving between users, devices together."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty import ids
from firstparty.identity import attribution, users
from firstparty.store import db
from firstparty.store.models import click_ids, events, visitor_users, visitors
from tests.conftest import SECRET

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
A_PHONE = "+16175550100"
B_PHONE = "+16505551212"


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.Engine]:
    engine = db.create_engine(sqlite_url, poolclass=sa.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def any_engine(database_url: str) -> Iterator[sa.Engine]:
    engine = db.create_engine(database_url)
    yield engine
    engine.dispose()


def at(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def click(conn: sa.Connection, visitor_id: str, kind: str, value: str, seen: datetime) -> None:
    row = {"visitor_id": visitor_id, "kind": kind, "value": value, "first_seen_at": seen}
    conn.execute(sa.insert(click_ids).values(**row))


def event(
    conn: sa.Connection, visitor_id: str | None, user_id: str | None, when: datetime, **context: str
) -> str:
    pk = ids.new_id()
    conn.execute(
        sa.insert(events).values(
            id=pk,
            source="www",
            event_id=ids.new_uuid(),
            type="page",
            name="page",
            occurred_at=when,
            received_at=when,
            visitor_id=visitor_id,
            user_id=user_id,
            request={},
            response={},
            user={},
            context=context,
            consent={},
        )
    )
    return pk


def login(conn: sa.Connection, visitor_id: str, phone: str, when: datetime) -> str:
    user_id = users.ensure(conn, secret=SECRET, e164=phone, now=when)
    users.link_visitor(conn, visitor_id=visitor_id, user_id=user_id, now=when)
    return user_id


def kinds(found: list[Any]) -> list[tuple[str, str]]:
    return [(c.kind, c.value) for c in found]


def test_one_user_per_phone(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        first = users.ensure(conn, secret=SECRET, e164=A_PHONE, now=at())
        again = users.ensure(conn, secret=SECRET, e164=A_PHONE, now=at(days=30))
        other = users.ensure(conn, secret=SECRET, e164=B_PHONE, now=at())

    assert first == again != other
    assert first.startswith("u_") and len(first) <= 32


def test_first_verifications_racing_make_one_user(any_engine: sa.Engine) -> None:
    found: list[str] = []
    barrier = threading.Barrier(6)

    def verify() -> None:
        barrier.wait()
        with any_engine.begin() as conn:
            found.append(users.ensure(conn, secret=SECRET, e164=A_PHONE, now=at()))

    threads = [threading.Thread(target=verify) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(found) == 6 and len(set(found)) == 1


def test_find_by_phone_in_any_format(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        user_id = users.ensure(conn, secret=SECRET, e164=A_PHONE, now=at())
        for raw in ("+1 617 555 0100", "(617) 555-0100", "617.555.0100", "16175550100"):
            assert users.find_by_phone(conn, SECRET, raw, "US") == user_id
        assert users.find_by_phone(conn, SECRET, B_PHONE, "US") is None
        assert users.find_by_phone(conn, SECRET, "not a phone", "US") is None
        assert users.find_by_phone(conn, "another-secret-" + "y" * 40, A_PHONE, "US") is None
        assert users.exists(conn, user_id)
        assert not users.exists(conn, "u_nobody")


def test_phone_hashes_follow_each_platforms_rule(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        user_id = users.ensure(conn, secret=SECRET, e164=B_PHONE, now=at())
        hashes = users.phone_hashes_for(conn, user_id)
        assert users.phone_hashes_for(conn, "u_nobody") == {}

    assert hashes == {
        "ph": hashlib.sha256(b"16505551212").hexdigest(),
        "ph_e164": hashlib.sha256(b"+16505551212").hexdigest(),
    }


def test_linking_creates_the_visitor_and_is_idempotent(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        user_id = login(conn, "v_new", A_PHONE, at())
        login(conn, "v_new", A_PHONE, at(days=1))
        rows = conn.execute(sa.select(visitor_users)).all()
        assert users.user_of(conn, "v_new") == user_id

    assert [(r.visitor_id, r.user_id, r.unlinked_at) for r in rows] == [("v_new", user_id, None)]


def test_a_visitor_moves_to_a_new_user_without_rewriting_the_past(any_engine: sa.Engine) -> None:
    with any_engine.begin() as conn:
        click(conn, "v_shared", "gclid", "before-a", at())
        first = login(conn, "v_shared", A_PHONE, at(days=1))
        old_event = event(conn, "v_shared", first, at(days=2))
        click(conn, "v_shared", "gclid", "while-a", at(days=3))
        second = login(conn, "v_shared", B_PHONE, at(days=4))
        click(conn, "v_shared", "gclid", "while-b", at(days=5))

        stored_user = conn.execute(
            sa.select(events.c.user_id).where(events.c.id == old_event)
        ).scalar()
        for_a = attribution.click_ids_for(conn, visitor_id=None, user_id=first, at=at(days=6))
        for_b = attribution.click_ids_for(conn, visitor_id=None, user_id=second, at=at(days=6))
        current = users.user_of(conn, "v_shared")
        history = conn.execute(sa.select(visitor_users).order_by(visitor_users.c.id)).all()

    assert stored_user == first  # the past keeps its user
    assert current == second
    assert [c.value for c in for_a] == ["before-a", "while-a"]
    assert [c.value for c in for_b] == ["while-b"]  # nothing counted for both
    assert [(h.user_id, h.unlinked_at) for h in history] == [(first, at(days=4)), (second, None)]


def test_a_purchase_on_device_b_carries_device_as_clicks_and_cookies(
    any_engine: sa.Engine,
) -> None:
    with any_engine.begin() as conn:
        click(conn, "v_laptop", "gclid", "Cj0K-laptop", at())
        click(conn, "v_laptop", "fbclid", "IwAR-laptop", at())
        event(conn, "v_laptop", None, at(), fbc="fb.1.1761998400000.IwAR-laptop", fbp="fb.1.1.A")
        user_id = login(conn, "v_laptop", A_PHONE, at(hours=1))
        event(conn, "v_phone", None, at(days=1), fbp="fb.1.2.B")
        login(conn, "v_phone", A_PHONE, at(days=1, hours=1))

        found = attribution.click_ids_for(
            conn, visitor_id="v_phone", user_id=user_id, at=at(days=2)
        )
        context = attribution.context_for(
            conn, visitor_id="v_phone", user_id=user_id, at=at(days=2)
        )
        server_side = attribution.context_for(conn, visitor_id=None, user_id=user_id, at=at(2))
        touches = attribution.touches_for(conn, visitor_id="v_phone", user_id=user_id)

    assert kinds(found) == [("fbclid", "IwAR-laptop"), ("gclid", "Cj0K-laptop")]
    assert context == {"fbc": "fb.1.1761998400000.IwAR-laptop", "fbp": "fb.1.2.B"}  # own fbp wins
    assert server_side["fbc"] == "fb.1.1761998400000.IwAR-laptop"
    assert {t.visitor_id for t in touches} == {"v_laptop", "v_phone"}


def test_the_most_recent_click_in_its_window_is_picked(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        click(conn, "v1", "gclid", "old", at())
        click(conn, "v1", "gclid", "new", at(days=10))
        click(conn, "v1", "ttclid", "stale", at())  # TikTok: 28 days
        click(conn, "v1", "gclid", "after", at(days=40))
        found = attribution.click_ids_for(conn, visitor_id="v1", user_id=None, at=at(days=35))
        unbounded = attribution.click_ids_for(conn, visitor_id="v1", user_id=None)

    from firstparty.event import ClickId, Event

    picked = Event(
        pk="p", event_id="e", type="track", name="Purchase", source="www",
        source_kind="browser", occurred_at=at(days=35), received_at=at(days=35),
        click_ids=tuple(found),
    )  # fmt: skip
    assert kinds(found) == [("gclid", "old"), ("gclid", "new")]
    assert picked.click_id("gclid") == ClickId("gclid", "new", at(days=10))
    assert picked.click_id("ttclid") is None
    assert len(unbounded) == 4


def test_a_click_seen_on_two_devices_counts_once(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        click(conn, "v1", "gclid", "same", at(days=1))
        click(conn, "v2", "gclid", "same", at())
        user_id = login(conn, "v1", A_PHONE, at(days=2))
        login(conn, "v2", A_PHONE, at(days=2))
        found = attribution.click_ids_for(conn, visitor_id="v1", user_id=user_id, at=at(days=3))

    assert [(c.value, c.first_seen_at) for c in found] == [("same", at())]


def test_unknown_person_carries_only_its_own(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        click(conn, "v1", "gclid", "mine", at())
        assert kinds(attribution.click_ids_for(conn, visitor_id="v1", user_id=None)) == [
            ("gclid", "mine")
        ]
        assert attribution.click_ids_for(conn, visitor_id=None, user_id=None) == []
        assert attribution.context_for(conn, visitor_id=None, user_id="u_nobody") == {}
        visitors_left = conn.execute(sa.select(sa.func.count()).select_from(visitors)).scalar()

    assert visitors_left == 0
