"""upstream accounts: a pool of accounts, each task pinned to the one that created it

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 17:00:00

Tasks created before are the settings' account's (`account_id` NULL means `default`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "upstream_accounts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("base_url", sa.String(length=512), nullable=False),
        sa.Column("key_ciphertext", sa.String(length=1024), nullable=True),
        sa.Column("models", sa.JSON(), nullable=True),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("max_queued", sa.Integer(), nullable=False),
        sa.Column("creates_per_minute", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("healthy", sa.Boolean(), nullable=False),
        sa.Column("health_detail", sa.String(length=255), nullable=True),
        sa.Column("health_changed_at", app.db.UTCDateTime(), nullable=True),
        sa.Column("created_at", app.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", app.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("account_id", sa.String(length=32), nullable=True))
    op.create_index("ix_tasks_account_status", "tasks", ["account_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_tasks_account_status", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("account_id")
    op.drop_table("upstream_accounts")
