"""the gateway's own create queue: a create waits when every account is full

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30 17:30:00

A waiting task is `queued` with no upstream id, no account and no next check, and keeps the
body it will send in `pending_body` until the upstream takes it; `sent_at` is when it left the
queue (the moment its create went out, which reconciliation looks around).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("pending_body", sa.Text(), nullable=True))
        batch.add_column(sa.Column("sent_at", app.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("sent_at")
        batch.drop_column("pending_body")
