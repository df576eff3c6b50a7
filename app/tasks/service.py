"""The task service: create, retrieve, list and delete, on behalf of one authenticated key."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import release_connection, utcnow
from app.errors import Conflict, NotFound, TooManyRequests
from app.keys.service import AuthContext
from app.logs import bind
from app.resources import Resources
from app.tasks import queue, repository
from app.tasks.models import VISIBLE_STATUSES, Task, TaskArchive, TaskStatus
from app.tasks.render import OutputLinks, public_view
from app.tasks.repository import TaskRecord
from app.tasks.schemas import TaskListQuery
from app.tasks.states import apply_snapshot, refresh_task
from app.upstream.accounts import DEFAULT_ACCOUNT
from app.usage.ledger import entries_of

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
        or not _sees(auth, user_id=task.user_id, token_id=task.token_id)
        or task.deleted_at is not None
        or task.status not in VISIBLE_STATUSES
    ):
        raise _not_found(task_id)
    return task


def _sees(auth: AuthContext, *, user_id: str, token_id: str | None) -> bool:
    """Whether the caller may see a task of this owner: its user's, and a browser token only
    the tasks made with it."""
    return user_id == auth.user_id and auth.token_id in (None, token_id)


def output_links(resources: Resources, base_url: str) -> OutputLinks | None:
    """How task objects link to their outputs: the gateway's links with the archive on (at
    `GATEWAY_PUBLIC_BASE_URL`, or the address the request came to), else the upstream's."""
    if resources.store is None:
        return None
    return OutputLinks(
        signer=resources.token_signer,
        base_url=(resources.settings.public_base_url or base_url).rstrip("/"),
        ttl_seconds=resources.settings.output_url_ttl_seconds,
    )


async def retrieve_task(
    *, resources: Resources, auth: AuthContext, task_id: str, request_id: str, base_url: str
) -> dict[str, Any]:
    """The task object; refreshed from upstream first when open and older than the window.

    A finished task never changes but for its deletion, so its answer is kept for a second and
    served without the database.
    """
    bind(task_id=task_id[:64])
    cached = resources.finished_tasks.get(task_id)
    if cached is not None:
        user_id, token_id, view = cached
        if not _sees(auth, user_id=user_id, token_id=token_id):
            raise _not_found(task_id)
        return view
    task = await fresh_record(
        resources=resources, auth=auth, task_id=task_id, request_id=request_id
    )
    view = public_view(task, output_links(resources, base_url))
    if TaskStatus(task.status).is_terminal:
        resources.finished_tasks.put(task.id, (task.user_id, task.token_id, view))
    return view


async def fresh_record(
    *, resources: Resources, auth: AuthContext, task_id: str, request_id: str
) -> TaskRecord:
    """The task as the caller may see it, refreshed from upstream first when it is open and
    older than the window."""
    task = await visible_record(resources, auth=auth, task_id=task_id)
    if _is_stale(task, resources.settings.refresh_stale_seconds):
        try:
            await _coalesced_refresh(resources=resources, task=task, request_id=request_id)
        except Exception:  # a refresh is a bonus: the stored copy is a valid answer
            logger.warning(
                "task %s: refresh failed; serving the stored copy", task.id, exc_info=True
            )
        task = await visible_record(resources, auth=auth, task_id=task_id)
    return task


async def visible_record(resources: Resources, *, auth: AuthContext, task_id: str) -> TaskRecord:
    """The task as the caller may see it, from the database; else the 404 of an unknown id."""
    record = (
        await repository.visible_task(
            resources.statements,
            task_id=task_id,
            user_id=auth.user_id,
            token_id=auth.token_id,
        )
        if len(task_id) <= 64
        else None
    )
    if record is None:
        raise _not_found(task_id)
    return record


async def linked_record(resources: Resources, *, task_id: str) -> TaskRecord:
    """The task a signed link names; the 404 of an unknown id if it is gone."""
    record = await repository.linked_task(resources.statements, task_id=task_id)
    if record is None:
        raise _not_found(task_id)
    return record


