"""`firstparty audiences` as an operator runs it, on a config file whose audience goes to the
strict fakes of Meta, Google and TikTok: list, preview (warnings below the platforms' minimums),
sync (each platform ends up holding the consented members), export in each platform's format;
and the schedule: a due audience runs once across processes, then waits `every_minutes`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from firstparty import cli
from firstparty import settings as settings_mod
from firstparty.audiences import service
from firstparty.store import db
from tests.audiences.people import Cast, cast
from tests.conftest import SECRET, make_database
from tests.e2e.journey import Deployment, serving, sha256
from tests.fakes import google_audience, meta_audience, tiktok_audience
from tests.fakes import twilio as fake_twilio
from tests.identity.conftest import otp_config

HELD = {sha256(a) for a in ("jane.doe@example.com", "small@example.com", "googler@example.com")}


@contextlib.contextmanager
def fakes() -> Iterator[tuple[Any, Any, Any]]:
    with (
        meta_audience.FakeMetaAudience() as meta,
        google_audience.FakeGoogleAudience() as google,
        tiktok_audience.FakeTikTokAudience() as tiktok,
    ):
        yield meta, google, tiktok


def config(url: str, meta: Any, google: Any, tiktok: Any, every: int = 60) -> str:
    oauth = google.add_refresh_token("cid.apps", "cid-secret", "1//refresh")
    return f"""
database_url = "{url}"
secret_key = "{SECRET}"
admin_token = "admin-token-for-tests"

[[destinations]]
name = "meta-leads"
type = "meta_custom_audience"
audience_id = "{meta_audience.AUDIENCE_ID}"
access_token = "{meta_audience.ACCESS_TOKEN}"
api_base = "{meta.api_base}"

[[destinations]]
name = "google-leads"
type = "google_customer_match"
customer_id = "{google_audience.CUSTOMER_ID}"
user_list_id = "{google_audience.USER_LIST_ID}"
oauth = '{oauth}'
accept_customer_match_terms = true
api_base = "{google.url}/v1"
token_url = "{google.url}/token"

[[destinations]]
name = "tiktok-leads"
type = "tiktok_audience"
advertiser_id = "{tiktok_audience.ADVERTISER_ID}"
audience_id = "{tiktok_audience.AUDIENCE_ID}"
access_token = "{tiktok_audience.ACCESS_TOKEN}"
api_base = "{tiktok.api_base}"

[[audiences]]
name = "leads"
destinations = ["meta-leads", "google-leads", "tiktok-leads"]
every_minutes = {every}

[[audiences.rules]]
did = "Lead"
within_days = 30

