"""Observing open tasks in bulk: one upstream list call answers for up to 150 of them.

The account allows 20 retrieves a second, so at one retrieve per task 120 open tasks are each
looked at only every 6 s or so, and 1,000 once a minute. It also allows one list call a second,
and a list filtered by `filter.task_ids` shows the current object of every task it names. So
each poller cycle lists the open tasks first: a task whose state moved is moved here (its
terminal object settles it when the list shows the usage), the others are marked fresh. Only
what the list could not answer for (a task it does not show, a finished task without its
usage, a list call that failed) is left due for a retrieve.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select as sa_select
from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.errors import GatewayError, new_request_id
from app.tasks.models import Task, TaskStatus
from app.tasks.states import apply_snapshot, next_check_at, upstream_status
from app.upstream.pool import ListSlot, UpstreamPool

logger = logging.getLogger(__name__)

# The upstream documents no bound on `filter.task_ids` per call. 150 ids cover the account's 120
# queued tasks plus its running ones in one call, in a URL of about 6 KB (under the 8 KB that
# HTTP servers and proxies commonly accept).
IDS_PER_CALL = 150
# The most open tasks observed in one cycle (8 list calls), least recently refreshed first.
MAX_OBSERVED = 1200
OBSERVED_STATUSES = (TaskStatus.QUEUED, TaskStatus.RUNNING)


@dataclass(frozen=True)
class OpenTask:
    """What the observer needs to know of an open task."""

    id: str
    upstream_id: str
    status: str
    service_tier: str
    account_id: str | None


async def observe_open_tasks(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    upstream: UpstreamPool,
    list_slot: ListSlot,
) -> int:
    """List the open tasks upstream, each on its own account, and store what the lists show;
    returns how many they showed.

    Each list call is made in a `list_slot` of its account. A failed call ends that account's
    observation: the tasks it would have shown stay due, and the poller retrieves them.
    """
    shown = 0
    failed: set[str | None] = set()
    for (account_id, tier), chunk in _chunks(await _open_tasks(sessionmaker)):
        if account_id in failed:
            continue
        client = await upstream.client(account_id)
        params: list[tuple[str, str | int]] = [
            ("page_size", len(chunk)),
            ("filter.service_tier", tier),
            *(("filter.task_ids", task.upstream_id) for task in chunk),
        ]
        try:
            async with list_slot(account_id):
                page = await client.list_tasks(params, request_id=new_request_id())
        except GatewayError as exc:
            logger.warning(
                "observing %d open tasks: upstream list failed: %s", len(chunk), exc.code
            )
            failed.add(account_id)
            continue
        shown += await _store(sessionmaker, chunk, page)
    return shown


async def _open_tasks(sessionmaker: async_sessionmaker[AsyncSession]) -> list[OpenTask]:
    async with sessionmaker() as session:
        # SQLModel types select() up to four columns; this is SQLAlchemy's, which it runs too.
        columns = (Task.id, Task.upstream_id, Task.status, Task.service_tier, Task.account_id)
        rows = await session.exec(  # type: ignore[call-overload]
            sa_select(*(col(column) for column in columns))
            .where(col(Task.status).in_(OBSERVED_STATUSES), col(Task.upstream_id).is_not(None))
            .order_by(col(Task.refreshed_at).asc().nulls_first())
            .limit(MAX_OBSERVED)
        )
        return [OpenTask(*row) for row in rows.all()]


Group = tuple[str | None, str]  # account id, service tier


def _chunks(tasks: Sequence[OpenTask]) -> Iterator[tuple[Group, list[OpenTask]]]:
    """The tasks in list-call-sized groups of one account and one service tier (a list shows
    one account's tasks of one tier)."""
    groups: dict[Group, list[OpenTask]] = {}
    for task in tasks:
        groups.setdefault((task.account_id, task.service_tier), []).append(task)
    for key, group in groups.items():
        for start in range(0, len(group), IDS_PER_CALL):
            yield key, group[start : start + IDS_PER_CALL]


async def _store(
    sessionmaker: async_sessionmaker[AsyncSession], chunk: list[OpenTask], page: dict[str, Any]
) -> int:
    """Apply one list page: moves by compare-and-swap, the unchanged marked fresh at once."""
    unchanged, moved = _compare(chunk, page)
    async with sessionmaker() as session:
        for status, task_ids in unchanged.items():
            await _mark_fresh(session, task_ids=task_ids, status=status, now=utcnow())
        await session.commit()
        for task_id, item in moved:
            task = await session.get(Task, task_id)
            if task is not None:
                await apply_snapshot(session, task=task, snapshot=item)  # commits
    return sum(map(len, unchanged.values())) + len(moved)


def _compare(
    chunk: list[OpenTask], page: dict[str, Any]
) -> tuple[dict[str, list[str]], list[tuple[str, dict[str, Any]]]]:
    """The tasks the page shows unchanged (ids by status), and those it shows moved."""
    items = page.get("items")
    shown = {
        item.get("id"): item
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict)
    }
    unchanged: dict[str, list[str]] = {}
    moved: list[tuple[str, dict[str, Any]]] = []
    for open_task in chunk:
        item = shown.get(open_task.upstream_id)
        status = upstream_status(item) if item is not None else None
        if item is None or status is None:
            continue  # not shown: the retrieve finds out why
        if status == open_task.status:
            unchanged.setdefault(open_task.status, []).append(open_task.id)
        elif _complete(item, status):
            moved.append((open_task.id, item))
    return unchanged, moved


async def _mark_fresh(
    session: AsyncSession, *, task_ids: list[str], status: str, now: datetime
) -> None:
    # Guarded by status: a task some retrieve moved meanwhile keeps what that retrieve stored.
    await session.exec(
        update(Task)
        .where(col(Task.id).in_(task_ids), col(Task.status) == status)
        .values(refreshed_at=now, next_check_at=next_check_at(now), check_failures=0)
    )


def _complete(item: dict[str, Any], status: TaskStatus) -> bool:
    """Whether a list item can move its task: a success needs its usage to be settled."""
    if status != TaskStatus.SUCCEEDED:
        return True
    usage = item.get("usage")
    return isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int)
