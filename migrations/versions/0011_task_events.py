"""task events: status changes and failed refreshes, for each task's timeline

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 13:30:00

Also an index on `tasks.created_at`: the console's task explorer lists the newest tasks of
everyone without scanning the table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=True),
        sa.Column("detail", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_task_events_task", "task_events", ["task_id", "id"])
    op.create_index("ix_task_events_at", "task_events", ["at"])
    op.create_index("ix_tasks_created", "tasks", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_created", table_name="tasks")
    op.drop_index("ix_task_events_at", table_name="task_events")
    op.drop_index("ix_task_events_task", table_name="task_events")
    op.drop_table("task_events")
