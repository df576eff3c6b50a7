"""archive: which tasks' outputs are copied, and where each copy stands

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("archive", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "task_archives",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("video_key", sa.String(length=255), nullable=True),
        sa.Column("video_bytes", sa.BigInteger(), nullable=True),
        sa.Column("video_sha256", sa.String(length=64), nullable=True),
        sa.Column("video_type", sa.String(length=64), nullable=True),
        sa.Column("frame_key", sa.String(length=255), nullable=True),
        sa.Column("frame_bytes", sa.BigInteger(), nullable=True),
        sa.Column("frame_sha256", sa.String(length=64), nullable=True),
        sa.Column("frame_type", sa.String(length=64), nullable=True),
        sa.Column("created_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("archived_at", app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delete_after", app.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.create_index("ix_task_archives_due", "task_archives", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_task_archives_due", table_name="task_archives")
    op.drop_table("task_archives")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("archive")
