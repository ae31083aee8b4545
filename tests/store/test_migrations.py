"""The migrations build exactly the schema of `store.models`, and go down and up again, on all
three engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from firstparty.store import db, migrate, models, partitions

# What a partitioned table cannot have on PostgreSQL (0015_partition; models.events says why).
PARTITIONED_LACKS = [
    ("add_constraint", "events", "uq_events_event_id_source"),
    ("add_fk", "deliveries", "fk_deliveries_event_pk"),
    ("add_fk", "track_events", "fk_track_events_track_id"),
]


# Indexes the models make on PostgreSQL alone (`ddl_if`; Alembic's comparison does not read it).
POSTGRESQL_ONLY = {"ix_deliveries_failed_destination_id"}


def _partition_names(conn: sa.Connection) -> set[str]:
    if not partitions.partitioned(conn.dialect):
        return set()
    return {p.name for table in partitions.PARTITIONED for p in partitions.listed(conn, table)}


def _differences(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        skipped = _partition_names(conn)

        def include_name(name: str | None, type_: str, parent: Any) -> bool:
            return not (type_ == "table" and name in skipped)

        def include_object(item: Any, name: str | None, type_: str, *_: Any) -> bool:
            return not (type_ == "index" and name in POSTGRESQL_ONLY) or postgresql

        postgresql = conn.dialect.name == "postgresql"
        opts = {
            "compare_type": False,
            "include_name": include_name,
            "include_object": include_object,
        }
        context = MigrationContext.configure(conn, opts=opts)
        found = list(compare_metadata(context, models.metadata))
    if engine.dialect.name != "postgresql":
        return found
    lacks = sorted((d[0], d[1].table.name, d[1].name) for d in found if _is_lack(d))
    assert lacks == sorted(PARTITIONED_LACKS)
    return [d for d in found if not _is_lack(d)]


def _is_lack(difference: Any) -> bool:
    return isinstance(difference, tuple) and difference[0] in ("add_constraint", "add_fk")


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    assert migrate.is_current(engine)
    assert _differences(engine) == []
    migrate.downgrade(engine, "base")
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
    assert not migrate.is_current(engine)
    migrate.upgrade(engine)
    assert migrate.is_current(engine) and _differences(engine) == []
    engine.dispose()


def test_newest_is_alembics_one_head() -> None:
    """`migrate.newest` reads the file names: each is named after its revision, in one chain."""
    scripts = ScriptDirectory.from_config(migrate._config())
    assert scripts.get_heads() == [migrate.newest()]
    chain = list(scripts.walk_revisions())
    assert all(Path(str(s.path)).stem == s.revision for s in chain)
    assert len(chain) == len(list((migrate.MIGRATIONS / "versions").glob("[0-9]*.py")))
