"""A 500 anywhere: one compact log line with an error id, the id answered, counted."""

from __future__ import annotations

import logging

import pytest
from starlette.routing import Route

from firstparty import crashes, metrics
from tests.conftest import AppClient


def internal_errors(error: str) -> float:
    value = metrics.REGISTRY.get_sample_value("firstparty_internal_errors_total", {"error": error})
    return value or 0.0


async def _broken(request: object) -> None:
    raise ZeroDivisionError("a bug in a handler")


async def test_an_unhandled_error_is_one_line_with_the_id_answered(
    sqlite_client: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    sqlite_client.app.router.routes.append(Route("/broken", _broken))
    before = internal_errors("ZeroDivisionError")
    with caplog.at_level(logging.INFO):
        r = await sqlite_client.http.get("/broken")
    assert r.status_code == 500
    body = r.json()
    assert body == {"error": "internal error", "details": [], "error_id": body["error_id"]}
    assert "a bug" not in r.text
    [record] = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]  # not twice
    line = record.getMessage()
    assert record.exc_info is None and "\n" not in line and "Traceback" not in caplog.text
    assert line.startswith(f"error {body['error_id']} on GET /broken: ZeroDivisionError: a bug")
    assert "tests/test_crashes.py" in line or "test_crashes.py" in line
    assert internal_errors("ZeroDivisionError") == before + 1


def test_the_line_is_bounded_and_innermost_first() -> None:
    def inner() -> None:
        raise ValueError("x" * 10_000 + "\n second line")

    def outer() -> None:
        inner()

    try:
        outer()
    except ValueError as exc:
        line = crashes.compact(exc)
    assert "\n" not in line and len(line) < 1000
    assert line.index("in inner") < line.index("in outer")
