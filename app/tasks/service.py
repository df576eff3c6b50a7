"""The task service: create, retrieve, list and delete, on behalf of one authenticated key."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import release_connection, utcnow
from app.errors import Conflict, NotFound, TooManyRequests
from app.keys.service import AuthContext
from app.resources import Resources
from app.tasks import repository
from app.tasks.models import VISIBLE_STATUSES, Task, TaskStatus
from app.tasks.render import public_view
from app.tasks.repository import TaskRecord
from app.tasks.schemas import TaskListQuery
from app.tasks.states import apply_snapshot, refresh_task

logger = logging.getLogger(__name__)


def _not_found(task_id: str) -> NotFound:
    # One wording for unknown ids and other users' ids: the answer must not tell them apart.
    return NotFound(
        f"The specified task {task_id} is not found.", param="task_id", code="ResourceNotFound"
    )


async def visible_task(session: AsyncSession, *, auth: AuthContext, task_id: str) -> Task:
    """The caller's user's task, if the client can see it; else the same 404 as an unknown id."""
    task = await session.get(Task, task_id) if len(task_id) <= 64 else None
    if (
        task is None
        or task.user_id != auth.user_id
        or task.deleted_at is not None
        or task.status not in VISIBLE_STATUSES
    ):
        raise _not_found(task_id)
    return task


async def retrieve_task(
    *, resources: Resources, auth: AuthContext, task_id: str, request_id: str
) -> dict[str, Any]:
    """The task object; refreshed from upstream first when open and older than the window.

    A finished task never changes but for its deletion, so its answer is kept for a second and
    served without the database.
    """
    cached = resources.finished_tasks.get(task_id)
    if cached is not None:
        owner, view = cached
        if owner != auth.user_id:
            raise _not_found(task_id)
        return view
    task = await _visible_record(resources, auth=auth, task_id=task_id)
    if _is_stale(task, resources.settings.refresh_stale_seconds):
        try:
            await _coalesced_refresh(resources=resources, task_id=task.id, request_id=request_id)
        except Exception:  # a refresh is a bonus: the stored copy is a valid answer
            logger.warning(
                "task %s: refresh failed; serving the stored copy", task.id, exc_info=True
            )
        task = await _visible_record(resources, auth=auth, task_id=task_id)
    view = public_view(task)
    if TaskStatus(task.status).is_terminal:
        resources.finished_tasks.put(task.id, (task.user_id, view))
    return view


async def _visible_record(resources: Resources, *, auth: AuthContext, task_id: str) -> TaskRecord:
    record = (
        await repository.visible_task(
            resources.autocommit_engine, task_id=task_id, user_id=auth.user_id
        )
        if len(task_id) <= 64
        else None
    )
    if record is None:
        raise _not_found(task_id)
    return record


def _is_stale(task: TaskRecord, window_seconds: float) -> bool:
    if TaskStatus(task.status).is_terminal:
        return False
    if task.refreshed_at is None:
        return True
    return task.refreshed_at < utcnow() - timedelta(seconds=window_seconds)


async def _coalesced_refresh(*, resources: Resources, task_id: str, request_id: str) -> None:
    async def job() -> None:
        budget = resources.settings.upstream_refresh_rate
        if not await resources.limiter.allow(budget, "upstream-refresh", "account"):
            logger.debug("upstream refresh budget spent; task %s served as stored", task_id)
            return
        await refresh_task(
            sessionmaker=resources.sessionmaker,
            upstream=resources.upstream,
            task_id=task_id,
            request_id=request_id,
        )

    await resources.refreshes.run(task_id, job)


async def list_tasks(
    *, resources: Resources, auth: AuthContext, query: TaskListQuery
) -> dict[str, Any]:
    """The caller's user's tasks from the database, newest first, filtered and paged as upstream."""
    total, records = await repository.task_page(
        resources.autocommit_engine, user_id=auth.user_id, query=query
    )
    return {"total": total, "items": [public_view(record) for record in records]}


async def delete_task(
    *, session: AsyncSession, resources: Resources, auth: AuthContext, task_id: str, request_id: str
) -> None:
    """Cancel a queued task upstream, hide a finished one, refuse (409) a running one."""
    task = await visible_task(session, auth=auth, task_id=task_id)
    if not TaskStatus(task.status).is_terminal:
        # Our copy may be stale, and what a DELETE does upstream depends on the state there now
        # (a queued task is cancelled, a finished one is deleted, usage and all): without a
        # fresh answer, nothing is sent and the client gets the upstream's error.
        await release_connection(session)
        if not await resources.limiter.allow(
            resources.settings.upstream_refresh_rate, "upstream-refresh", "account"
        ):
            raise TooManyRequests(
                "The account's upstream retrieve budget is spent for this second; retry.",
                retry_after=1,
                code="RateLimitExceeded.UpstreamRetrieves",
            )
        await refresh_task(
            sessionmaker=resources.sessionmaker,
            upstream=resources.upstream,
            task_id=task.id,
            request_id=request_id,
            confirm=True,
        )
        await session.refresh(task)
    if task.status == TaskStatus.RUNNING:
        raise Conflict(
            f"The task {task_id} is running and cannot be cancelled.",
            code="OperationDenied.TaskRunning",
        )
    if task.status == TaskStatus.QUEUED:
        await _cancel_queued(session, resources=resources, task=task, request_id=request_id)
        return
    task.deleted_at = utcnow()
    session.add(task)
    await session.commit()
    resources.finished_tasks.drop(task.id)


async def _cancel_queued(
    session: AsyncSession, *, resources: Resources, task: Task, request_id: str
) -> None:
    assert task.upstream_id is not None  # queued tasks always have one
    await release_connection(session)
    await resources.upstream.delete_task(task.upstream_id, request_id=request_id)
    cancelled = {
        **(task.snapshot or public_view(task)),
        "id": task.upstream_id,
        "status": TaskStatus.CANCELLED,
    }
    if not await apply_snapshot(session, task=task, snapshot=cancelled):
        logger.info("task %s changed state while being cancelled", task.id)
