"""The gateway's own create queue (opt-in: `GATEWAY_CREATE_QUEUE_SIZE` above 0).

When every account serving a model is full (at its queued maximum, or out of creates this
minute), a create waits here instead of being refused: its task is recorded and reserved like
any other, the client gets its id at once with status `queued`, and the poller's cycle sends it
when an account has room. Waiting creates are sent fairly between users (round-robin by user,
each user's oldest first); at most `GATEWAY_CREATE_QUEUE_SIZE` wait at once; one that waits
longer than `GATEWAY_CREATE_QUEUE_TIMEOUT_SECONDS` fails with `QueueTimeout`, its reservation
released. DELETE cancels a waiting task (nothing was sent).

A waiting task is `queued` with no upstream id, no account and no next check; `pending_body`
holds what it will send. Sending claims it (its account, `sent_at`, a next check past any
upstream call), sends to that one account and records the outcome: taken (upstream id; the
body dropped), certainly not created (waiting again), refused (failed, with the upstream's
error), or in doubt (left as it is: when its next check comes the poller reconciles it on that
account, and puts it back to waiting if it never landed).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import func, update
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.errors import (
    GatewayError,
    ServiceUnavailable,
    TooManyRequests,
    UpstreamRelayed,
    new_request_id,
)
from app.resources import Resources
from app.tasks.models import Task, TaskEvent, TaskStatus
from app.tasks.routing import account_routes, send_create, submit_grace
from app.tasks.states import transition
from app.upstream.client import UpstreamCallFailed

logger = logging.getLogger(__name__)

BATCH = 100  # waiting creates looked at per cycle

_WAITING = (
    col(Task.status) == TaskStatus.QUEUED,
    col(Task.upstream_id).is_(None),
    col(Task.next_check_at).is_(None),
    col(Task.pending_body).is_not(None),
)


def is_waiting(task: Task) -> bool:
    """Whether the task waits in the queue (not yet claimed for sending)."""
    return (
        task.status == TaskStatus.QUEUED
        and task.upstream_id is None
        and (task.next_check_at is None and task.pending_body is not None)
    )


async def may_wait(resources: Resources, *, model: str) -> bool:
    """Whether a create no account has room for may wait: the queue is on, has room, and an
    active account serves the model (a create nobody serves is refused, not kept)."""
    size = resources.settings.create_queue_size
    if size == 0 or not resources.upstream.serves(model):
        return False
    async with resources.sessionmaker() as session:
        waiting = (await session.exec(select(func.count()).where(*_WAITING))).one()
    return int(waiting) < size


async def hold(resources: Resources, *, task: Task, body: dict[str, Any]) -> None:
    """Put a just-recorded (`submitting`) task in the queue: `queued`, for its client too."""
    async with resources.sessionmaker() as session:
        await transition(
            session,
            task=task,
            to_status=TaskStatus.QUEUED,
            values={"pending_body": json.dumps(body), "next_check_at": None, "account_id": None},
        )
        session.add(TaskEvent(task_id=task.id, kind="waiting", detail="every account is full"))
        await session.commit()
    task.account_id = None


async def requeue(session: AsyncSession, *, task: Task) -> None:
    """A create from the queue that certainly did not land: waiting again (the caller's
    session is committed here)."""
    await session.exec(
        update(Task)
        .where(col(Task.id) == task.id, col(Task.upstream_id).is_(None))
        .values(account_id=None, sent_at=None, next_check_at=None, updated_at=utcnow())
    )
    session.add(TaskEvent(task_id=task.id, kind="waiting", detail="not taken; waits again"))
    await session.commit()


async def cancel(session: AsyncSession, *, task: Task) -> bool:
    """Cancel a waiting task (nothing was sent); False if it is no longer waiting."""
    if not is_waiting(task):
        return False
    snapshot = _snapshot(task, TaskStatus.CANCELLED, error=None)
    values = {"snapshot": snapshot, "pending_body": None, "next_check_at": None}
    moved = await transition(session, task=task, to_status=TaskStatus.CANCELLED, values=values)
    await session.commit()
    return moved


async def dispatch_waiting(resources: Resources) -> int:
    """One pass over the queue: fail the creates that waited too long, then send the others,
    fairly between users, while their models have an account with room; returns how many
    were sent."""
    await _time_out(resources)
    full: set[str] = set()
    sent = 0
    for task_id in await _fair_order(resources):
        async with resources.sessionmaker() as session:
            task = await session.get(Task, task_id)
        if task is None or not is_waiting(task) or task.model in full:
            continue
        try:
            routes = await account_routes(resources, model=task.model)
        except (ServiceUnavailable, TooManyRequests):
            full.add(task.model)  # still no room for it: its model waits for the next cycle
            continue
        if await _claim(resources, task=task, account_id=routes[0].id):
            sent += await _send(resources, task=task, routes=routes[:1])
    return sent


async def _fair_order(resources: Resources) -> list[str]:
    """Waiting task ids, round-robin by user: every user's oldest, then every second..."""
    turn = func.row_number().over(partition_by=col(Task.user_id), order_by=col(Task.created_at))
    waiting = (
        sa_select(col(Task.id), turn.label("turn"), col(Task.created_at))
        .where(*_WAITING)
        .subquery()
    )
    async with resources.sessionmaker() as session:
        rows = await session.exec(  # type: ignore[call-overload]
            sa_select(waiting.c.id).order_by(waiting.c.turn, waiting.c.created_at).limit(BATCH)
        )
        return [row[0] for row in rows.all()]


