"""ingest corners: a server event's own click ids (click_ids.event_pk), GA4 sessions per visitor

Revision ID: 0005_ingest_corners
Revises: 0004_delivery_follow_up
"""

import sqlalchemy as sa
from alembic import op

from firstparty.store.models import UTCDateTime

revision = "0005_ingest_corners"
down_revision = "0004_delivery_follow_up"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("click_ids") as batch:
        batch.alter_column("visitor_id", existing_type=sa.String(length=32), nullable=True)
        batch.add_column(sa.Column("event_pk", sa.String(length=26), nullable=True))
        batch.create_index("ix_click_ids_event_pk", ["event_pk"], unique=False)
    with op.batch_alter_table("visitors") as batch:
        batch.add_column(sa.Column("session_started_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("session_number", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("visitors") as batch:
        batch.drop_column("session_number")
        batch.drop_column("session_started_at")
    op.execute("DELETE FROM click_ids WHERE visitor_id IS NULL")
    with op.batch_alter_table("click_ids") as batch:
        batch.drop_index("ix_click_ids_event_pk")
        batch.drop_column("event_pk")
        batch.alter_column("visitor_id", existing_type=sa.String(length=32), nullable=False)
