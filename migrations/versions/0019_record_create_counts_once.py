"""record a create counting the open tasks once: the key's and the user's counts run only when
the gateway's total could reach their caps

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-30 23:50:00

Every open task counts toward the gateway's total, so a key or a user never has more open tasks
than that. `sgw_record_create` counted the key's, the user's and the gateway's open tasks on
every create, each up to its cap, under the gateway-wide create lock: with high caps, three
scans of every open task per create, one create at a time. It now counts the total once (up to
the largest cap) and counts a key's or a user's own only when the total reaches its cap. The
verdicts, and the scope reported first, are the same.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE OR REPLACE FUNCTION sgw_record_create(
    task jsonb, reserve jsonb, lock_key bigint, open_statuses text[],
    key_cap integer, user_cap integer, gateway_cap integer, token_cap integer
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    new_task tasks%ROWTYPE := jsonb_populate_record(NULL::tasks, task);
    new_entry ledger%ROWTYPE := jsonb_populate_record(NULL::ledger, reserve);
    open_total integer;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    IF token_cap IS NOT NULL AND (SELECT count(*) FROM (SELECT 1 FROM tasks
            WHERE token_id = new_task.token_id AND status <> 'rejected' LIMIT token_cap)
            AS made) >= token_cap THEN
        RETURN 'Token';
    END IF;
    SELECT count(*) INTO open_total FROM (SELECT 1 FROM tasks WHERE status = ANY(open_statuses)
        LIMIT greatest(key_cap, user_cap, gateway_cap)) AS open_tasks;
    IF open_total >= key_cap THEN
        IF (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE key_id = new_task.key_id
                AND status = ANY(open_statuses) LIMIT key_cap) AS open_tasks) >= key_cap THEN
            RETURN 'Key';
        END IF;
    END IF;
    IF open_total >= user_cap THEN
        IF (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE user_id = new_task.user_id
                AND status = ANY(open_statuses) LIMIT user_cap) AS open_tasks) >= user_cap THEN
            RETURN 'User';
        END IF;
    END IF;
    IF open_total >= gateway_cap THEN
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


def _previous_function() -> str:
    """Revision 0008's function (its module name starts with a digit: loaded by path)."""
    path = Path(__file__).with_name("0008_browser_tokens.py")
    spec = importlib.util.spec_from_file_location("revision_0008", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_previous_function())
