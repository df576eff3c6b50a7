"""open task counts kept by a trigger: a create reads its in-flight counts instead of counting

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 07:00:00

`sgw_record_create` counted the open tasks under the gateway-wide create lock. A count walks the
status index, and every status change a task goes through leaves an entry there, pointing to a
dead row version, until VACUUM: with 24 open tasks and 11,000 finished since the last vacuum the
count took 4.6 ms, every create waiting its turn behind it. On PostgreSQL, a trigger on `tasks`
now notes +1 or -1 per scope (`gateway`, `user:<id>`, `key:<id>`) in `open_task_changes` when a
task opens or ends, in the transaction that moves it; the create, under the lock, folds the
notes committed so far into `open_task_counts` and reads its three counts there
(`sgw_open_counts`, which a create with a budget calls too). `sgw_record_create`'s arguments stay
as they were, so replicas of the previous release keep working during an upgrade.
SQLite gets the two tables, empty: its single writer counts the rows as before.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One statement each (asyncpg runs one per call).
TRIGGERS = [
    """
CREATE FUNCTION sgw_note_open_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_open boolean := TG_OP <> 'INSERT'
        AND OLD.status IN ('submitting', 'queued', 'running', 'unknown');
    is_open boolean := TG_OP <> 'DELETE'
        AND NEW.status IN ('submitting', 'queued', 'running', 'unknown');
BEGIN
    IF is_open AND NOT was_open THEN
        INSERT INTO open_task_changes (scope, delta) VALUES
            ('gateway', 1), ('user:' || NEW.user_id, 1), ('key:' || NEW.key_id, 1);
    ELSIF was_open AND NOT is_open THEN
        INSERT INTO open_task_changes (scope, delta) VALUES
            ('gateway', -1), ('user:' || OLD.user_id, -1), ('key:' || OLD.key_id, -1);
    END IF;
    RETURN NULL;
END
$$
""",
    """
CREATE TRIGGER tasks_note_open_change AFTER INSERT OR DELETE OR UPDATE OF status ON tasks
    FOR EACH ROW EXECUTE FUNCTION sgw_note_open_change()
""",
    """
CREATE FUNCTION sgw_forget_open_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM open_task_changes;
    DELETE FROM open_task_counts;
    RETURN NULL;
END
$$
""",
    """
CREATE TRIGGER tasks_forget_open_counts AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION sgw_forget_open_counts()
""",
]

COUNT_NOW = """
WITH open_tasks AS (
    SELECT user_id, key_id FROM tasks
    WHERE status IN ('submitting', 'queued', 'running', 'unknown')
)
INSERT INTO open_task_counts (scope, open)
SELECT 'gateway', count(*) FROM open_tasks
UNION ALL
SELECT 'user:' || user_id, count(*) FROM open_tasks GROUP BY user_id
UNION ALL
SELECT 'key:' || key_id, count(*) FROM open_tasks GROUP BY key_id
"""

# The counts of a key, its user and the gateway, once every change committed so far (all those
# committed before the caller's create lock was granted) is folded in; later ones wait for the
# next create. Only a caller holding the create lock may call it.
OPEN_COUNTS = """
CREATE FUNCTION sgw_open_counts(
    key_id text, user_id text, OUT key_open integer, OUT user_open integer,
    OUT gateway_open integer
) LANGUAGE plpgsql AS $$
BEGIN
    WITH folded AS (DELETE FROM open_task_changes RETURNING scope, delta)
    INSERT INTO open_task_counts AS counted (scope, open)
        SELECT scope, sum(delta) FROM folded GROUP BY scope
        ON CONFLICT (scope) DO UPDATE SET open = counted.open + excluded.open;
    SELECT coalesce(sum(open) FILTER (WHERE scope = 'key:' || key_id), 0),
           coalesce(sum(open) FILTER (WHERE scope = 'user:' || user_id), 0),
           coalesce(sum(open) FILTER (WHERE scope = 'gateway'), 0)
        INTO key_open, user_open, gateway_open
        FROM open_task_counts WHERE scope IN ('key:' || key_id, 'user:' || user_id, 'gateway');
END
$$
"""

# `open_statuses` is no longer read (the trigger knows which statuses are open); the arguments
# stay as they were for replicas of the previous release.
FUNCTION = """
CREATE OR REPLACE FUNCTION sgw_record_create(
    task jsonb, reserve jsonb, lock_key bigint, open_statuses text[],
    key_cap integer, user_cap integer, gateway_cap integer, token_cap integer
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    new_task tasks%ROWTYPE := jsonb_populate_record(NULL::tasks, task);
    new_entry ledger%ROWTYPE := jsonb_populate_record(NULL::ledger, reserve);
    counts record;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    IF token_cap IS NOT NULL AND (SELECT count(*) FROM (SELECT 1 FROM tasks
            WHERE token_id = new_task.token_id AND status <> 'rejected' LIMIT token_cap)
            AS made) >= token_cap THEN
        RETURN 'Token';
    END IF;
    SELECT * INTO counts FROM sgw_open_counts(new_task.key_id, new_task.user_id);
    IF counts.key_open >= key_cap THEN
        RETURN 'Key';
    ELSIF counts.user_open >= user_cap THEN
        RETURN 'User';
    ELSIF counts.gateway_open >= gateway_cap THEN
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
    postgres = op.get_bind().dialect.name == "postgresql"
    change_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "open_task_counts",
        sa.Column("scope", sa.String(length=48), nullable=False),
        sa.Column("open", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope"),
    )
    op.create_table(
        "open_task_changes",
        sa.Column("id", change_id, autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=48), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    if postgres:
        # No task moves between the count below and the trigger taking over.
        op.execute("LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE")
        for statement in TRIGGERS:
            op.execute(statement)
        op.execute(COUNT_NOW)
        op.execute(OPEN_COUNTS)
        op.execute(FUNCTION)


def _previous_function() -> str:
    """Revision 0019's function (its module name starts with a digit: loaded by path)."""
    path = Path(__file__).with_name("0019_record_create_counts_once.py")
    spec = importlib.util.spec_from_file_location("revision_0019", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_previous_function())
        op.execute("DROP TRIGGER tasks_forget_open_counts ON tasks")
        op.execute("DROP TRIGGER tasks_note_open_change ON tasks")
        op.execute("DROP FUNCTION sgw_open_counts(text, text)")
        op.execute("DROP FUNCTION sgw_forget_open_counts()")
        op.execute("DROP FUNCTION sgw_note_open_change()")
    op.drop_table("open_task_changes")
    op.drop_table("open_task_counts")
