"""Reconciling creates of unknown outcome: find the task upstream, or conclude it never landed.

A create answered by a 5xx or a timeout may exist upstream. The upstream list (newest first,
filtered by model and tier) is read once per poller cycle, back to the oldest unknown create of
that model, and searched for tasks created around each one's time that no gateway task owns
yet. One is adopted only on evidence that identifies the request: the upstream echoes the seed
(one the gateway chose when the client left it random) and the expiry it was sent, so a
candidate is ours only when what it echoes matches what was sent, seed included. Two users
creating at the same moment, or a task made on the account outside the gateway, therefore never
get each other's task; while candidates show no seed yet (queued and running tasks echo only a
few fields), or two fit, the task waits. With no candidate at all once the list has had time to
show it (`RESOLVE_AFTER`), and the scan reached back past its time, the create never landed:
rejected, and its reservation released. The unique upstream id keeps two replicas from adopting
one task.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.errors import GatewayError, new_request_id
from app.tasks.models import Task, TaskStatus
from app.tasks.queue import requeue
from app.tasks.states import next_check_at, snapshot_values, transition, upstream_status
from app.upstream.client import UpstreamClient
from app.upstream.pool import ListSlot, UpstreamPool

logger = logging.getLogger(__name__)

EARLIEST = timedelta(seconds=15)  # upstream clocks and ours may differ a little
LATEST = timedelta(seconds=120)
# The upstream lists a task within seconds of creating it: a create this old that no list
# shows never landed.
RESOLVE_AFTER = timedelta(seconds=20)
# The upstream's largest page: each list call (one a second per account) reaches furthest back.
PAGE_SIZE = 500
# How far back one scan may read (10,000 tasks); tasks older than that wait for a later cycle.
MAX_PAGES = 20


@dataclass
class ListScan:
    """The upstream tasks of one model and tier, newest first, down to `reached` (unix seconds;
    -inf when the whole list was read)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    reached: float = float("inf")

    def covers(self, task: Task) -> bool:
        """Whether the scan went back far enough to have seen this task's upstream twin."""
        return self.reached <= (task.create_sent_at - EARLIEST).timestamp()


async def reconcile_unknowns(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    upstream: UpstreamPool,
    tasks: list[Task],
    list_slot: ListSlot,
) -> None:
    """Adopt the upstream task each unknown create made, or conclude it never landed.

    One scan of the list per account, model and tier serves every unknown task of it, however
    many there are, on the account the create was sent to (never another); each list call is
    made in a `list_slot` of the account.
    """
    groups: dict[tuple[str | None, str, str], list[Task]] = {}
    for task in tasks:
        groups.setdefault((task.account_id, task.model, task.service_tier), []).append(task)
    for (account_id, model, tier), group in groups.items():
        since = min(task.create_sent_at for task in group) - EARLIEST
        scan = await _scan(
            await upstream.client(account_id),
            model=upstream.upstream_model(account_id, model),
            tier=tier,
            since=since.timestamp(),
            list_slot=functools.partial(list_slot, account_id),
        )
        for task in group:
            async with sessionmaker() as session:
                fresh = await session.get(Task, task.id)
                if fresh is not None and fresh.create_in_doubt:
                    await _resolve(session, task=fresh, scan=scan)


async def _resolve(session: AsyncSession, *, task: Task, scan: ListScan) -> None:
    earliest = (task.create_sent_at - EARLIEST).timestamp()
    latest = (task.create_sent_at + LATEST).timestamp()
    around = [item for item in scan.items if earliest <= item["created_at"] <= latest]
    free = await _unowned(session, around)
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
    elif not fitting and scan.covers(task) and utcnow() - task.create_sent_at > RESOLVE_AFTER:
        if task.sent_in_doubt:  # it never left: back to the gateway's queue, to be sent again
            await requeue(session, task=task)
            return
        await transition(
            session,
            task=task,
            to_status=TaskStatus.REJECTED,
            values={"next_check_at": None, "error_code": "NotFoundUpstream"},
        )
        await session.commit()
        logger.warning(
            "task %s: create never reached the upstream (%d listed around its time, %d unowned, "
            "none fitting); rejected and released",
            task.id,
            len(around),
            len(free),
        )
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


async def _scan(
    upstream: UpstreamClient,
    *,
    model: str,
    tier: str,
    since: float,
    list_slot: Callable[[], AbstractAsyncContextManager[None]],
) -> ListScan:
    """Read the list newest first until `since`; a failed or capped scan covers what it read."""
    scan = ListScan()
    seen: set[str] = set()
    for page in range(1, MAX_PAGES + 1):
        try:
            async with list_slot():
                listing = await upstream.list_tasks(
                    [
                        ("page_num", page),
                        ("page_size", PAGE_SIZE),
                        ("filter.model", model),
                        ("filter.service_tier", tier),
                    ],
                    request_id=new_request_id(),
                )
        except GatewayError as exc:
            logger.warning("reconciling: upstream list page %d failed: %s", page, exc.code)
            return scan
        items = [item for item in listing.get("items") or [] if _listed(item)]
        # Tasks created while paging push older ones down a page: the same task twice is one.
        scan.items += [item for item in items if item["id"] not in seen]
        seen |= {item["id"] for item in items}
        if len(items) < PAGE_SIZE:
            scan.reached = float("-inf")
            return scan
        scan.reached = items[-1]["created_at"]
        if scan.reached < since:
            return scan
    return scan


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
