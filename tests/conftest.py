"""Shared fixtures: a throwaway database per test on each engine, and settings for it.

`engine_url` is parametrised over SQLite, PostgreSQL and MariaDB/MySQL. PostgreSQL and MySQL run
when reachable (FIRSTPARTY_TEST_POSTGRES / FIRSTPARTY_TEST_MYSQL override the server URLs); with
CI=true an unreachable server fails the run instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty import settings as settings_mod
from firstparty.store import db, migrate

POSTGRES = os.environ.get("FIRSTPARTY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
MYSQL = os.environ.get("FIRSTPARTY_TEST_MYSQL", "mysql://root@127.0.0.1:3306")
SECRET = "test-secret-key-" + "x" * 40
ENGINES = ["sqlite", "postgresql", "mysql"]

_reachable: dict[str, bool] = {}


@pytest.fixture(autouse=True)
def _no_developer_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests see neither the developer's `FIRSTPARTY_*` variables nor a `./firstparty.toml`.

    The test servers' own overrides (`FIRSTPARTY_TEST_*`) stay; every test runs in its own
    empty working directory, so the default config file is never found by accident.
    """
    for name in list(os.environ):
        if name.startswith("FIRSTPARTY_") and not name.startswith("FIRSTPARTY_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _server_reachable(kind: str) -> bool:
    if kind not in _reachable:
        admin = f"{POSTGRES}/postgres" if kind == "postgresql" else f"{MYSQL}/"
        try:
            engine = db.create_engine(admin, poolclass=sa.NullPool)
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _reachable[kind] = True
        except Exception:
            _reachable[kind] = False
    return _reachable[kind]


def _require(kind: str) -> None:
    if kind == "sqlite" or _server_reachable(kind):
        return
    message = f"{kind} is not reachable; start it (see .ci/run) to run these tests"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def make_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """Create an empty database of this kind, yield its URL, drop it afterwards."""
    _require(kind)
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'firstparty.db'}"
        return
    name = f"fp_test_{os.getpid()}_{secrets.token_hex(4)}"
    if kind == "postgresql":
        admin = db.create_engine(
            f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
        )
        url = f"{POSTGRES}/{name}"
    else:
        admin = db.create_engine(f"{MYSQL}/", poolclass=sa.NullPool)
        url = f"{MYSQL}/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
        conn.commit()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
            conn.commit()
        admin.dispose()


@pytest.fixture(params=ENGINES)
def engine_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(engine_kind: str, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated database of each kind in turn."""
    for url in make_database(engine_kind, tmp_path):
        engine = db.create_engine(url, poolclass=sa.NullPool)
        migrate.upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty, migrated SQLite database (for tests that are about logic, not the engine)."""
    url = f"sqlite:///{tmp_path / 'firstparty.db'}"
    engine = db.create_engine(url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    engine.dispose()
    return url


BROWSER_KEY = "wk_browser_test_key"
SERVER_KEY = "wk_server_test_key_secret"
# What the test clients say they are: a real browser, so browser-source events are not flagged as
# an HTTP library's (collect/bots.py); tests about robots set their own User-Agent.
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


def base_config(database_url: str, **overrides: Any) -> dict[str, Any]:
    """A config dict with one browser and one server source, ready for `settings_for`."""
    config: dict[str, Any] = {
        "database_url": database_url,
        "secret_key": SECRET,
        "admin_token": "admin-token-for-tests",
        "cookie": {"domain": "example.test", "secure": True},
        "sources": [
            {
                "name": "www",
                "kind": "browser",
                "write_key": BROWSER_KEY,
                "origins": ["https://www.example.test"],
            },
            {"name": "crm", "kind": "server", "write_key": SERVER_KEY},
        ],
    }
    config.update(overrides)
    return config


def settings_for(database_url: str, **overrides: Any) -> settings_mod.Settings:
    return settings_mod.Settings.model_validate(base_config(database_url, **overrides))


class AppClient:
    """The real ASGI app in-process, with an httpx client on it and its settings and engine."""

    def __init__(self, app: Any, client: Any, settings: settings_mod.Settings) -> None:
        self.app = app
        self.http = client
        self.settings = settings
        self.engine = app.state.runtime.engine

    def rows(self, table: sa.Table) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(table)).mappings())


@contextlib.asynccontextmanager
async def running_app(
    settings: settings_mod.Settings, *, run_worker: bool = False
) -> AsyncIterator[AppClient]:
    import httpx

    from firstparty.app import create_app

    app = create_app(settings, run_worker=run_worker)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 50000))
        async with httpx.AsyncClient(
            transport=transport,
            base_url="https://t.example.test",
            headers={"User-Agent": BROWSER_UA},
        ) as c:
            yield AppClient(app, c, settings)


@pytest.fixture
async def app_client(database_url: str) -> AsyncIterator[AppClient]:
    """The app on each database engine in turn, worker off."""
    async with running_app(settings_for(database_url)) as client:
        yield client


@pytest.fixture
async def sqlite_client(sqlite_url: str) -> AsyncIterator[AppClient]:
    """The app on SQLite only, for tests about logic rather than the engine."""
    async with running_app(settings_for(sqlite_url)) as client:
        yield client
