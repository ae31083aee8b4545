"""tracks: the size of each logged request body, so lists leave long ones out unread

Revision ID: 0024_request_bytes
Revises: 0023_failed_index
"""

import sqlalchemy as sa
from alembic import op

revision = "0024_request_bytes"
down_revision = "0023_failed_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The request log's list read every body of its page: an audience sync's request to Meta is
    # 689 KB, and PostgreSQL had to serialise each JSONB body to cut it (47 ms a page of 100 at
    # 500,000 events). Rows logged before stay null: their bodies are listed whole, as before.
    op.add_column("tracks", sa.Column("request_bytes", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("tracks", "request_bytes")
