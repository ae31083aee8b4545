"""Apply Alembic migrations programmatically (the `migrate` command and `serve` on start).

Alembic is imported only to migrate: a server whose database is current never loads it (about
10 MB of RSS, with Mako). `is_current` reads the version table itself, against `newest()`.
"""

from __future__ import annotations

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
    month's partitions (PostgreSQL, once partitioned)."""
    from alembic import command

    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    if revision == "head":
        partitions.ensure(engine)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to `revision` ("base": no tables)."""
    from alembic import command

    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


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
