"""The re-read after settlement: the upstream object of each succeeded task is read once more,
`reread_after` its settlement, and the usage it reports then is kept beside the settled one.

The reconciliation report compares the two: a task whose usage changed after settlement is
flagged there (the ledger is never rewritten). Reads share the poller's retrieve budget.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.errors import GatewayError, new_request_id
from app.tasks.models import Task, TaskStatus
from app.upstream.client import UpstreamClient
from app.upstream.pool import AccountPace, UpstreamPool

logger = logging.getLogger(__name__)


async def reread_settled(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    upstream: UpstreamPool,
    pace: AccountPace,
    after: timedelta,
    batch: int,
) -> int:
    """Re-read up to `batch` tasks that settled at least `after` ago and were not re-read yet;
    returns how many were."""
    async with sessionmaker() as session:
        due = await session.exec(
            select(Task.id, Task.upstream_id, Task.account_id)
            .where(
                Task.status == TaskStatus.SUCCEEDED,
                col(Task.reread_at).is_(None),
                col(Task.updated_at) <= utcnow() - after,
                col(Task.upstream_id).is_not(None),
            )
            .order_by(col(Task.updated_at))
            .limit(batch)
        )
        tasks = list(due.all())
    for task_id, upstream_id, account_id in tasks:
        await pace(account_id)
        tokens = await _usage_now(await upstream.client(account_id), str(upstream_id))
        async with sessionmaker() as session:
            await session.exec(
                update(Task)
                .where(col(Task.id) == task_id, col(Task.reread_at).is_(None))
                .values(reread_tokens=tokens, reread_at=utcnow())
            )
            await session.commit()
    return len(tasks)


async def _usage_now(upstream: UpstreamClient, upstream_id: str) -> int | None:
    """The usage the upstream reports for a task now; None once it no longer shows it."""
    try:
        found: dict[str, Any] = await upstream.get_task(upstream_id, request_id=new_request_id())
    except GatewayError as exc:
        if exc.status() != 404:
            raise
        return None
    usage = found.get("usage")
    if not isinstance(usage, dict):
        return None
    tokens = usage.get("completion_tokens", usage.get("total_tokens"))
    return tokens if isinstance(tokens, int) else None
