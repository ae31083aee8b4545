"""Issue 13: a source's key can be shown (prefix only), rotated, disabled, enabled and deleted,
from the CLI; every server process refuses the old key within seconds. `sources create`
validates kind and origins. On every engine, through the real app and the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from firstparty import app as app_module
from firstparty.collect import keys, sources
from firstparty.store import db, migrate
from firstparty.store.models import events
from tests.conftest import SECRET, AppClient, running_app, settings_for
from tests.delivery.outbox import eventually

BIN = [sys.executable, "-m", "firstparty.cli"]


def cli(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTPARTY_")}
    env |= {"FIRSTPARTY_DATABASE_URL": database_url, "FIRSTPARTY_SECRET_KEY": SECRET}
    return subprocess.run(
        [*BIN, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


async def status(app: AppClient, key: str) -> int:
    """401 when the key is refused, else 422: an invalid body stores nothing while polling."""
    r = await app.http.post("/v1/events", headers={"X-Write-Key": key}, json={"type": "nope"})
    return int(r.status_code)


async def answers(app: AppClient, key: str, expected: int) -> None:
    async def check() -> bool:
        return await status(app, key) == expected

    await eventually(check, timeout=10)


async def test_rotate_disable_enable_delete_reach_the_running_server(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server re-reads the sources table every SOURCES_REFRESH_SECONDS (2 s); a shorter
    # interval here only shortens the waits below, whose limit (10 s) is unchanged.
    monkeypatch.setattr(app_module, "SOURCES_REFRESH_SECONDS", 0.1)
    settings = settings_for(database_url)
    secret = settings.secret_key.get_secret_value()
    made = db.create_engine(database_url)
    first = sources.create(made, secret, name="shop", kind="server", origins=[])
    made.dispose()
    async with running_app(settings) as app:
        stored = await app.http.post(
            "/v1/events", headers={"X-Write-Key": first}, json={"type": "page"}
        )
        assert stored.status_code == 202
        assert await status(app, first) == 422
        rotated = cli(tmp_path, database_url, "sources", "rotate", "shop")
        assert rotated.returncode == 0, rotated.stderr
        second = rotated.stdout.strip().splitlines()[-1]
        assert second.startswith("sk_") and second != first
        await answers(app, first, 401)  # refused within the refresh interval, no restart
        assert await status(app, second) == 422

        assert cli(tmp_path, database_url, "sources", "disable", "shop").returncode == 0
        await answers(app, second, 401)
        shown = cli(tmp_path, database_url, "sources", "show", "shop").stdout
        assert "state:      disabled" in shown and f"key:        {second[:7]}…" in shown
        assert second[7:] not in shown
        assert cli(tmp_path, database_url, "sources", "enable", "shop").returncode == 0
        await answers(app, second, 422)

        assert cli(tmp_path, database_url, "sources", "delete", "shop").returncode == 0
        await answers(app, second, 401)
        assert len(app.rows(events)) == 1  # a deleted source's events stay


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    made = db.create_engine(sqlite_url)
    yield made
    made.dispose()


def test_show_names_kind_origins_and_key_prefix_only(sqlite_url: str, tmp_path: Path) -> None:
    created = cli(
        tmp_path, sqlite_url, "sources", "create", "demo", "--origin", "http://127.0.0.1:8000"
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    shown = cli(tmp_path, sqlite_url, "sources", "show", "demo")
    assert shown.returncode == 0
    assert "kind:       browser" in shown.stdout
    assert "origins:    http://127.0.0.1:8000" in shown.stdout
    assert f"key:        {key[:7]}…" in shown.stdout and key not in shown.stdout
    listed = cli(tmp_path, sqlite_url, "sources").stdout
    assert "demo" in listed and "enabled" in listed and key not in listed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "browser"], "a browser source needs at least one origin"),
        (
            ["--kind", "server", "--origin", "https://www.example.com"],
            "a server source takes no origins",
        ),
        (
            ["--origin", "www.example.com"],
            "origin 'www.example.com' must look like https://www.example.com",
        ),
        (["--origin", "https://www.example.com", "--rate-limit", "0"], "rate_limit_per_second"),
    ],
)
def test_create_refuses_what_would_not_work_in_one_line(
    sqlite_url: str, tmp_path: Path, args: list[str], message: str
) -> None:
    result = cli(tmp_path, sqlite_url, "sources", "create", "www2", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_config_source_is_changed_in_the_file(sqlite_url: str, engine: Engine) -> None:
    settings = settings_for(sqlite_url)
    migrate.upgrade(engine)
    with pytest.raises(keys.SourceError, match="defined in the config file"):
        keys.rotate(settings=settings, engine=engine, name="www")
    with pytest.raises(keys.SourceError, match="no source named 'nope'"):
        keys.show(settings=settings, engine=engine, name="nope")
    assert keys.show(settings=settings, engine=engine, name="www").kept_in == "config"
