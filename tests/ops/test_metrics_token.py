"""Issue 13: /metrics is documented, and behind a bearer token when `metrics_token` is set."""

from __future__ import annotations

from pathlib import Path

from firstparty import settings as settings_mod
from tests.conftest import running_app, settings_for


async def test_metrics_are_open_without_a_token(sqlite_url: str) -> None:
    async with running_app(settings_for(sqlite_url)) as app:
        r = await app.http.get("/metrics")
        assert r.status_code == 200 and "firstparty_events_total" in r.text


async def test_metrics_ask_for_the_token_when_one_is_set(sqlite_url: str) -> None:
    settings = settings_for(sqlite_url, metrics_token="metrics-token-0123456789")
    async with running_app(settings) as app:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eA=="}):
            r = await app.http.get("/metrics", headers=headers)
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == "Bearer"
            assert "firstparty_" not in r.text
        ok = await app.http.get(
            "/metrics", headers={"Authorization": "Bearer metrics-token-0123456789"}
        )
        assert ok.status_code == 200 and "firstparty_events_total" in ok.text


def test_the_token_comes_from_the_environment(tmp_path: Path) -> None:
    env = {"FIRSTPARTY_METRICS_TOKEN": "from-the-env-0123456789"}
    env["FIRSTPARTY_DATABASE_URL"] = f"sqlite:///{tmp_path / 'fp.db'}"
    loaded = settings_mod.load(env)
    assert loaded.metrics_token is not None
    assert loaded.metrics_token.get_secret_value() == "from-the-env-0123456789"
