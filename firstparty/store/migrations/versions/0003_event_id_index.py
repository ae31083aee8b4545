"""events.event_id indexed on its own: the admin API and replay find events by it

Revision ID: 0003_event_id_index
Revises: 0002_identity
"""

from alembic import op

revision = "0003_event_id_index"
down_revision = "0002_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_event_id", "events", ["event_id"])


def downgrade() -> None:
    op.drop_index("ix_events_event_id", table_name="events")
