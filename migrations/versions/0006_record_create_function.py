"""record a create in one round trip (PostgreSQL)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:00:00

`sgw_record_create` takes the gateway-wide create lock, counts the open tasks of the key, the
user and the gateway (each only up to its cap), and inserts the task and its reservation, all
in one statement: called outside a transaction, the lock is held only while the server runs it,
never across a round trip to a busy client. Each statement inside a plpgsql function reads a
fresh snapshot, so the counts see every create committed before the lock was granted. Returns
the scope whose cap is reached (`Key`, `User`, `Gateway`), or NULL once inserted.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE OR REPLACE FUNCTION sgw_record_create(
    task jsonb, reserve jsonb, lock_key bigint, open_statuses text[],
    key_cap integer, user_cap integer, gateway_cap integer
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    new_task tasks%ROWTYPE := jsonb_populate_record(NULL::tasks, task);
    new_entry ledger%ROWTYPE := jsonb_populate_record(NULL::ledger, reserve);
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
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
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS sgw_record_create(jsonb, jsonb, bigint, text[], integer, "
            "integer, integer)"
        )
