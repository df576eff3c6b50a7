"""daily spend: settled cost rolled up per day, user, key, model and currency

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 14:30:00

Kept as tasks settle from now on; filled here from the ledger for what settled before (the day
is the reservation's, in UTC, as budgets and reports count it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL = """
INSERT INTO daily_spend (day, user_id, key_id, model, currency, tasks, tokens, cost_micros)
SELECT {day}, r.user_id, r.key_id, r.model, COALESCE(s.currency, ''),
       count(*), sum(s.tokens), sum(s.cost_micros)
FROM ledger AS r JOIN ledger AS s ON s.task_id = r.task_id AND s.kind = 'settle'
WHERE r.kind = 'reserve'
GROUP BY {day}, r.user_id, r.key_id, r.model, COALESCE(s.currency, '')
"""


def upgrade() -> None:
    op.create_table(
        "daily_spend",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "user_id", "key_id", "model", "currency"),
    )
    op.create_index("ix_daily_spend_day", "daily_spend", ["day"])
    postgres = op.get_bind().dialect.name == "postgresql"
    day = (
        "to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        if postgres
        else "strftime('%Y-%m-%d', r.created_at)"
    )
    op.execute(BACKFILL.format(day=day))


def downgrade() -> None:
    op.drop_index("ix_daily_spend_day", table_name="daily_spend")
    op.drop_table("daily_spend")
