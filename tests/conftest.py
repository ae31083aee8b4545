"""Shared fixtures: a throwaway database per test on each engine, and settings for it.

`engine_url` is parametrised over SQLite, PostgreSQL and MariaDB/MySQL. PostgreSQL and MySQL run
when reachable (FIRSTPARTY_TEST_POSTGRES / FIRSTPARTY_TEST_MYSQL override the server URLs); with
CI=true an unreachable server fails the run instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


def _admin_engine(kind: str) -> sa.Engine:
    if kind == "postgresql":
        return db.create_engine(
            f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
        )
    return db.create_engine(f"{MYSQL}/", isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)


def _server_url(kind: str, name: str) -> str:
    return f"{POSTGRES if kind == 'postgresql' else MYSQL}/{name}"


def make_database(kind: str, tmp_path: Path, *, migrated: bool = False) -> Iterator[str]:
    """Create a database of this kind, yield its URL, drop it afterwards.

    Empty by default; `migrated=True` gives one at the newest revision, copied from a template
    that this test process migrated once (the migrations themselves are tested in
    tests/store/test_migrations.py; running them again for every test took minutes). On the
    servers the copy is made ahead, while the test before runs, and the drop happens after the
    test, in the background (see `_Spares`): a MariaDB copy and drop took about 2 s a test.
    """
    _require(kind)
    if kind == "sqlite":
        path = tmp_path / "firstparty.db"
        if migrated:
            _copy_sqlite(_template("sqlite"), path)
        yield f"sqlite:///{path}"
        return
    if migrated:
        name = _spares.take(kind)
    else:
        name = _new_name()
        with contextlib.closing(_admin_engine(kind).connect()) as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield _server_url(kind, name)
    finally:
        _spares.later(_drop_database, kind, name)


def _new_name() -> str:
    return f"fp_test_{os.getpid()}_{secrets.token_hex(4)}"


def _drop_database(kind: str, name: str) -> None:
    force = " WITH (FORCE)" if kind == "postgresql" else ""
    admin = _admin_engine(kind)
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}{force}"))
    admin.dispose()


def _clone_from_template(kind: str, template: str) -> str:
    name = _new_name()
    admin = _admin_engine(kind)
    with admin.connect() as conn:
        _clone(conn, kind, template, name)
    admin.dispose()
    return name


class _Spares:
    """Migrated server databases copied ahead (`AHEAD` per engine) and drops done after the
    test, on a few background threads: MariaDB spends its time syncing files, not computing.
    """

    AHEAD, THREADS = 2, 3

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(self.THREADS, thread_name_prefix="fp-test-databases")
        self._ready: dict[str, list[tuple[str, Future[str]]]] = {}

    def take(self, kind: str) -> str:
        template = _template(kind)
        ready = self._ready.setdefault(kind, [])
        for made_from, stale in [r for r in ready if r[0] != template]:  # migrations changed
            ready.remove((made_from, stale))
            self.later(_drop_database, kind, stale.result())
        while len(ready) < self.AHEAD + 1:
            ready.append((template, self._pool.submit(_clone_from_template, kind, template)))
        return ready.pop(0)[1].result()

    def later(self, work: Callable[..., object], *args: object) -> None:
        self._pool.submit(work, *args)

    def finish(self) -> None:
        """Drop the copies made ahead and wait for every drop (before the templates go)."""
        for kind, ready in self._ready.items():
            for _, future in ready:
                with contextlib.suppress(Exception):
                    self.later(_drop_database, kind, future.result())
        self._ready.clear()
        self._pool.shutdown(wait=True)


_spares = _Spares()


# One migrated template per engine and test process: a database name (PostgreSQL, MySQL) or the
# path of a SQLite file, made on first use and dropped at the end of the session. A template is
# made again when the migration files change under a running session (while developing).
_templates: dict[str, tuple[str, object]] = {}
_template_dir: list[Path] = []


def _migrations_stamp() -> object:
    versions = migrate.MIGRATIONS / "versions"
    return sorted((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in versions.glob("*.py"))


def _template(kind: str) -> str:
    stamp = _migrations_stamp()
    if kind in _templates:
        made, made_at = _templates[kind]
        if made_at == stamp:
            return made
        _drop_template(kind, made)
    if kind == "sqlite":
        if not _template_dir:
            _template_dir.append(Path(tempfile.mkdtemp(prefix="fp-template-")))
        path = _template_dir[0] / f"template-{secrets.token_hex(4)}.db"
        url = f"sqlite:///{path}"
        made = str(path)
    else:
        made = f"fp_template_{os.getpid()}_{secrets.token_hex(4)}"
        admin = _admin_engine(kind)
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {made}"))
        admin.dispose()
        url = _server_url(kind, made)
    # Registered before migrating, so that a failed migration's database is dropped too.
    _templates[kind] = (made, None)
    engine = db.create_engine(url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    engine.dispose()
    _templates[kind] = (made, stamp)
    return made


def _drop_template(kind: str, made: str) -> None:
    del _templates[kind]
    if kind == "sqlite":
        Path(made).unlink(missing_ok=True)
        return
    admin = _admin_engine(kind)
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {made}"))
    admin.dispose()


def _copy_sqlite(source: str, target: Path) -> None:
    """SQLite's online backup: the whole database, whatever is still in its write-ahead log."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def _clone(conn: sa.Connection, kind: str, template: str, name: str) -> None:
    if kind == "postgresql":
        # WAL_LOG copies block by block without the checkpoint FILE_COPY forces (PostgreSQL 15+).
        version = conn.dialect.server_version_info or (0,)
        strategy = " STRATEGY WAL_LOG" if version >= (15,) else ""
        conn.execute(sa.text(f"CREATE DATABASE {name} TEMPLATE {template}{strategy}"))
        return
    # MySQL/MariaDB have no template databases: each table as SHOW CREATE TABLE gives it (keys,
    # foreign keys, collations), then the rows the migrations wrote (alembic_version).
    conn.execute(sa.text(f"CREATE DATABASE {name}"))
    tables = [
        str(row[0])
        for row in conn.execute(
            sa.text(f"SHOW FULL TABLES FROM {template} WHERE Table_type = 'BASE TABLE'")
        )
    ]
    conn.execute(sa.text(f"USE {name}"))
    conn.execute(sa.text("SET SESSION foreign_key_checks = 0"))
    try:
        for table in tables:
            ddl = str(conn.execute(sa.text(f"SHOW CREATE TABLE {template}.`{table}`")).one()[1])
            conn.exec_driver_sql(re.sub(r" AUTO_INCREMENT=\d+", "", ddl))
        for table in tables:
            conn.execute(sa.text(f"INSERT INTO `{table}` SELECT * FROM {template}.`{table}`"))
    finally:
        conn.execute(sa.text("SET SESSION foreign_key_checks = 1"))


@pytest.fixture(scope="session", autouse=True)
def _drop_templates() -> Iterator[None]:
    yield
    _spares.finish()
    for kind, (made, _) in list(_templates.items()):
        _drop_template(kind, made)
    for directory in _template_dir:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=ENGINES)
def engine_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(engine_kind: str, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated database of each kind in turn."""
    yield from make_database(engine_kind, tmp_path, migrated=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty, migrated SQLite database (for tests that are about logic, not the engine)."""
    path = tmp_path / "firstparty.db"
    _copy_sqlite(_template("sqlite"), path)
    return f"sqlite:///{path}"


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
