"""The ingest boundary on real databases: NUL cleaned at the door, and the database's own errors
(raised by a trigger, so through the real drivers) answered 503, 422 or a logged, counted 500."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty import metrics
from firstparty.store import db
from firstparty.store import models as m
from tests.conftest import SERVER_KEY, AppClient, running_app, settings_for
from tests.segment.wire import basic

SERVER = {"X-Write-Key": SERVER_KEY}

# Each engine's trigger raises, for an event of this name, what its server would raise.
POSTGRES_FAULTS = """
CREATE FUNCTION fp_fault() RETURNS trigger AS $$
BEGIN
  IF NEW.name = 'Refused' THEN
    RAISE EXCEPTION 'value out of range' USING ERRCODE = 'numeric_value_out_of_range',
      COLUMN = 'name';
  ELSIF NEW.name = 'Broken' THEN
    RAISE EXCEPTION 'an internal error' USING ERRCODE = 'XX000';
  ELSIF NEW.name = 'Locked' THEN
    RAISE EXCEPTION 'lock timeout' USING ERRCODE = 'lock_not_available';
  ELSIF NEW.name = 'Shutdown' THEN
    RAISE EXCEPTION 'the database system is shutting down' USING ERRCODE = 'admin_shutdown';
  ELSIF NEW.name = 'Terminated' THEN
    PERFORM pg_terminate_backend(pg_backend_pid());
    PERFORM pg_sleep(5);
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER fp_fault BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION fp_fault();
"""
MYSQL_FAULTS = """
CREATE TRIGGER fp_fault BEFORE INSERT ON events FOR EACH ROW
BEGIN
  IF NEW.name = 'Refused' THEN
    SIGNAL SQLSTATE '22003'
      SET MESSAGE_TEXT = 'Out of range value for column ''name'' at row 1', MYSQL_ERRNO = 1264;
  ELSEIF NEW.name = 'Broken' THEN
    SIGNAL SQLSTATE 'HY000' SET MESSAGE_TEXT = 'an internal error';
  ELSEIF NEW.name = 'Locked' THEN
    SIGNAL SQLSTATE 'HY000' SET MESSAGE_TEXT = 'Lock wait timeout exceeded', MYSQL_ERRNO = 1205;
  ELSEIF NEW.name = 'Shutdown' THEN
    SIGNAL SQLSTATE '08S01' SET MESSAGE_TEXT = 'Server shutdown in progress', MYSQL_ERRNO = 1053;
  END IF;
