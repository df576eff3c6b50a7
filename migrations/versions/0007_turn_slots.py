"""turn slots: a paced budget survives a hand-over between replicas

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 10:30:00

The poller's holder books the gap after each upstream list call here, so a replica that takes
the turn from one that died starts after that gap, not at once.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "turn_slots",
        sa.Column("lock_key", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("free_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lock_key"),
    )


def downgrade() -> None:
    op.drop_table("turn_slots")
