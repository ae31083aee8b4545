"""destinations added in the admin UI, beside the config file's (secrets encrypted or env:NAME)

Revision ID: 0008_destinations
Revises: 0007_first_hour
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from firstparty.store.models import UTCDateTime

revision = "0008_destinations"
down_revision = "0007_first_hour"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "destinations",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column(
            "entry",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("destinations")
