"""The migrations build exactly the schema of `store.models`, and go down and up again, on all
three engines."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from firstparty.store import db, migrate, models


def _differences(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        return list(compare_metadata(context, models.metadata))


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    assert migrate.is_current(engine)
    assert _differences(engine) == []
    migrate.downgrade(engine, "base")
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(engine)
    assert migrate.is_current(engine) and _differences(engine) == []
    engine.dispose()
