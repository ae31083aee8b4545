"""Who belongs to an audience, from real events sent through the app: did / did not within a
window, property conditions, a verified phone, the first touch, one person across two devices
against lone visitors, consent, erasure; and what `audiences preview` and `export --format csv`
print of it."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from firstparty import cli
from firstparty.audiences import members
from firstparty.audiences.definition import AudienceSettings
from firstparty.privacy import service as privacy
from firstparty.settings import Settings, describe_errors
from firstparty.store import db
from tests.audiences.people import Cast, cast
from tests.conftest import SECRET, make_database
from tests.e2e.journey import Deployment, server_batch, server_send, serving, sha256
from tests.fakes import twilio as fake_twilio
from tests.identity.conftest import otp_config

LEADS = {
    "name": "leads",
    "rules": [
        {"did": "Lead", "within_days": 30},
        {"did_not": "Purchase", "within_days": 90},
    ],
}
BIG = {"name": "big", "rules": [{"did": "Lead", "within_days": 30, "where": ["value >= 100"]}]}
PRO = {"name": "pro", "rules": [{"did": "Lead", "within_days": 7, "where": ['plan == "pro"']}]}
VERIFIED = {"name": "verified", "rules": [{"verified_phone": True}]}
GOOGLE = {
    "name": "google",
    "rules": [{"first_touch": {"utm_source": "Google", "click_id": "gclid"}}],
}
BUYERS = {"name": "buyers", "rules": [{"did": "Purchase", "within_days": 90}]}
EVERYONE = [LEADS, BIG, PRO, VERIFIED, GOOGLE, BUYERS]


def settings_of(deployment: Deployment, twilio: fake_twilio.FakeTwilio) -> Settings:
    return deployment.settings(otp=otp_config(twilio), audiences=EVERYONE)


def audience(settings: Settings, name: str) -> AudienceSettings:
    [found] = [a for a in settings.audiences if a.name == name]
    return found


def keys(
    settings: Settings, name: str, *, days_later: float = 0, consented: bool = False
) -> set[str]:
    engine = db.create_engine(settings.database_url)
    try:
        now = datetime.now(UTC) + timedelta(days=days_later)
        found = members.matching(engine, audience(settings, name), now=now)
        return {m.key for m in found if not consented or members.consented(m)}
    finally:
        engine.dispose()


async def made(deployment: Deployment, twilio: fake_twilio.FakeTwilio) -> tuple[Settings, Cast]:
    settings = settings_of(deployment, twilio)
    async with serving(settings) as app:
        people = await cast(app, twilio)
    return settings, people


async def test_rules_pick_the_right_people(
    deployment: Deployment, twilio: fake_twilio.FakeTwilio
) -> None:
    settings, p = await made(deployment, twilio)
    # Lead in the last 30 days and no Purchase in the last 90: not the buyer, nor the browser.
    assert keys(settings, "leads") == {p.person, p.small, p.private, p.googler}
    # ... of whom the one who denied ad_personalization is never sent to a platform.
    assert keys(settings, "leads", consented=True) == {p.person, p.small, p.googler}
    assert keys(settings, "big") == {p.person, p.private, p.buyer}
    assert keys(settings, "pro") == {p.person, p.private, p.buyer}
    assert keys(settings, "verified") == {p.person}
    assert keys(settings, "google") == {p.googler}
    assert keys(settings, "buyers") == {p.buyer}
    # Windows: 31 days on, no Lead is recent enough; the purchase still is, for 90 days.
    assert keys(settings, "leads", days_later=31) == set()
    assert keys(settings, "pro", days_later=8) == set()
    assert keys(settings, "buyers", days_later=89) == {p.buyer}
    assert keys(settings, "buyers", days_later=91) == set()


async def test_a_person_is_one_member_with_both_devices_identifiers(
    deployment: Deployment, twilio: fake_twilio.FakeTwilio
) -> None:
    settings, p = await made(deployment, twilio)
    engine = db.create_engine(settings.database_url)
    try:
        found = {
            m.key: m
            for m in members.matching(engine, audience(settings, "leads"), now=datetime.now(UTC))
        }
    finally:
        engine.dispose()
    person = found[p.person]
    # The email came with the laptop's Lead, the phone from the verification: one member.
    assert person.identifiers["em"] == sha256("jane.doe@example.com")
    assert person.identifiers["ph"] == sha256("16175550100")
    assert person.identifiers["ph_e164"] == sha256("+16175550100")
    assert f"v:{p.laptop}" not in found and f"v:{p.phone}" not in found
    assert "ph" not in found[p.small].identifiers
    assert (person.ad_user_data, person.ad_personalization) == (True, True)
    assert (found[p.private].ad_user_data, found[p.private].ad_personalization) == (True, False)


async def test_more_users_than_one_lookup_chunk(deployment: Deployment) -> None:
    """The pass looks users up by chunks while it streams the events: on SQLite the streaming
    read must not hold the write lock the lookups wait for (it did: 'database is locked' after
    the 30 s busy timeout, once an audience had more than one chunk of users)."""
    settings = deployment.settings(audiences=[LEADS])
    people = members.LOOKUP_CHUNK + 20
    leads = [
        {"type": "track", "name": "Lead", "event_id": f"lead-{n}", "user_id": f"crm-{n}"}
        for n in range(people)
    ]
    async with serving(settings) as app:
        for start in range(0, people, 500):
            await server_batch(app, leads[start : start + 500])
    assert keys(settings, "leads") == {f"u:crm-{n}" for n in range(people)}


async def test_latest_consent_and_erasure_decide(
    deployment: Deployment, twilio: fake_twilio.FakeTwilio
) -> None:
    settings = settings_of(deployment, twilio)
    async with serving(settings) as app:
        p = await cast(app, twilio)
        # The small lead withdraws consent later; the site's backend relays it for the visitor.
        await server_send(
            app,
            {
                "type": "track",
                "name": "ConsentUpdate",
                "visitor_id": p.small[2:],
                "consent": {"ad_user_data": "denied", "ad_personalization": "denied"},
            },
        )
    assert p.small in keys(settings, "leads")
    assert p.small not in keys(settings, "leads", consented=True)
    engine = db.create_engine(settings.database_url)
    try:
        privacy.erase_person(
            engine, who=privacy.Who(user_id=p.person[2:]), secret=SECRET, default_region="US"
        )
    finally:
        engine.dispose()
    assert keys(settings, "leads") == {p.small, p.private, p.googler}
    assert keys(settings, "verified") == set()


async def test_not_consented_mode_takes_unstated_consent(
    deployment: Deployment, twilio: fake_twilio.FakeTwilio
) -> None:
    settings, p = await made(deployment, twilio)
    strict = audience(settings, "leads")
    loose = strict.model_copy(update={"consent": "not_denied"})
    engine = db.create_engine(settings.database_url)
    try:
        now = datetime.now(UTC)
        found = members.matching(engine, loose, now=now)
        assert {m.key for m in found if members.consented(m)} == {
            p.person,
            p.small,
            p.googler,
        }
    finally:
        engine.dispose()


def test_preview_and_csv_export_print_ids_and_hashes_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], twilio: fake_twilio.FakeTwilio
) -> None:
    with contextlib.contextmanager(make_database)("sqlite", tmp_path, migrated=True) as url:
        deployment = Deployment("sqlite", url, None)
        _, p = asyncio.run(made(deployment, twilio))
        config = tmp_path / "firstparty.toml"
        config.write_text(_toml(url))
        assert cli.main(["--config", str(config), "audiences", "preview", "leads"]) == 0
        shown = capsys.readouterr().out
        assert "audience leads: 4 people match the rules" in shown
        assert "3 of them may be sent to ad platforms (consent: granted)" in shown
        assert p.person in shown and p.small in shown
        assert "@" not in shown and sha256("jane.doe@example.com") not in shown
        out = tmp_path / "leads.csv"
        assert (
            cli.main(
                [
                    "--config",
                    str(config),
                    "audiences",
                    "export",
                    "leads",
                    "--format",
                    "csv",
                    "--output",
                    str(out),
                ]
            )
            == 0
        )
        lines = out.read_text().splitlines()
        header = lines[0].split(",")
        assert header[0] == "member_key" and "em" in header and "ph" in header
        assert "postal_code" not in header and "country_code" not in header
        rows = {
            line.split(",")[0]: dict(zip(header, line.split(","), strict=True))
            for line in lines[1:]
        }
        assert set(rows) == {p.person, p.small, p.googler}
        assert rows[p.person]["em"] == sha256("jane.doe@example.com")
        assert rows[p.small]["ph"] == ""


def _toml(url: str) -> str:
    return f'''
database_url = "{url}"
secret_key = "{SECRET}"
admin_token = "admin-token-for-tests"

[[audiences]]
name = "leads"

[[audiences.rules]]
did = "Lead"
within_days = 30

[[audiences.rules]]
did_not = "Purchase"
within_days = 90
'''


def test_definition_errors_are_named() -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"rules": [{"did": "Lead"}]}, "audiences.0.rules.0: did / did_not need within_days"),
        (
            {"rules": [{"did": "Lead", "within_days": 3, "where": ["value = 100"]}]},
            "audiences.0.rules.0.where: condition 'value = 100' must read `property op value`",
        ),
        (
            {"rules": [{"first_touch": {"channel": "x"}}]},
            "first_touch takes utm_source, utm_medium, utm_campaign, click_id; not channel",
        ),
        (
            {"rules": [{"did": "Lead", "did_not": "Purchase", "within_days": 3}]},
            "a rule is exactly one of did, did_not, first_touch or verified_phone "
            "(this one has did, did_not)",
        ),
        (
            {"rules": [{"verified_phone": True}], "destinations": ["nowhere"]},
            "audiences[0].destinations: no destination named 'nowhere'",
        ),
        ({"rules": []}, "audiences.0.rules: List should have at least 1 item"),
        ({"rules": [{"verified_phone": True}], "colour": "red"}, "audiences.0.colour: unknown key"),
    ]
    for entry, message in bad:
        with pytest.raises(ValidationError) as caught:
            Settings.model_validate({"secret_key": SECRET, "audiences": [{"name": "a"} | entry]})
        assert any(message in line for line in describe_errors(caught.value)), (
            message,
            describe_errors(caught.value),
        )


def test_an_audience_destination_takes_no_events(tmp_path: Path) -> None:
    """A destination of an audience type is parsed, but the outbox routes nothing to it."""
    from firstparty.audiences import registry as audience_registry
    from firstparty.destinations import registry

    if not audience_registry.ADAPTERS:
        pytest.skip("no audience adapter installed yet")
    kind, adapter = next(iter(audience_registry.ADAPTERS.items()))
    entry = dict(getattr(adapter, "example_settings", {})) or {"name": "aud", "type": kind}
    entry = {
        k: ("env-set-token-000000" if str(v).startswith("env:") else v) for k, v in entry.items()
    }
    settings = Settings.model_validate(
        {
            "secret_key": SECRET,
            "destinations": [entry],
            "audiences": [
                {"name": "a", "rules": [{"verified_phone": True}], "destinations": [entry["name"]]}
            ],
        }
    )
    assert settings.destinations[0].type == kind
    assert registry.adapters(settings.destinations) == {}


async def test_rules_on_mariadb(tmp_path: Path, twilio: fake_twilio.FakeTwilio) -> None:
    """The membership pass (ordering by person, JSON columns, a second connection while the
    first streams) on the third engine."""
    with contextlib.contextmanager(make_database)("mysql", tmp_path, migrated=True) as url:
        settings, p = await made(Deployment("mysql", url, None), twilio)
        assert keys(settings, "leads") == {p.person, p.small, p.private, p.googler}
        assert keys(settings, "big") == {p.person, p.private, p.buyer}
        assert keys(settings, "verified") == {p.person}
        assert keys(settings, "google") == {p.googler}
