"""identity: sent codes, the tries log for OTP limits, the visitor -> user link history

Revision ID: 0002_identity
Revises: 0001_core
"""

import sqlalchemy as sa
from alembic import op

from firstparty.store.models import UTCDateTime

revision = "0002_identity"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("otp_codes") as batch:
        batch.add_column(sa.Column("sent_at", UTCDateTime(), nullable=True))
    op.create_index("ix_otp_codes_ip_created_at", "otp_codes", ["ip", "created_at"], unique=False)
    op.create_index("ix_otp_codes_created_at", "otp_codes", ["created_at"], unique=False)
    op.create_table(
        "otp_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("phone_key", sa.String(length=64), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_otp_attempts")),
    )
    op.create_index(
        "ix_otp_attempts_ip_created_at", "otp_attempts", ["ip", "created_at"], unique=False
    )
    op.create_index(
        "ix_otp_attempts_phone_key_created_at",
        "otp_attempts",
        ["phone_key", "created_at"],
        unique=False,
    )
    op.create_table(
        "visitor_users",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("visitor_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("linked_at", UTCDateTime(), nullable=False),
        sa.Column("unlinked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_visitor_users_user_id")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visitor_users")),
    )
    op.create_index(
        op.f("ix_visitor_users_visitor_id"), "visitor_users", ["visitor_id"], unique=False
    )
    op.create_index(op.f("ix_visitor_users_user_id"), "visitor_users", ["user_id"], unique=False)


def downgrade() -> None:
    # Dropping a table drops its indexes; MySQL refuses to drop an index a foreign key needs.
    op.drop_table("visitor_users")
    op.drop_table("otp_attempts")
    op.drop_index("ix_otp_codes_created_at", table_name="otp_codes")
    op.drop_index("ix_otp_codes_ip_created_at", table_name="otp_codes")
    with op.batch_alter_table("otp_codes") as batch:
        batch.drop_column("sent_at")
