"""first hour: sources can be disabled; the instance's facts (secret fingerprint, admin token)

Revision ID: 0007_first_hour
Revises: 0006_abuse
"""

import sqlalchemy as sa
from alembic import op

from firstparty.store.models import UTCDateTime

revision = "0007_first_hour"
down_revision = "0006_abuse"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("disabled_at", UTCDateTime(), nullable=True))
    op.create_table(
        "instance",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("instance")
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("disabled_at")
