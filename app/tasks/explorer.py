"""What ops look up about tasks: any user's tasks by filters, newest first, and one task's
timeline (its status changes, failed refreshes, ledger rows, callback deliveries and archive
copy, in order, each with its error when there was one)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.errors import NotFound
from app.tasks.models import CallbackDelivery, Task, TaskArchive, TaskEvent
from app.usage.models import MICROS, LedgerEntry


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks to list; every field optional."""

    user_id: str | None = None
    key_id: str | None = None
    status: str | None = None
    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Moment:
    """One line of a timeline."""

    at: datetime
    what: str
    detail: str = ""
    error: str = ""


async def explore(session: AsyncSession, *, filters: TaskFilter, limit: int = 100) -> list[Task]:
    """The newest tasks matching `filters` (indexed by creation time, or user and time)."""
    query = select(Task).order_by(col(Task.created_at).desc()).limit(limit)
    for column, value in (
        (Task.user_id, filters.user_id),
        (Task.key_id, filters.key_id),
        (Task.status, filters.status),
        (Task.model, filters.model),
    ):
        if value:
            query = query.where(column == value)
    if filters.since is not None:
        query = query.where(col(Task.created_at) >= filters.since)
    if filters.until is not None:
        query = query.where(col(Task.created_at) < filters.until)
    return list((await session.exec(query)).all())


async def timeline(session: AsyncSession, *, task_id: str) -> tuple[Task, list[Moment]]:
    """The task and everything that happened to it, oldest first; 404 if there is no such task."""
    task = await session.get(Task, task_id) if len(task_id) <= 64 else None
    if task is None:
        raise NotFound(f"The task {task_id} does not exist.", param="task_id")
    moments = [Moment(task.created_at, "created", f"{task.model}, by key {task.key_id}")]
    events = await session.exec(
        select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(col(TaskEvent.id))
    )
    for event in events.all():
        if event.kind == "status":
            moved = f"{event.from_status} → {event.to_status}"
            moments.append(Moment(event.at, "status", moved, event.detail or ""))
        else:
            moments.append(Moment(event.at, "refresh failed", "", event.detail or ""))
    entries = await session.exec(select(LedgerEntry).where(LedgerEntry.task_id == task_id))
    for entry in entries.all():
        cost = f"{entry.cost_micros / MICROS:.6f} {entry.currency or ''}".strip()
        moments.append(
            Moment(entry.created_at, f"ledger {entry.kind}", f"{entry.tokens} tokens, {cost}")
        )
    deliveries = await session.exec(
        select(CallbackDelivery).where(CallbackDelivery.task_id == task_id)
    )
    for delivery in deliveries.all():
        state = "delivered" if delivery.delivered_at else f"{delivery.attempts} attempts"
        at = delivery.delivered_at or delivery.created_at
        moments.append(Moment(at, f"callback {delivery.status}", state, delivery.last_error or ""))
    archive = await session.get(TaskArchive, task_id)
    if archive is not None:
        at = archive.archived_at or archive.created_at
        detail = f"{archive.status}, {archive.attempts} failed attempts"
        moments.append(Moment(at, "archive", detail, archive.last_error or ""))
    return task, sorted(moments, key=lambda moment: moment.at)


async def recent_trouble(session: AsyncSession, *, since: datetime) -> dict[str, int]:
    """What went wrong upstream since `since`: refreshes that failed, creates refused
    (`rejected`) or left in doubt (`unknown`), tasks that failed or expired (from the events,
    indexed by time)."""
    rows = await session.exec(
        select(TaskEvent.kind, TaskEvent.to_status, func.count())
        .where(col(TaskEvent.at) >= since)
        .where(
            (col(TaskEvent.kind) == "refresh_failed")
            | col(TaskEvent.to_status).in_(["rejected", "unknown", "failed", "expired"])
        )
        .group_by(col(TaskEvent.kind), col(TaskEvent.to_status))
    )
    return {
        ("refresh failed" if kind == "refresh_failed" else str(status)): int(count)
        for kind, status, count in rows.all()
    }
