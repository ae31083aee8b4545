"""Audience sync end to end on Meta's strict fake: people built through the app, the first sync
adds exactly the members, later syncs remove who converted, withdrew consent or was erased, a
failed batch is retried at the next run, and 25,000 members go in batches within Meta's limit;
on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty import ids
from firstparty.audiences import service
from firstparty.audiences.sync import RunResult
from firstparty.privacy import service as privacy
from firstparty.settings import Settings
from firstparty.store import db
from firstparty.store.models import audience_members_acked, audience_runs, events, tracks
from tests.audiences.people import Cast, cast, named
from tests.conftest import SECRET, make_database
from tests.e2e.journey import Deployment, server_send, serving, sha256
from tests.fakes import google_audience
from tests.fakes import twilio as fake_twilio
from tests.identity.conftest import otp_config

meta_audience = pytest.importorskip("tests.fakes.meta_audience")

LEADS = {
    "name": "leads",
    "destinations": ["meta-leads"],
    "rules": [{"did": "Lead", "within_days": 30}, {"did_not": "Purchase", "within_days": 90}],
}


@pytest.fixture
def meta() -> Iterator[Any]:
    with meta_audience.FakeMetaAudience() as fake:
        yield fake


def settings_of(deployment: Deployment, meta: Any, **more: Any) -> Settings:
    destination = {
        "name": "meta-leads",
        "type": "meta_custom_audience",
        "audience_id": meta_audience.AUDIENCE_ID,
        "access_token": meta_audience.ACCESS_TOKEN,
        "api_base": meta.api_base,
    }
    return deployment.settings(destinations=[destination], audiences=[LEADS], **more)


async def sync(settings: Settings) -> RunResult:
    engine = db.create_engine(settings.database_url)
    try:
        [result] = await service.sync_now(
            settings=settings, engine=engine, name="leads", trigger="command"
        )
    finally:
        engine.dispose()
    return result


def emails(*addresses: str) -> set[str]:
    return {sha256(a) for a in addresses}


def counts(result: RunResult) -> tuple[int, int, int, int]:
    return result.size, result.adds, result.removes, result.errors


async def test_first_sync_adds_exactly_then_leavers_are_removed(
    deployment: Deployment, meta: Any, twilio: fake_twilio.FakeTwilio
) -> None:
    settings = settings_of(deployment, meta, otp=otp_config(twilio))
    async with serving(settings) as app:
        p: Cast = await cast(app, twilio)
        first = await sync(settings)
        # Granted consent and a Lead without Purchase: the person (both devices), small, googler.
        assert counts(first) == (3, 3, 0, 0)
        assert first.warning and "about 100 matched people" in first.warning
        held = emails("jane.doe@example.com", "small@example.com", "googler@example.com")
        assert meta.emails() == held and meta.size() == 3
        assert counts(await sync(settings)) == (3, 0, 0, 0)  # nothing changed, nothing sent
        # small converts; googler withdraws consent; the person is erased.
        await server_send(app, named("Purchase", visitor_id=p.small[2:]))
        denied = {"ad_user_data": "denied", "ad_personalization": "denied"}
        await server_send(app, named("ConsentUpdate", denied, visitor_id=p.googler[2:]))
        engine = app.engine
        privacy.erase_person(
            engine, who=privacy.Who(user_id=p.person[2:]), secret=SECRET, default_region="US"
        )
        # The erased person's hashes are gone from the request log too (the first sync's
        # request carried them): the platform drops them with the hashes acknowledged earlier.
        with engine.connect() as conn:
            assert conn.execute(sa.select(tracks)).all() == []
        assert counts(await sync(settings)) == (0, 0, 3, 0)
        assert meta.size() == 0
        with engine.connect() as conn:
            assert conn.execute(sa.select(audience_members_acked)).all() == []
            logged = conn.execute(
                sa.select(tracks.c.method, tracks.c.status).where(
                    tracks.c.destination == "meta-leads"
                )
            ).all()
            runs = conn.execute(sa.select(audience_runs.c.trigger)).scalars().all()
        assert logged == [("DELETE", "delivered")]
        assert runs == ["command"] * 3


async def test_a_failed_batch_is_retried_at_the_next_run(
    deployment: Deployment, meta: Any, twilio: fake_twilio.FakeTwilio
) -> None:
    settings = settings_of(deployment, meta, otp=otp_config(twilio))
    async with serving(settings) as app:
        p = await cast(app, twilio)
        meta.fail_next(1)
        failed = await sync(settings)
        assert counts(failed) == (3, 0, 0, 3)
        assert "retry" in failed.detail.lower() or "unexpected" in failed.detail.lower()
        assert meta.size() == 0
        assert counts(await sync(settings)) == (3, 3, 0, 0)
        assert meta.size() == 3
        # A failed removal leaves the member acknowledged: removed at the next run.
        await server_send(app, named("Purchase", visitor_id=p.small[2:]))
        meta.fail_next(1)
        assert counts(await sync(settings)) == (2, 0, 0, 1)
        assert sha256("small@example.com") in meta.emails()
        assert counts(await sync(settings)) == (2, 0, 1, 0)
        assert sha256("small@example.com") not in meta.emails() and meta.size() == 2
        with app.engine.connect() as conn:
            statuses = conn.execute(sa.select(tracks.c.status).order_by(tracks.c.id)).scalars()
            assert list(statuses) == ["failed", "delivered", "failed", "delivered"]


def bulk_leads(engine: sa.Engine, count: int) -> None:
    """`count` lone visitors with one consented Lead each, written through the store layer."""
    write_events(engine, [f"bulk{n:010d}" for n in range(count)], "Lead")


def write_events(engine: sa.Engine, visitors: list[str], name: str) -> None:
    """One consented event named `name` per lone visitor (its email hashed from its id)."""
    now = datetime.now(UTC) - timedelta(hours=1)
    consent = {"ad_user_data": "granted", "ad_personalization": "granted"}
    rows = [
        {
            "id": ids.new_id(),
            "source": "crm",
            "event_id": f"{name}-{visitor}",
            "type": "track",
            "name": name,
            "occurred_at": now,
            "received_at": now,
            "visitor_id": visitor,
            "user_id": None,
            "request": {"type": "track", "name": name},
            "response": {},
            "user": {"em": sha256(f"{visitor}@example.com")},
            "context": {},
            "consent": consent,
            "bot": None,
        }
        for visitor in visitors
    ]
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            db.bulk_insert(conn, events, rows[start : start + 5000])


# Visitor ids whose order by code point (B1 _3 a2 ...) is neither a case-insensitive one
# (MariaDB's utf8mb4_general_ci: a2 B1 é4 ...) nor a linguistic one (PostgreSQL's en_US).
ODD_ORDER = ["B1", "_3", "a2", "é4", "Z5", "z6", "Ω7", "07", "a-8", "A9", "ß10", "~11"]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
async def test_a_run_merges_members_and_acknowledgements_in_one_order(
    kind: str, tmp_path: Any, meta: Any
) -> None:
    """A run reads the members and what the platform acknowledged as two ordered streams and
    merges them: exact only if the database orders both as Python compares the keys."""
    with contextlib.contextmanager(make_database)(kind, tmp_path, migrated=True) as url:
        settings = settings_of(Deployment(kind, url, None), meta)
        engine = db.create_engine(url)
        try:
            write_events(engine, ODD_ORDER, "Lead")
            first = await sync(settings)
            assert counts(first) == (12, 12, 0, 0)
            leaving, joining = ODD_ORDER[1::3], ["b0", "Ä12", "_0"]
            write_events(engine, leaving, "Purchase")
            write_events(engine, joining, "Lead")
            assert counts(await sync(settings)) == (11, 3, 4, 0)
            held = [v for v in ODD_ORDER if v not in leaving] + joining
            assert meta.emails() == emails(*(f"{v}@example.com" for v in held))
            assert counts(await sync(settings)) == (11, 0, 0, 0)
            with engine.connect() as conn:
                keys = conn.execute(sa.select(audience_members_acked.c.member_key)).scalars()
                assert sorted(keys) == sorted(f"v:{v}" for v in held)
        finally:
            engine.dispose()


async def test_a_run_the_database_fails_is_ended_with_the_reason(tmp_path: Any, meta: Any) -> None:
    """The pass reads the database between the platform's answers: if a read fails, each
    destination's run is recorded as ended with the reason, and the error goes on up."""
    with contextlib.contextmanager(make_database)("sqlite", tmp_path, migrated=True) as url:
        settings = settings_of(Deployment("sqlite", url, None), meta)
        engine = db.create_engine(url)
        try:
            write_events(engine, ODD_ORDER, "Lead")
            with engine.begin() as conn:  # the members' read now fails
                conn.exec_driver_sql("ALTER TABLE events RENAME COLUMN consent TO consent_gone")
            with pytest.raises(sa.exc.OperationalError):
                await sync(settings)
            with engine.connect() as conn:
                [run] = conn.execute(sa.select(audience_runs)).all()
        finally:
            engine.dispose()
        assert run.finished_at is not None and run.adds == 0
        assert run.detail.startswith("the run stopped: (sqlite3.OperationalError)")
        assert meta.requests == []


