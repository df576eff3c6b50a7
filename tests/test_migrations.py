"""The migrations build exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from app.db import create_engine
from app.migrate import upgrade_to_head
from app.models import metadata
from tests.e2e.processes import ROOT, clean_env
from tests.scratch_db import scratch_postgres


async def test_models_and_migrations_agree(database_url: str) -> None:
    engine = create_engine(database_url)

    def diff(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(diff)
    finally:
        await engine.dispose()
    assert differences == []


async def test_the_daily_rollup_is_filled_from_the_ledger_that_came_before(tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/before.db"
    await upgrade_to_head(url, revision="0012")
    engine = create_engine(url)
    rows = [  # two settled tasks of one day, one released, one settled the next day
        ("t1", "reserve", 100, 250, "2026-11-01 10:00:00"),
        ("t1", "settle", 90, 225, "2026-11-01 10:05:00"),
        ("t2", "reserve", 100, 250, "2026-11-01 23:59:00"),
        ("t2", "settle", 80, 200, "2026-11-02 00:03:00"),
        ("t3", "reserve", 100, 250, "2026-11-01 11:00:00"),
        ("t3", "release", 0, 0, "2026-11-01 11:02:00"),
        ("t4", "reserve", 100, 250, "2026-11-02 09:00:00"),
        ("t4", "settle", 70, 175, "2026-11-02 09:02:00"),
    ]
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO users (id, name, disabled, created_at, updated_at) "
                    "VALUES ('u', 'u', 0, '2026-11-01', '2026-11-01')"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at) "
                    "VALUES ('k', 'u', '', 'sgw-x', 'h', '2026-11-01')"
                )
            )
            for task_id, kind, tokens, cost, at in rows:
                if kind == "reserve":
                    await connection.execute(
                        text(
                            "INSERT INTO tasks (id, user_id, key_id, model, service_tier, status,"
                            " execution_expires_after, check_failures, archive, created_at,"
                            " updated_at) VALUES (:id, 'u', 'k', 'm', 'default', 'succeeded',"
                            " 1, 0, 0, :at, :at)"
                        ),
                        {"id": task_id, "at": at},
                    )
                await connection.execute(
                    text(
                        "INSERT INTO ledger (task_id, kind, user_id, key_id, model, service_tier,"
                        " tokens, total_tokens, cost_micros, currency, created_at) VALUES"
                        " (:task, :kind, 'u', 'k', 'm', 'default', :tokens, :tokens, :cost,"
                        " 'USD', :at)"
                    ),
                    {"task": task_id, "kind": kind, "tokens": tokens, "cost": cost, "at": at},
                )
        await upgrade_to_head(url)
        async with engine.connect() as connection:
            rolled = (
                await connection.execute(
                    text("SELECT day, tasks, tokens, cost_micros FROM daily_spend ORDER BY day")
                )
            ).all()
    finally:
        await engine.dispose()
    # t2 counts on the day it was created, as budgets and reports count it
    assert [tuple(row) for row in rolled] == [
        ("2026-11-01", 2, 170, 425),
        ("2026-11-02", 1, 70, 175),
    ]


async def test_replicas_migrating_at_once_all_start(tmp_path: Path) -> None:
    """Pods of a release start together and each migrates: one does, the others wait for it
    and find the schema at head (a PostgreSQL advisory lock around the upgrade)."""
    async with scratch_postgres(f"sgw_migrate_race_{os.getpid()}") as url:
        env = clean_env(GATEWAY_DATABASE_URL=url)
        racers = [
            subprocess.Popen(
                [sys.executable, "-m", "app", "migrate"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(3)
        ]
        outputs = [racer.communicate(timeout=120)[0] for racer in racers]
        assert [racer.returncode for racer in racers] == [0, 0, 0], outputs
        assert all("database at head" in output for output in outputs)


async def test_the_open_task_counts_start_from_the_tasks_open_before() -> None:
    """Migration 0020 counts the tasks already open; its trigger counts every move after."""
    async with scratch_postgres(f"sgw_open_counts_{os.getpid()}") as url:
        await upgrade_to_head(url, revision="0019")
        engine = create_engine(url)
        task = (
            "INSERT INTO tasks (id, user_id, key_id, model, service_tier, status,"
            " execution_expires_after, check_failures, archive, created_at, updated_at)"
            " VALUES (:id, 'u', :key, 'm', 'default', :status, 1, 0, false, now(), now())"
        )
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    text(
                        "INSERT INTO users (id, name, disabled, created_at, updated_at)"
                        " VALUES ('u', 'u', false, now(), now())"
                    )
                )
                for key in ("k1", "k2"):
                    await connection.execute(
                        text(
                            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash,"
                            " created_at) VALUES (:key, 'u', '', 'sgw-x', :key, now())"
                        ),
                        {"key": key},
                    )
                before = [
                    ("t1", "k1", "queued"),
                    ("t2", "k1", "running"),
                    ("t3", "k2", "unknown"),
                    ("t4", "k2", "succeeded"),
                ]
                for task_id, key, status in before:
                    await connection.execute(
                        text(task), {"id": task_id, "key": key, "status": status}
                    )
            await upgrade_to_head(url)
            counts = text("SELECT * FROM sgw_open_counts(:key, 'u')")
            async with engine.begin() as connection:
                assert tuple((await connection.execute(counts, {"key": "k1"})).one()) == (2, 3, 3)
                await connection.execute(text("UPDATE tasks SET status = 'failed' WHERE id = 't2'"))
                await connection.execute(text("DELETE FROM tasks WHERE id = 't3'"))
                await connection.execute(
                    text(task), {"id": "t5", "key": "k2", "status": "submitting"}
                )
            async with engine.begin() as connection:
                assert tuple((await connection.execute(counts, {"key": "k2"})).one()) == (1, 2, 2)
                await connection.execute(text("TRUNCATE tasks CASCADE"))
            async with engine.begin() as connection:
                assert tuple((await connection.execute(counts, {"key": "k1"})).one()) == (0, 0, 0)
        finally:
            await engine.dispose()