async def _time_out(resources: Resources) -> None:
    now = utcnow()
    limit = now - timedelta(seconds=resources.settings.create_queue_timeout_seconds)
    async with resources.sessionmaker() as session:
        stale = (
            await session.exec(select(Task).where(*_WAITING, col(Task.created_at) < limit))
        ).all()
        for task in stale:
            error = {
                "code": "QueueTimeout",
                "message": "No upstream account had room for this task in time.",
            }
            await _fail(session, task=task, error=error)
            logger.warning("task %s: waited past the queue timeout; failed", task.id)


async def _claim(resources: Resources, *, task: Task, account_id: str) -> bool:
    now = utcnow()
    values = {"account_id": account_id, "sent_at": now}
    async with resources.sessionmaker() as session:
        claimed = await session.exec(
            update(Task)
            .where(col(Task.id) == task.id, *_WAITING)
            .values(**values, next_check_at=now + submit_grace(resources.settings))
        )
        await session.commit()
    if claimed.rowcount != 1:
        return False  # cancelled, timed out or claimed elsewhere meanwhile
    task.account_id, task.sent_at = account_id, now
    return True


async def _send(resources: Resources, *, task: Task, routes: list[Any]) -> int:
    body = json.loads(task.pending_body or "{}")
    try:
        created = await send_create(
            resources, task=task, body=body, request_id=new_request_id(), routes=routes
        )
    except UpstreamRelayed as exc:
        async with resources.sessionmaker() as session:
            fresh = await session.get(Task, task.id)
            if fresh is None:
                return 0
            if exc.status() == 429:
                await requeue(session, task=fresh)
            else:
                await _fail(session, task=fresh, error={"code": exc.code, "message": exc.message})
        return 0
    except UpstreamCallFailed as exc:
        if not exc.maybe_created:
            async with resources.sessionmaker() as session:
                fresh = await session.get(Task, task.id)
                if fresh is not None:
                    await requeue(session, task=fresh)
        return 0  # else in doubt: reconciled on its account when its next check comes
    except GatewayError:
        return 0  # a timeout: in doubt, as above
    upstream_id = created.get("id")
    if not isinstance(upstream_id, str) or not upstream_id:
        return 0  # in doubt, as above
    await _record_sent(resources, task=task, upstream_id=upstream_id)
    return 1


async def _record_sent(resources: Resources, *, task: Task, upstream_id: str) -> None:
    now = utcnow()
    async with resources.sessionmaker() as session:
        await session.exec(
            update(Task)
            .where(col(Task.id) == task.id, col(Task.upstream_id).is_(None))
            .values(
                upstream_id=upstream_id,
                pending_body=None,
                refreshed_at=now,
                next_check_at=now,
                updated_at=now,
            )
        )
        detail = f"sent from the gateway's queue to account {task.account_id}"
        session.add(TaskEvent(task_id=task.id, kind="sent", detail=detail))
        await session.commit()


async def _fail(session: AsyncSession, *, task: Task, error: dict[str, str]) -> None:
    snapshot = _snapshot(task, TaskStatus.FAILED, error=error)
    values = {
        "snapshot": snapshot,
        "pending_body": None,
        "next_check_at": None,
        "error_code": error["code"],
    }
    await transition(session, task=task, to_status=TaskStatus.FAILED, values=values)
    await session.commit()


def _snapshot(task: Task, status: TaskStatus, *, error: dict[str, str] | None) -> dict[str, Any]:
    """The task object a client sees of a task that never reached the upstream."""
    snapshot: dict[str, Any] = {
        "model": task.model,
        "status": status,
        "created_at": int(task.created_at.timestamp()),
        "updated_at": int(utcnow().timestamp()),
        "service_tier": task.service_tier,
        "execution_expires_after": task.execution_expires_after,
    }
    if error is not None:
        snapshot["error"] = error
    return snapshot
