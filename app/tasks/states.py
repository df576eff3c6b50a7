"""Task state changes: compare-and-swap on the status column, and the refresh from upstream.

Whoever sees a task's terminal state first (a retrieve, the poller, any replica) moves it there;
a CAS that loses the race changes nothing, so the move and its side effects happen once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import release_connection, utcnow
from app.errors import GatewayError, UpstreamRelayed
from app.tasks.callbacks import queue_callback
from app.tasks.models import OPEN_STATUSES, Task, TaskArchive, TaskEvent, TaskStatus
from app.upstream.pool import AccountPace, UpstreamPool
from app.usage.ledger import record_outcome

logger = logging.getLogger(__name__)

RECHECK_SECONDS = 2.0  # an open task is due again this soon; the poller's cycle paces it
MAX_BACKOFF_SECONDS = 300.0

RefreshOutcome = Literal["updated", "lost-race", "missing", "failed", "skipped"]


def next_check_at(now: datetime, *, failures: int = 0) -> datetime:
    """When an open task is next due a refresh: soon, or later after consecutive failures."""
    delay = min(MAX_BACKOFF_SECONDS, RECHECK_SECONDS * 2**failures)
    return now + timedelta(seconds=delay)


async def transition(
    session: AsyncSession, *, task: Task, to_status: TaskStatus, values: dict[str, Any]
) -> bool:
    """Move `task` from the status it was read with to `to_status`; False if someone moved it first.

    A real move queues the client's callback, and a move into a terminal state writes its ledger
    row (settle or release), in the same transaction; the caller commits them together. A
    "move" to the status the task already has only stores `values` (a refresh that found no
    change): it queues nothing and writes no ledger row.
    """
    from_status = task.status  # read first: the ORM update below also changes the loaded object
    result = await session.exec(
        update(Task)
        .where(col(Task.id) == task.id)
        .where(col(Task.status) == from_status)
        .values(status=to_status, updated_at=utcnow(), **values)
    )
    moved: bool = result.rowcount == 1
    if moved and to_status != from_status:
        session.add(
            TaskEvent(
                task_id=task.id,
                kind="status",
                from_status=from_status,
                to_status=to_status,
                detail=values.get("error_code"),
            )
        )
        queue_callback(session, task=task, status=to_status, values=values)
        if to_status == TaskStatus.SUCCEEDED and task.archive:
            session.add(TaskArchive(task_id=task.id))  # the archiver copies its outputs
        if to_status.is_terminal:
            snapshot = values.get("snapshot")
            await record_outcome(session, task=task, status=to_status, snapshot=snapshot)
    return moved


def snapshot_values(snapshot: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Columns that follow from an upstream task object."""
    usage = snapshot.get("usage") if isinstance(snapshot.get("usage"), dict) else {}
    error = snapshot.get("error") if isinstance(snapshot.get("error"), dict) else {}
    status = TaskStatus(snapshot["status"])
    return {
        "snapshot": snapshot,
        "refreshed_at": now,
        "next_check_at": None if status.is_terminal else next_check_at(now),
        "check_failures": 0,
        "error_code": (error or {}).get("code"),
        "completion_tokens": _int_or_none((usage or {}).get("completion_tokens")),
        "total_tokens": _int_or_none((usage or {}).get("total_tokens")),
    }


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def upstream_status(snapshot: dict[str, Any]) -> TaskStatus | None:
    """The snapshot's status if it is one the upstream is documented to send."""
    try:
        status = TaskStatus(str(snapshot.get("status")))
    except ValueError:
        return None
    return status if status.is_visible else None


async def apply_snapshot(session: AsyncSession, *, task: Task, snapshot: dict[str, Any]) -> bool:
    """Store a fresh upstream view of `task` (CAS on its status); False if another writer won."""
    status = upstream_status(snapshot)
    if status is None:
        logger.warning("task %s: upstream sent unknown status %r", task.id, snapshot.get("status"))
        return False
    if TaskStatus(task.status).is_terminal:
        return False
    now = utcnow()
    moved = await transition(
        session, task=task, to_status=status, values=snapshot_values(snapshot, now)
    )
    await session.commit()
    return moved


async def expire_open_tasks(session: AsyncSession, *, error_code: str) -> int:
    """Expire every open task and release its reservation; returns how many.

    For demo mode only: a restarted simulator forgets its tasks, so the previous run's open
    tasks would otherwise be polled against nothing and hold their reservations for days.
    """
    open_tasks = (await session.exec(select(Task).where(col(Task.status).in_(OPEN_STATUSES)))).all()
    for task in open_tasks:
        await transition(
            session,
            task=task,
            to_status=TaskStatus.EXPIRED,
            values={"next_check_at": None, "error_code": error_code},
        )
    await session.commit()
    return len(open_tasks)


async def refresh_task(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    upstream: UpstreamPool,
    task_id: str,
    request_id: str,
    confirm: bool = False,
    pace: AccountPace | None = None,
) -> RefreshOutcome:
    """Fetch one open task from upstream and store what it says; errors are logged, and raised
    too when the caller must `confirm` the upstream's state before acting on it."""
    async with sessionmaker() as session:
        task = await session.get(Task, task_id)
        if task is None or task.upstream_id is None or TaskStatus(task.status).is_terminal:
            return "skipped"
        await release_connection(session)  # no pooled connection waits on the upstream
        client = await upstream.client(task.account_id)  # the account that created it
        if pace is not None:
            await pace(task.account_id)
        try:
            snapshot = await client.get_task(task.upstream_id, request_id=request_id)
        except UpstreamRelayed as exc:
            logger.warning(
                "task %s: upstream retrieve refused: HTTP %s %s", task.id, exc.status(), exc.code
            )
            if confirm:
                raise
            return "missing" if exc.status() == 404 else "failed"
        except GatewayError as exc:
            logger.warning("task %s: upstream retrieve failed: %s", task.id, exc.code)
            if confirm:
                raise
            return "failed"
        return (
            "updated"
            if await apply_snapshot(session, task=task, snapshot=snapshot)
            else "lost-race"
        )