[[audiences.rules]]
did_not = "Purchase"
within_days = 90
"""


def run(capsys: pytest.CaptureFixture[str], path: Path, *words: str) -> tuple[int, str]:
    code = cli.main(["--config", str(path), "audiences", *words])
    return code, capsys.readouterr().out


def people(url: str, twilio: fake_twilio.FakeTwilio) -> Cast:
    deployment = Deployment("sqlite", url, None)

    async def made() -> Cast:
        async with serving(deployment.settings(otp=otp_config(twilio))) as app:
            return await cast(app, twilio)

    return asyncio.run(made())


def test_list_preview_sync_export_on_the_three_platforms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], twilio: fake_twilio.FakeTwilio
) -> None:
    with (
        contextlib.contextmanager(make_database)("sqlite", tmp_path, migrated=True) as url,
        fakes() as (meta, google, tiktok),
    ):
        p = people(url, twilio)
        path = tmp_path / "firstparty.toml"
        path.write_text(config(url, meta, google, tiktok))
        code, shown = run(capsys, path, "list")
        assert code == 0
        assert "leads  (every 60 min, members for 90 days)" in shown
        assert "  - did Lead in the last 30 days" in shown
        assert "  - did not do Purchase in the last 90 days" in shown
        assert "  -> tiktok-leads: never synced" in shown

        code, shown = run(capsys, path, "preview", "leads")
        assert code == 0
        assert "meta-leads (meta_custom_audience): 3 usable; em 3, ph 1" in shown
        assert "about 1000 matched people" in shown  # TikTok's minimum, warned
        assert p.person in shown

        code, shown = run(capsys, path, "sync", "leads")
        assert code == 0, shown
        for name in ("meta-leads", "google-leads", "tiktok-leads"):
            assert f"leads -> {name}: 3 members, +3 added, -0 removed, 0 not acknowledged" in shown
        assert meta.emails() == HELD
        assert google.size() == 3 and tiktok.size() == 3
        assert tiktok.emails() == HELD

        code, shown = run(capsys, path, "list")
        assert "  -> google-leads: last sync" in shown and "size 3, +3 -0, 0 errors" in shown

        for fmt, column in (("meta", "email"), ("tiktok", "Email_SHA256"), ("csv", "em")):
            out = tmp_path / f"{fmt}.csv"
            code, shown = run(
                capsys, path, "export", "leads", "--format", fmt, "--output", str(out)
            )
            assert code == 0 and f"wrote 3 members of leads to {out} ({fmt})" in shown
            header, *rows = out.read_text().splitlines()
            assert column in header.split(",") and len(rows) == 3
        code, shown = run(capsys, path, "export", "leads", "--format", "google")
        assert code == 0 and len(shown.splitlines()) == 4


def test_unknown_audience_and_bad_format_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "firstparty.toml"
    path.write_text(f'database_url = "sqlite:///{tmp_path}/fp.db"\nsecret_key = "{SECRET}"\n')
    assert cli.main(["--config", str(path), "audiences", "preview", "nope"]) == 2
    assert (
        "no audience named 'nope' (audiences: none in the config file)" in capsys.readouterr().err
    )
    code, shown = run(capsys, path, "list")
    assert code == 0 and "no audiences: add [[audiences]] to the config file" in shown

    kept = tmp_path / "leads.csv"
    kept.write_text("an earlier export\n")
    for name, fmt in (("nope", "csv"), ("nope", "meta")):
        argv = ["--config", str(path), "audiences", "export", name, "--format", fmt]
        assert cli.main([*argv, "--output", str(kept)]) == 2
    assert kept.read_text() == "an earlier export\n"  # written whole or not at all
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".part") == []


async def test_the_schedule_runs_a_due_audience_once_across_processes(
    tmp_path: Path, twilio: fake_twilio.FakeTwilio
) -> None:
    with (
        contextlib.contextmanager(make_database)("sqlite", tmp_path, migrated=True) as url,
        fakes() as (meta, google, tiktok),
    ):
        deployment = Deployment("sqlite", url, None)
        async with serving(deployment.settings(otp=otp_config(twilio))) as app:
            await cast(app, twilio)
        path = tmp_path / "firstparty.toml"
        path.write_text(config(url, meta, google, tiktok, every=60))
        settings = settings_mod.load({}, config_path=str(path))
        now = datetime.now(UTC)
        clock = lambda: now  # noqa: E731 - the test moves `now`
        engine = db.create_engine(url)
        one, two = (
            service.Scheduler(settings=settings, engine=engine, clock=clock) for _ in range(2)
        )
        try:
            first = await asyncio.gather(one.round(), two.round())
            assert sorted(len(r) for r in first) == [0, 3]  # one process ran the 3 destinations
            assert meta.size() == 3
            now += timedelta(minutes=59)
            assert await one.round() == [] and await two.round() == []  # not due yet
            now += timedelta(minutes=2)
            again = await one.round() + await two.round()
            assert [(r.adds, r.removes) for r in again] == [(0, 0)] * 3
            with pytest.raises(service.Busy):  # on demand waits for the lease, never overlaps
                assert service.take(
                    engine, settings.audiences[0], holder="other", now=now, due_only=False
                )
                await service.sync_now(
                    settings=settings, engine=engine, name="leads", trigger="button", clock=clock
                )
        finally:
            await one.close()
            await two.close()
            engine.dispose()


def test_audience_destinations_are_listed_never_sent_a_test_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with fakes() as (meta, google, tiktok):
        url = f"sqlite:///{tmp_path}/fp.db"
        path = tmp_path / "firstparty.toml"
        path.write_text(config(url, meta, google, tiktok))
        assert cli.main(["--config", str(path), "destinations"]) == 0
        listed = capsys.readouterr().out
        assert "meta-leads" in listed and "ready (audience: firstparty audiences)" in listed
        code = cli.main(["--config", str(path), "destinations", "test", "meta-leads"])
        assert code == 2
        assert (
            "meta-leads is an audience destination (meta_custom_audience): it takes no events"
            in (capsys.readouterr().err)
        )
        assert meta.requests == []


async def test_the_destinations_page_offers_no_test_event_for_an_audience(tmp_path: Path) -> None:
    from tests.conftest import running_app
    from tests.web.test_admin_ui import signed_in_page

    with (
        contextlib.contextmanager(make_database)("sqlite", tmp_path, migrated=True) as url,
        fakes() as (meta, google, tiktok),
    ):
        path = tmp_path / "firstparty.toml"
        path.write_text(config(url, meta, google, tiktok))
        settings = settings_mod.load({}, config_path=str(path))
        async with running_app(settings) as app:
            page = await signed_in_page(app.http, "/admin/destinations")
        row = page[page.index("meta-leads") :].split("</tr>", 1)[0]
        assert "meta_custom_audience" in row and "ready" in row
        assert "test event" not in row.lower() and 'name="name"' not in row