END
"""
SQLITE_FAULTS = """
CREATE TRIGGER fp_fault BEFORE INSERT ON events FOR EACH ROW WHEN NEW.name = 'Broken'
BEGIN SELECT RAISE(ABORT, 'an internal error'); END
"""
# What each engine's trigger can raise (SQLite's RAISE() is only ever a constraint error).
FAULTS = {
    "postgresql": ("Refused", "Broken", "Locked", "Shutdown", "Terminated"),
    "mysql": ("Refused", "Broken", "Locked", "Shutdown"),
    "sqlite": ("Broken",),
}


@pytest.fixture
async def faulty(database_url: str, engine_kind: str) -> AsyncIterator[AppClient]:
    """The app on a database whose events table fails on purpose for some event names."""
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    statements = {"postgresql": [POSTGRES_FAULTS], "mysql": [MYSQL_FAULTS]}
    with engine.begin() as conn:
        for sql in statements.get(engine_kind, [SQLITE_FAULTS]):
            conn.exec_driver_sql(sql)
    engine.dispose()
    async with running_app(settings_for(database_url)) as client:
        yield client


def needs(engine_kind: str, fault: str) -> None:
    if fault not in FAULTS[engine_kind]:
        pytest.skip(f"{engine_kind} has no trigger raising {fault}")


def unexpected_count(source: str) -> float:
    """firstparty_ingest_errors_total for this source, all exception kinds together."""
    return sum(
        sample.value
        for family in metrics.REGISTRY.collect()
        if family.name == "firstparty_ingest_errors"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["source"] == source
    )


def track(name: str, **fields: Any) -> dict[str, Any]:
    return {"type": "track", "name": name, **fields}


async def test_nul_is_cleaned_from_every_string_on_every_engine(app_client: AppClient) -> None:
    body = track(
        "Le\x00ad",
        event_id="e\x00-1",
        title="\x00",
        properties={"pl\x00an": "pro\x00", "nested": {"k\x00": ["a\x00b", {"\x00": 1}]}},
        context={"fbp": "fb.1\x00.2"},
        user={"email": "a\x00@example.test"},
    )
    r = await app_client.http.post("/v1/events", json=body, headers=SERVER)
    assert r.status_code == 202, r.text
    assert r.json()["event_id"] == "e-1"
    [row] = app_client.rows(m.events)
    assert row["name"] == "Lead" and row["event_id"] == "e-1"
    assert row["request"]["title"] == ""
    assert row["request"]["properties"] == {"plan": "pro", "nested": {"k": ["ab", {"": 1}]}}
    assert row["context"] == {"fbp": "fb.1.2"}


async def test_nul_in_a_batch_and_a_segment_message(app_client: AppClient) -> None:
    events = [track("A\x00"), track("B", properties={"x\x00": "y\x00"})]
    r = await app_client.http.post("/v1/batch", json={"events": events}, headers=SERVER)
    assert [x["ok"] for x in r.json()["results"]] == [True, True], r.text
    message = {"type": "track", "event": "Sig\x00ned Up", "messageId": "m\x001", "userId": "u\x00"}
    r = await app_client.http.post("/segment/v1/track", json=message, headers=basic(SERVER_KEY))
    assert r.status_code == 200, r.text
    rows = {row["name"]: row for row in app_client.rows(m.events)}
    assert set(rows) == {"A", "B", "Signed Up"}
    assert rows["B"]["request"]["properties"] == {"x": "y"}
    assert rows["Signed Up"]["event_id"] == "m1"
    assert rows["Signed Up"]["request"]["segment"]["event"] == "Signed Up"


async def test_an_escaped_backslash_before_u0000_is_text_not_nul(app_client: AppClient) -> None:
    raw = b'{"type": "track", "name": "Lead", "properties": {"path": "C:\\\\u0000"}}'
    r = await app_client.http.post("/v1/events", content=raw, headers=SERVER)
    assert r.status_code == 202, r.text
    assert app_client.rows(m.events)[0]["request"]["properties"] == {"path": "C:\\u0000"}


async def test_an_unexpected_database_error_is_a_logged_counted_500(
    faulty: AppClient, engine_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = unexpected_count("crm")
    with caplog.at_level(logging.WARNING):
        r = await faulty.http.post("/v1/events", json=track("Broken"), headers=SERVER)
    assert r.status_code == 500
    body = r.json()
    assert body == {"error": "internal error", "details": [], "error_id": body["error_id"]}
    [record] = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    line = record.getMessage()
    assert record.name == "firstparty.crash" and record.exc_info is None
    assert body["error_id"] in line and "an internal error" in line and "\n" not in line
    assert "Traceback" not in caplog.text and len(line) < 2000
    assert unexpected_count("crm") == before + 1
    assert faulty.rows(m.events) == []
    assert (
        await faulty.http.post("/v1/events", json=track("Fine"), headers=SERVER)
    ).status_code == 202


@pytest.mark.parametrize("fault", ["Broken", "Refused"])
async def test_one_failing_event_does_not_fail_its_group(
    faulty: AppClient, engine_kind: str, fault: str
) -> None:
    needs(engine_kind, fault)
    events = [track("Before"), track(fault), track("After")]
    r = await faulty.http.post("/v1/batch", json={"events": events}, headers=SERVER)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["ok"] for x in results] == [True, False, True]
    expected = "internal error" if fault == "Broken" else "validation failed"
    assert results[1]["error"] == expected
    assert sorted(row["name"] for row in faulty.rows(m.events)) == ["After", "Before"]


async def test_a_value_the_database_refuses_is_a_422_naming_the_field(
    faulty: AppClient, engine_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    needs(engine_kind, "Refused")
    before = unexpected_count("crm")
    with caplog.at_level(logging.WARNING):
        r = await faulty.http.post("/v1/events", json=track("Refused"), headers=SERVER)
    assert r.status_code == 422, r.text
    [detail] = r.json()["details"]
    assert detail["field"] == "name" and "refused by the database" in detail["message"]
    assert "retry-after" not in r.headers
    assert unexpected_count("crm") == before
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


@pytest.mark.parametrize("fault", ["Locked", "Shutdown", "Terminated"])
async def test_an_unavailable_database_is_a_503_with_retry_after(
    faulty: AppClient, engine_kind: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    needs(engine_kind, fault)
    before = unexpected_count("crm")
    with caplog.at_level(logging.WARNING):
        r = await faulty.http.post("/v1/events", json=track(fault), headers=SERVER)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert unexpected_count("crm") == before
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert "storage unavailable" in caplog.text  # said once, not silently
    # The next request gets a working connection.
    assert (
        await faulty.http.post("/v1/events", json=track("Fine"), headers=SERVER)
    ).status_code == 202


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("Refused", 400, "invalid_request"),
        ("Broken", 500, "internal"),
        ("Locked", 503, "unavailable"),
    ],
)
async def test_segment_answers_the_same_boundary(
    faulty: AppClient, engine_kind: str, fault: str, status: int, code: str
) -> None:
    needs(engine_kind, fault)
    message = {"type": "track", "event": fault, "messageId": "one"}
    r = await faulty.http.post("/segment/v1/track", json=message, headers=basic(SERVER_KEY))
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    batch = [{"type": "track", "event": "Good", "messageId": "g"}, {**message, "messageId": "b"}]
    r = await faulty.http.post(
        "/segment/v1/batch", json={"batch": batch}, headers=basic(SERVER_KEY)
    )
    if fault == "Refused":  # left out like any invalid message; the rest stored
        assert r.status_code == 200 and [x["messageId"] for x in r.json()["rejected"]] == ["b"]
    else:  # the SDK retries the whole batch; messageId deduplicates what was stored
        assert r.status_code == status
    # An unavailable database fails the whole group; a refused or broken event only itself.
    stored = [] if fault == "Locked" else ["Good"]
    assert [row["name"] for row in faulty.rows(m.events)] == stored


@pytest.mark.parametrize("path", ["/v1/events", "/v1/batch", "/segment/v1/track"])
async def test_a_failure_before_the_service_gets_the_same_answer(
    app_client: AppClient, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown key makes the source book read the database: here its table has gone."""
    with app_client.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE sources RENAME TO sources_gone"))
    before = unexpected_count("-")
    body = {"events": [track("Lead")]} if path == "/v1/batch" else track("Lead")
    with caplog.at_level(logging.WARNING):
        r = await app_client.http.post(path, json=body, headers={"X-Write-Key": "wk_unknown_key"})
    assert r.status_code == 500 and "sources_gone" not in r.text
    [record] = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert record.name == "firstparty.crash" and record.exc_info is None
    assert r.json()["error_id"] in record.getMessage()
    assert unexpected_count("-") == before + 1
