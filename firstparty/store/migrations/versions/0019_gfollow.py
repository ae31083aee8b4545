"""audience_members_acked.request_id: members a platform accepted but has not yet confirmed

Revision ID: 0019_gfollow
Revises: 0018_operators
"""

import sqlalchemy as sa
from alembic import op

revision = "0019_gfollow"
down_revision = "0018_operators"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audience_members_acked") as batch:
        batch.add_column(sa.Column("request_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audience_members_acked") as batch:
        batch.drop_column("request_id")
