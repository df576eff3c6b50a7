"""key lifecycle: rotation with a grace period, per-key network allow-lists, self-service keys

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-30 18:00:00

A rotated key keeps its id (so its limits, budgets, in-flight count and ledger stay its own);
its former hash works until `previous_valid_until`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("previous_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("previous_prefix", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("previous_valid_until", app.db.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("allowed_networks", sa.JSON(), nullable=True))
    op.create_index("ix_api_keys_previous_hash", "api_keys", ["previous_hash"], unique=True)
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("self_service_keys", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("max_keys", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("max_keys")
        batch.drop_column("self_service_keys")
    op.drop_index("ix_api_keys_previous_hash", table_name="api_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("allowed_networks")
        batch.drop_column("previous_valid_until")
        batch.drop_column("previous_prefix")
        batch.drop_column("previous_hash")
