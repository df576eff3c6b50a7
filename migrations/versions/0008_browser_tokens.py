"""browser tokens: the token a task was made with, and a create that counts its allowance

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 11:30:00

A browser token sees only the tasks made with it (`tasks.token_id`) and may make at most its
`max_tasks` of them: `sgw_record_create` counts them under the same lock as the in-flight caps
(returning `Token` once the allowance is used), so concurrent creates cannot exceed it.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_SIGNATURE = "jsonb, jsonb, bigint, text[], integer, integer, integer"

FUNCTION = """
CREATE OR REPLACE FUNCTION sgw_record_create(
    task jsonb, reserve jsonb, lock_key bigint, open_statuses text[],
    key_cap integer, user_cap integer, gateway_cap integer, token_cap integer
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    new_task tasks%ROWTYPE := jsonb_populate_record(NULL::tasks, task);
    new_entry ledger%ROWTYPE := jsonb_populate_record(NULL::ledger, reserve);
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    IF token_cap IS NOT NULL AND (SELECT count(*) FROM (SELECT 1 FROM tasks
            WHERE token_id = new_task.token_id AND status <> 'rejected' LIMIT token_cap)
            AS made) >= token_cap THEN
        RETURN 'Token';
    END IF;
    IF (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE key_id = new_task.key_id
            AND status = ANY(open_statuses) LIMIT key_cap) AS open_tasks) >= key_cap THEN
        RETURN 'Key';
    END IF;
    IF (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE user_id = new_task.user_id
            AND status = ANY(open_statuses) LIMIT user_cap) AS open_tasks) >= user_cap THEN
        RETURN 'User';
    END IF;
    IF (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = ANY(open_statuses)
            LIMIT gateway_cap) AS open_tasks) >= gateway_cap THEN
        RETURN 'Gateway';
    END IF;
    INSERT INTO tasks SELECT new_task.*;
    new_entry.id := nextval(pg_get_serial_sequence('ledger', 'id'));
    INSERT INTO ledger SELECT new_entry.*;
    RETURN NULL;
END
$$;
"""


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("token_id", sa.String(length=32), nullable=True))
        batch.create_index("ix_tasks_token_id", ["token_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS sgw_record_create({OLD_SIGNATURE})")
        op.execute(FUNCTION)


def _previous_function() -> str:
    """Revision 0006's function (its module name starts with a digit: loaded by path)."""
    path = Path(__file__).with_name("0006_record_create_function.py")
    spec = importlib.util.spec_from_file_location("revision_0006", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS sgw_record_create({OLD_SIGNATURE}, integer)")
        op.execute(_previous_function())
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("ix_tasks_token_id")
        batch.drop_column("token_id")
