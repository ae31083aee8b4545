"""destination_setup's newest answer of each destination (`figures.newest_answers`): the newest
request that got an answer, of any status, within the window, found among each status's newest
LOOK_BACK requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from firstparty.alerts import figures
from firstparty.store import db
from firstparty.store.models import tracks

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def _request(destination: str, status: str, answer: int | None, minutes_ago: float) -> Any:
    return {"destination": destination, "status": status, "attempt": 1, "method": "POST",
            "url": "http://127.0.0.1/x", "response_status": answer,
            "response_body": None if answer is None else f"{destination} {answer}",
            "created_at": NOW - timedelta(minutes=minutes_ago)}  # fmt: skip


def test_the_newest_answer_of_each_destination_within_the_window(sqlite_url: str) -> None:
    engine = db.create_engine(sqlite_url)
    rows = [
        _request("meta", "failed", 401, 30),
        _request("meta", "delivered", 200, 20),  # the newest answered: this one
        _request("meta", "failed", None, 10),  # no answer (a network error)
        _request("tiktok", "failed", 401, 90),  # before the window
        _request("google", "pending", 503, 5),  # answered, about to be tried again
        # more unanswered requests than LOOK_BACK after an answer: not looked that far back
        _request("ga4", "delivered", 200, 50),
        *[_request("ga4", "delivered", None, 40) for _ in range(figures.LOOK_BACK)],
    ]
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(tracks), rows)
        found = figures.newest_answers(
            engine, now=NOW, minutes=60, destinations=["meta", "tiktok", "google", "ga4", "x"]
        )
    finally:
        engine.dispose()
    assert found == {"meta": (200, "meta 200"), "google": (503, "google 503")}
