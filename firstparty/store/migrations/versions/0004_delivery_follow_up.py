"""deliveries: the platform's request id and the follow-up deadline (status `confirming`)

Revision ID: 0004_delivery_follow_up
Revises: 0003_event_id_index
"""

import sqlalchemy as sa
from alembic import op

from firstparty.store.models import UTCDateTime

revision = "0004_delivery_follow_up"
down_revision = "0003_event_id_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("request_id", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("confirm_until", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("confirm_until")
        batch.drop_column("request_id")
