"""upstream accounts: each account's own retrieve and list rates, and running tasks per model

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 17:10:00

The defaults are the upstream's published limits: 20 retrieves and 1 list a second, 10 running
tasks per model.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("retrieves_per_second", "20"), ("lists_per_second", "1"), ("running_per_model", "10"))


def upgrade() -> None:
    with op.batch_alter_table("upstream_accounts") as batch:
        for name, default in COLUMNS:
            batch.add_column(
                sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text(default))
            )


def downgrade() -> None:
    with op.batch_alter_table("upstream_accounts") as batch:
        for name, _ in COLUMNS:
            batch.drop_column(name)
