"""events: one index over the event id, (event_id, source), instead of two

Revision ID: 0025_event_id_key
Revises: 0024_request_bytes

Event ids are random (UUIDs, from fp.js and the Segment SDKs), so each event stored is an insert
at a random place of every index that starts with its event id, and such an index costs more as
it outgrows the page cache. `events` had two: the unique (source, event_id) and an index on
event_id for the admin's filter. Measured on SQLite (events alone, groups of 64, the server's
settings): 34 -> 25 µs of CPU and 18.0 -> 13.3 KB written per event with one of them, at 100,000
events (docs/performance.md). One is kept, the event id first, which serves both:

- SQLite, MySQL/MariaDB: the unique key becomes (event_id, source) and ix_events_event_id goes.
  SQLite cannot change a table's UNIQUE clause in place: `events` is made again and its rows
  copied (foreign keys are off meanwhile and checked after: store.migrate.upgrade).
- PostgreSQL (events partitioned, 0015_partition): `event_keys`, which refuses duplicates
  there, takes (event_id, source) as its primary key, and ix_events_event_id goes: an event is
  found by its id through event_keys (reports.browse).
"""

from alembic import op

revision = "0025_event_id_key"
down_revision = "0024_request_bytes"
branch_labels = None
depends_on = None

NEW, OLD = ("event_id", "source"), ("source", "event_id")


def upgrade() -> None:
    _keys(NEW)
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_events_event_id", table_name="events")
        return
    with op.batch_alter_table("events", recreate="auto") as batch:  # SQLite: made again
        batch.drop_index("ix_events_event_id")
        batch.drop_constraint("uq_events_source_event_id", type_="unique")
        batch.create_unique_constraint("uq_events_event_id_source", list(NEW))


def downgrade() -> None:
    _keys(OLD)
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_events_event_id", "events", ["event_id"])
        return
    with op.batch_alter_table("events", recreate="auto") as batch:
        batch.drop_constraint("uq_events_event_id_source", type_="unique")
        batch.create_unique_constraint("uq_events_source_event_id", list(OLD))
        batch.create_index("ix_events_event_id", ["event_id"])


def _keys(columns: tuple[str, str]) -> None:
    """event_keys' primary key over `columns`, in that order."""
    with op.batch_alter_table("event_keys", recreate="auto") as batch:
        batch.drop_constraint("pk_event_keys", type_="primary")
        batch.create_primary_key("pk_event_keys", list(columns))
