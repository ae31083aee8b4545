"""deliveries: no index on event_pk alone; the unique (event_pk, destination) finds them

Revision ID: 0026_deliveries_event_pk
Revises: 0025_event_id_key

Every read of an event's outbox rows (its page, erase and export, retention, replay) names the
event: the unique key's first column serves it. The index it duplicated was one more B-tree to
write for every row the outbox takes, and about 45 bytes a row on disk.
"""

from alembic import op

revision = "0026_deliveries_event_pk"
down_revision = "0025_event_id_key"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_event_pk", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_event_pk", "deliveries", ["event_pk"])