def _is_stale(task: TaskRecord, window_seconds: float) -> bool:
    if TaskStatus(task.status).is_terminal or task.upstream_id is None:
        return False  # nothing upstream to refresh from
    if task.refreshed_at is None:
        return True
    return task.refreshed_at < utcnow() - timedelta(seconds=window_seconds)


async def _coalesced_refresh(*, resources: Resources, task: TaskRecord, request_id: str) -> None:
    async def job() -> None:
        if not await _refresh_allowed(resources, account_id=task.account_id):
            logger.debug("upstream refresh budget spent; task %s served as stored", task.id)
            return
        await refresh_task(
            sessionmaker=resources.sessionmaker,
            upstream=resources.upstream,
            task_id=task.id,
            request_id=request_id,
        )

    await resources.refreshes.run(task.id, job)


async def _refresh_allowed(resources: Resources, *, account_id: str | None) -> bool:
    """Whether the task's account has a client refresh left this second (every replica's)."""
    account = account_id or DEFAULT_ACCOUNT
    budget = resources.upstream.refresh_rate(account, resources.settings.upstream_refresh_rate)
    return await resources.limiter.allow(budget, "upstream-refresh", account)


async def list_tasks(
    *, resources: Resources, auth: AuthContext, query: TaskListQuery, base_url: str
) -> dict[str, Any]:
    """The caller's user's tasks from the database, newest first, filtered and paged as upstream."""
    total, records = await repository.task_page(
        resources.statements, user_id=auth.user_id, token_id=auth.token_id, query=query
    )
    links = output_links(resources, base_url)
    return {"total": total, "items": [public_view(record, links) for record in records]}


async def delete_task(
    *, session: AsyncSession, resources: Resources, auth: AuthContext, task_id: str, request_id: str
) -> None:
    """Cancel a queued task upstream, hide a finished one, refuse (409) a running one."""
    bind(task_id=task_id[:64])
    task = await visible_task(session, auth=auth, task_id=task_id)
    if task.pending_body is not None and task.upstream_id is None:  # from the gateway's queue
        if not await queue.cancel(session, task=task):
            raise Conflict(
                f"The task {task_id} is being sent upstream; retry in a few seconds.",
                code="OperationDenied.TaskBeingSent",
            )
        return
    if not TaskStatus(task.status).is_terminal:
        # Our copy may be stale, and what a DELETE does upstream depends on the state there now
        # (a queued task is cancelled, a finished one is deleted, usage and all): without a
        # fresh answer, nothing is sent and the client gets the upstream's error.
        await release_connection(session)
        if not await _refresh_allowed(resources, account_id=task.account_id):
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
    client = await resources.upstream.client(task.account_id)
    await client.delete_task(task.upstream_id, request_id=request_id)
    cancelled = {
        **(task.snapshot or public_view(task)),
        "id": task.upstream_id,
        "status": TaskStatus.CANCELLED,
    }
    if not await apply_snapshot(session, task=task, snapshot=cancelled):
        logger.info("task %s changed state while being cancelled", task.id)


async def task_detail(session: AsyncSession, *, task_id: str) -> dict[str, Any]:
    """What an admin sees of a task (any owner's; 404 if unknown): the gateway's columns, its
    ledger rows (cost and charge, the price rows used) and, when it is archived or being
    archived, the copy's state."""
    task = await session.get(Task, task_id) if len(task_id) <= 64 else None
    if task is None:
        raise _not_found(task_id)
    archive = await session.get(TaskArchive, task_id)
    internal = {"snapshot", "request_fingerprint", "idempotency_key", "callback_url"}
    detail = task.model_dump(exclude=internal)
    detail["archive"] = archive.model_dump(exclude={"task_id"}) if archive is not None else None
    detail["ledger"] = [
        row.model_dump(exclude={"task_id", "user_id", "key_id", "model", "service_tier"})
        for row in await entries_of(session, task_id=task_id)
    ]
    return detail
