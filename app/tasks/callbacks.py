"""Client callbacks, as upstream sends them: a POST of the task object on each status change.

The gateway keeps `callback_url` to itself (the upstream would call with its own ids), and
queues one delivery per (task, status) in the transaction that changes the status: an outbox,
so a crash loses no callback and none is queued twice. The poller delivers due rows. As
upstream: `queued`, `running`, `succeeded`, `failed` and `expired` are sent, not `cancelled`;
a terminal one that is not acknowledged with a 2xx within the timeout is sent 3 more times.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import httpx
from prometheus_client import Counter
from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.limits.clients import Network
from app.tasks.callback_guard import CallbackHostRefused, PublicOnlyTransport
from app.tasks.models import CallbackDelivery, Task, TaskStatus
from app.tasks.render import OutputLinks, public_view

logger = logging.getLogger(__name__)

NOTIFIED = frozenset(
    {
        TaskStatus.QUEUED,
        TaskStatus.RUNNING,
        TaskStatus.SUCCEEDED,
        TaskStatus.FAILED,
        TaskStatus.EXPIRED,
    }
)
RETRY_DELAY = timedelta(seconds=5)
CONCURRENT_RECEIVERS = 8
LEASE = timedelta(seconds=30)


def queue_callback(
    session: AsyncSession, *, task: Task, status: TaskStatus, values: dict[str, Any]
) -> None:
    """Queue the notification of `task` entering `status` (the caller's transaction commits it)."""
    if not task.callback_url or status not in NOTIFIED:
        return
    changed = task.model_copy(update={**values, "status": status})
    session.add(
        CallbackDelivery(
            task_id=task.id,
            status=status,
            url=task.callback_url,
            payload=public_view(changed),
            max_attempts=4 if status.is_terminal else 1,
        )
    )


def create_callback_client(
    *,
    timeout: float,
    allowed_networks: Sequence[Network] = (),
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The client for callbacks: public addresses only (see `callback_guard`), no credentials
    of any kind, short timeouts, no redirects."""
    return httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=False,
        transport=PublicOnlyTransport(
            transport or httpx.AsyncHTTPTransport(), allowed=allowed_networks
        ),
        headers={"User-Agent": "seedance-gateway-callback/1"},
    )


async def deliver_due(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    links: OutputLinks | None = None,
    counter: Counter | None = None,
    batch_size: int = 50,
) -> int:
    """Claim and send the deliveries that are due; returns how many were attempted.

    Tasks are served side by side (a slow receiver holds up only its own task's callbacks);
    each task's callbacks go in the order of its status changes. With `links` (the archive
    on), a payload's output URLs are the gateway's, signed as it is sent.
    """
    deliveries = await _claim(sessionmaker, batch_size)
    by_task: dict[str, list[CallbackDelivery]] = {}
    for delivery in deliveries:
        by_task.setdefault(delivery.task_id, []).append(delivery)
    slots = asyncio.Semaphore(CONCURRENT_RECEIVERS)

    async def send_in_order(queue: list[CallbackDelivery]) -> None:
        async with slots:
            for delivery in queue:
                error = await _post(http, delivery, links)
                if counter is not None:
                    counter.labels("failed" if error else "delivered").inc()
                async with sessionmaker() as session:
                    await session.exec(
                        update(CallbackDelivery)
                        .where(col(CallbackDelivery.id) == delivery.id)
                        .values(**_outcome(delivery, error))
                    )
                    await session.commit()

    await asyncio.gather(*(send_in_order(queue) for queue in by_task.values()))
    return len(deliveries)


async def _claim(
    sessionmaker: async_sessionmaker[AsyncSession], batch_size: int
) -> list[CallbackDelivery]:
    now = utcnow()
    # A task's later status waits while an earlier one is out with another replica (or waiting
    # to be retried), so that receivers get each task's statuses in order.
    earlier = aliased(CallbackDelivery)
    earlier_out = (
        select(earlier.id)
        .where(
            earlier.task_id == CallbackDelivery.task_id,
            col(earlier.id) < col(CallbackDelivery.id),
            col(earlier.delivered_at).is_(None),
            col(earlier.attempts) < col(earlier.max_attempts),
            col(earlier.next_attempt_at) > now,
        )
        .exists()
    )
    async with sessionmaker() as session:
        due = list(
            (
                await session.exec(
                    select(CallbackDelivery)
                    .where(
                        col(CallbackDelivery.delivered_at).is_(None),
                        col(CallbackDelivery.attempts) < col(CallbackDelivery.max_attempts),
                        col(CallbackDelivery.next_attempt_at) <= now,
                        ~earlier_out,
                    )
                    .order_by(col(CallbackDelivery.id))
                    .limit(batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
        )
        if due:
            await session.exec(
                update(CallbackDelivery)
                .where(col(CallbackDelivery.id).in_([d.id for d in due]))
                .values(next_attempt_at=now + LEASE)
            )
        await session.commit()
    return due


async def _post(
    http: httpx.AsyncClient, delivery: CallbackDelivery, links: OutputLinks | None
) -> str | None:
    payload = dict(delivery.payload)
    if links is not None and isinstance(payload.get("content"), dict):
        payload["content"] = links.rewrite(delivery.task_id, payload["content"])
    try:
        response = await http.post(delivery.url, json=payload)
    except CallbackHostRefused as exc:
        return f"{type(exc).__name__}: {exc}"
    except httpx.HTTPError as exc:
        return type(exc).__name__
    except Exception as exc:  # whatever one URL does, it is that delivery's failure, no one else's
        logger.warning("callback for task %s failed: %r", delivery.task_id, exc)
        return f"{type(exc).__name__}: {exc}"[:255]
    return None if response.is_success else f"HTTP {response.status_code}"


def _outcome(delivery: CallbackDelivery, error: str | None) -> dict[str, Any]:
    now = utcnow()
    attempts = delivery.attempts + 1
    if error is None:
        return {"attempts": attempts, "delivered_at": now, "last_error": None}
    logger.info(
        "callback for task %s (%s), attempt %d: %s",
        delivery.task_id,
        delivery.status,
        attempts,
        error,
    )
    return {
        "attempts": attempts,
        "last_error": error[:255],
        "next_attempt_at": now + RETRY_DELAY * 2 ** (attempts - 1),
    }
