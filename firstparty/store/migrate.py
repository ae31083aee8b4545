"""Apply Alembic migrations programmatically (the `migrate` command and `serve` on start).

Alembic is imported only to migrate: a server whose database is current never loads it (about
10 MB of RSS, with Mako). `is_current` reads the version table itself, against `newest()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty.store import partitions

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (default: the newest), with this month's and next
    month's partitions (PostgreSQL, once partitioned). A current database is left alone (not
    even Alembic is loaded, nor SQLite's foreign keys checked)."""
    if revision != "head" or not is_current(engine):
        from alembic import command

        config = _config()
        with _migrating(engine) as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    if revision == "head":
        partitions.ensure(engine)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to `revision` ("base": no tables)."""
    from alembic import command

    config = _config()
    with _migrating(engine) as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


@contextlib.contextmanager
def _migrating(engine: Engine) -> Iterator[sa.Connection]:
    """One transaction for the migrations. On SQLite, foreign keys are off meanwhile, as its
    manual says for a table made again (`0025_event_id_key`: dropping the old `events` would
    otherwise fail, other tables' rows naming it): the change is checked before it commits."""
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection if conn.dialect.name == "sqlite" else None
        if raw is not None:  # outside any transaction, where SQLite takes it
            raw.cursor().execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                yield conn
                if raw is not None:
                    _check_foreign_keys(conn)
        finally:
            if raw is not None:
                raw.cursor().execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(conn: sa.Connection) -> None:
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
    if broken is not None:
        raise RuntimeError(f"the migration left a row naming a missing one: {tuple(broken)}")


def newest() -> str:
    """The newest revision: the chain is linear and each file is named after its revision
    (tests/store/test_migrations.py checks both against Alembic's own reading)."""
    return max(path.stem for path in (MIGRATIONS / "versions").glob("[0-9]*.py"))


def is_current(engine: Engine) -> bool:
    """Whether the database is at the newest revision."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return False
        found = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
        return set(found) == {newest()}