async def test_25000_members_sync_in_batches_within_the_limit(
    deployment: Deployment, meta: Any
) -> None:
    settings = settings_of(deployment, meta)
    engine = db.create_engine(settings.database_url)
    try:
        bulk_leads(engine, 25_000)
    finally:
        engine.dispose()
    assert counts(await sync(settings)) == (25_000, 25_000, 0, 0)
    sizes = [len(r.json()["payload"]["data"]) for r in meta.requests]
    assert sizes == [10_000, 10_000, 5_000]
    assert meta.size() == 25_000
    assert counts(await sync(settings)) == (25_000, 0, 0, 0)
    assert len(meta.requests) == 3


async def test_google_test_mode_acknowledges_nothing_then_sends_for_real(
    tmp_path: Any, twilio: fake_twilio.FakeTwilio
) -> None:
    """Google's validateOnly passes the request without storing it: nothing is acknowledged, so
    the members go for real once validate_only is off (and the OAuth token is fetched once)."""
    with (
        contextlib.contextmanager(make_database)("sqlite", tmp_path, migrated=True) as url,
        google_audience.FakeGoogleAudience() as google,
    ):
        oauth = google.add_refresh_token("cid.apps", "cid-secret", "1//refresh")
        deployment = Deployment("sqlite", url, None)
        entry = {
            "name": "google-leads",
            "type": "google_customer_match",
            "customer_id": google_audience.CUSTOMER_ID,
            "user_list_id": google_audience.USER_LIST_ID,
            "oauth": oauth,
            "accept_customer_match_terms": True,
            "api_base": google.url + "/v1",
            "token_url": google.url + "/token",
        }
        leads = LEADS | {"destinations": ["google-leads"]}

        def settings(**more: Any) -> Settings:
            return deployment.settings(
                destinations=[entry | more], audiences=[leads], otp=otp_config(twilio)
            )

        async with serving(settings()) as app:
            await cast(app, twilio)
        tested = await sync(settings(validate_only=True))
        assert counts(tested) == (3, 0, 0, 3) and "test mode" in tested.detail
        assert google.size() == 0
        assert counts(await sync(settings())) == (3, 3, 0, 0)
        assert google.size() == 3
        engine = db.create_engine(url)
        try:
            with engine.connect() as conn:
                logged = conn.execute(
                    sa.select(tracks.c.url, tracks.c.status).order_by(tracks.c.id)
                ).all()
        finally:
            engine.dispose()
        assert [(u.rsplit("/", 1)[-1], s) for u, s in logged] == [
            ("token", "delivered"),
            ("audienceMembers:ingest", "test"),
            ("token", "delivered"),
            ("audienceMembers:ingest", "delivered"),
        ]


async def test_a_member_whose_hashes_changed_is_sent_again_once(
    deployment: Deployment, meta: Any, twilio: fake_twilio.FakeTwilio
) -> None:
    settings = settings_of(deployment, meta, otp=otp_config(twilio))
    async with serving(settings) as app:
        p = await cast(app, twilio)
        assert counts(await sync(settings)) == (3, 3, 0, 0)
        phone = {"phone": "+1 617 555 0199"}
        await server_send(app, named("Lead", visitor_id=p.small[2:], user=phone))
        assert counts(await sync(settings)) == (3, 1, 0, 0)
        assert counts(await sync(settings)) == (3, 0, 0, 0)
        with app.engine.connect() as conn:
            rows = conn.execute(
                sa.select(audience_members_acked.c.member_key, audience_members_acked.c.identifiers)
            ).all()
        assert len(rows) == 3
        assert dict(rows)[p.small]["ph"] == sha256("16175550199")
