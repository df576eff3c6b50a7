"""Which upstream account a create goes to, and its failover: the create side of the pool.

A create is sent to the best account first; it moves to the next only when the last certainly
did not create it (refused before sending, a 429, its key refused). Anything else (a 5xx, a
timeout, an unreadable answer) stays on that account, to be reconciled there.
"""

from __future__ import annotations

import logging
from typing import Any

from app.errors import ServiceUnavailable, UpstreamRelayed
from app.resources import Resources
from app.tasks import repository
from app.tasks.models import Task
from app.upstream.client import UpstreamCallFailed
from app.upstream.pool import PoolAccount

logger = logging.getLogger(__name__)


async def account_routes(resources: Resources, *, model: str) -> list[PoolAccount]:
    """The accounts this create may go to, best first; 503 when none takes creates now."""

    async def open_tasks() -> dict[tuple[str, str], int]:
        return await repository.open_tasks_by_account(resources.autocommit_engine)

    routes = await resources.upstream.routes(model, open_tasks)
    if not routes:
        raise ServiceUnavailable(
            "No upstream account takes creates for this model now; retry later.",
            code="ServiceUnavailable.NoUpstreamAccount",
            retry_after=10,
        )
    return routes


async def send_create(
    resources: Resources,
    *,
    task: Task,
    body: dict[str, Any],
    request_id: str,
    routes: list[PoolAccount],
) -> dict[str, Any]:
    """Send the create to the first account that takes it. It moves to the next only when the
    last one certainly did not create it (refused before sending, 429, its key refused); any
    other outcome is this account's, reconciled there if in doubt."""
    for index, account in enumerate(routes):
        last = index == len(routes) - 1
        if index > 0 and not await _move(resources, task=task, account_id=account.id):
            break  # recorded as something else meanwhile: nothing more is sent
        if not last and not await _has_create_room(resources, account):
            continue
        forward = {**body, "model": account.row.upstream_model(task.model)}
        try:
            return await account.client.create_task(forward, request_id=request_id)
        except UpstreamRelayed as exc:
            if last or exc.status() != 429:
                raise
        except UpstreamCallFailed as exc:
            if last or exc.maybe_created:
                raise
        logger.warning("task %s: account %s did not take the create; next", task.id, account.id)
    raise UpstreamCallFailed("No upstream account took the create.", maybe_created=False)


async def _has_create_room(resources: Resources, account: PoolAccount) -> bool:
    """Whether the account's creates per minute (every replica's, with Redis) allow one more."""
    rate = f"{account.row.creates_per_minute}/minute"
    return await resources.limiter.allow(rate, "account-creates", account.id)


async def _move(resources: Resources, *, task: Task, account_id: str) -> bool:
    """Point a `submitting` task at another account before its create is sent there."""
    moved = await repository.move_to_account(
        resources.autocommit_engine, task_id=task.id, account_id=account_id
    )
    if moved:
        task.account_id = account_id
    return moved
