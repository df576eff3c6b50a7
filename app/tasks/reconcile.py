"""Reconciling creates of unknown outcome: find the task upstream, or conclude it never landed.

A create answered by a 5xx or a timeout may exist upstream. The upstream list (newest first,
filtered by model and tier) is searched for tasks created around the same time that no gateway
task owns yet. One is adopted only on evidence that identifies the request: the upstream echoes
the seed (one the gateway chose when the client left it random) and the expiry it was sent, so
a candidate is ours only when what it echoes matches what was sent, seed included. Two users
creating at the same moment, or a task made on the account outside the gateway, therefore never
get each other's task; while candidates show no seed yet (queued and running tasks echo only a
few fields), or two fit, the task waits. With no candidate at all once the list has had time to
show it (`RESOLVE_AFTER`), the create never landed: rejected, and its reservation released. The
unique upstream id keeps two replicas from adopting one task.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.errors import GatewayError, new_request_id
from app.tasks.models import Task, TaskStatus
from app.tasks.states import next_check_at, snapshot_values, transition, upstream_status
from app.upstream.client import UpstreamClient

logger = logging.getLogger(__name__)

EARLIEST = timedelta(seconds=15)  # upstream clocks and ours may differ a little
LATEST = timedelta(seconds=120)
# The upstream lists a task within seconds of creating it: a create this old that no list
# shows never landed.
RESOLVE_AFTER = timedelta(seconds=20)
MAX_PAGES = 5


async def reconcile_unknown(session: AsyncSession, *, upstream: UpstreamClient, task: Task) -> None:
    """Adopt the upstream task this unknown create made, or conclude it never landed."""
    try:
        candidates = await _recent_upstream_tasks(upstream, task=task)
    except GatewayError as exc:
        logger.warning("task %s: reconciling failed, upstream list: %s", task.id, exc.code)
        await _later(session, task=task)
        return
    free = await _unowned(session, candidates)
    fitting = [item for item in free if _may_be(task, item)]
    identified = [
        item for item in fitting if task.seed is not None and item.get("seed") == task.seed
    ]
    if len(identified) == 1:
        await _adopt(session, task=task, snapshot=identified[0])
        return
    if len(identified) > 1:
        logger.error(
            "task %s: %d upstream tasks match this create; not adopting any (check the account)",
            task.id,
            len(identified),
        )
    elif not fitting and utcnow() - task.created_at > RESOLVE_AFTER:
        await transition(
            session,
            task=task,
            to_status=TaskStatus.REJECTED,
            values={"next_check_at": None, "error_code": "NotFoundUpstream"},
        )
        await session.commit()
        logger.warning("task %s: create never reached the upstream; rejected and released", task.id)
        return
    await _later(session, task=task)


def _may_be(task: Task, item: dict[str, Any]) -> bool:
    """Whether nothing `item` echoes contradicts what this task's create sent."""
    sent = {
        "seed": task.seed,
        "service_tier": task.service_tier,
        "execution_expires_after": task.execution_expires_after,
    }
    return all(item[name] == value for name, value in sent.items() if name in item)


async def _unowned(session: AsyncSession, candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not candidates:
        return []
    owned = set(
        (
            await session.exec(
                select(Task.upstream_id).where(
                    col(Task.upstream_id).in_([c["id"] for c in candidates])
                )
            )
        ).all()
    )
    return [c for c in candidates if c["id"] not in owned]


async def _later(session: AsyncSession, *, task: Task) -> None:
    failures = task.check_failures + 1
    await session.exec(
        update(Task)
        .where(col(Task.id) == task.id)
        .values(
            check_failures=failures,
            next_check_at=next_check_at(utcnow(), failures=min(failures, 3)),
        )
    )
    await session.commit()


async def _recent_upstream_tasks(upstream: UpstreamClient, *, task: Task) -> list[dict[str, Any]]:
    earliest = (task.created_at - EARLIEST).timestamp()
    latest = (task.created_at + LATEST).timestamp()
    found: list[dict[str, Any]] = []
    for page in range(1, MAX_PAGES + 1):
        listing = await upstream.list_tasks(
            [
                ("page_num", page),
                ("page_size", 100),
                ("filter.model", task.model),
                ("filter.service_tier", task.service_tier),
            ],
            request_id=new_request_id(),
        )
        items = [item for item in listing.get("items") or [] if _listed(item)]
        found += [item for item in items if earliest <= item["created_at"] <= latest]
        if not items or items[-1]["created_at"] < earliest:
            break
    return found


def _listed(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("id"), str)
        and isinstance(item.get("created_at"), int)
        and upstream_status(item) is not None
    )


async def _adopt(session: AsyncSession, *, task: Task, snapshot: dict[str, Any]) -> None:
    status = upstream_status(snapshot)
    assert status is not None
    values = {**snapshot_values(snapshot, utcnow()), "upstream_id": snapshot["id"]}
    try:
        await transition(session, task=task, to_status=status, values=values)
        await session.commit()
    except IntegrityError:  # another replica adopted that upstream task first
        await session.rollback()
        return
    logger.info("task %s: reconciled with upstream task (now %s)", task.id, status)
