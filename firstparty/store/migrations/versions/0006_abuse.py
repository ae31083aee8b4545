"""abuse and bots: per-source rate limits, the OTP visitor, the bot flag, admin sign-out and
sign-in failures

Revision ID: 0006_abuse
Revises: 0005_ingest_corners
"""

import sqlalchemy as sa
from alembic import op

from firstparty.store.models import UTCDateTime

revision = "0006_abuse"
down_revision = "0005_ingest_corners"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("rate_limit_per_second", sa.Float(), nullable=True))
        batch.add_column(sa.Column("rate_limit_burst", sa.Integer(), nullable=True))
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("bot", sa.String(length=32), nullable=True))
    with op.batch_alter_table("otp_codes") as batch:
        batch.add_column(sa.Column("visitor_id", sa.String(length=32), nullable=True))
        batch.create_index(
            "ix_otp_codes_visitor_id_created_at", ["visitor_id", "created_at"], unique=False
        )
    op.create_table(
        "admin_revocations",
        sa.Column("nonce", sa.String(length=64), primary_key=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_admin_revocations_expires_at", "admin_revocations", ["expires_at"])
    op.create_table(
        "admin_login_failures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_admin_login_failures_address_created_at",
        "admin_login_failures",
        ["address", "created_at"],
    )


def downgrade() -> None:
    op.drop_table("admin_login_failures")
    op.drop_table("admin_revocations")
    with op.batch_alter_table("otp_codes") as batch:
        batch.drop_index("ix_otp_codes_visitor_id_created_at")
        batch.drop_column("visitor_id")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("bot")
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("rate_limit_burst")
        batch.drop_column("rate_limit_per_second")
