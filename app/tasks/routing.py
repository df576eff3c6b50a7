"""Which upstream account a create goes to, and its failover: the create side of the pool.

A create is sent to the best account with a create left this minute (every replica's, counted
in Redis): no account is sent more creates than its `creates_per_minute`. When none has one,
the client gets a 429 before anything is written. (A pool of one, without the queue, skips the
count: that account's own 429 says it, and the hot path keeps its one Redis trip.)

The create moves to the next account only when the last certainly did not create it (refused
before sending, a 429, its key refused). Anything else (a 5xx, a timeout, an unreadable answer)
stays on that account, to be reconciled there.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from app.config import Settings
from app.errors import GatewayError, ServiceUnavailable, TooManyRequests, UpstreamRelayed
from app.resources import Resources
from app.tasks import repository
from app.tasks.models import Task
from app.upstream.client import UpstreamCallFailed
from app.upstream.pool import PoolAccount

logger = logging.getLogger(__name__)


def submit_grace(settings: Settings) -> timedelta:
    """After this long a create with no outcome on record lost its process (or its database
    write); the poller then reconciles it. Longer than any upstream call may take."""
    return timedelta(seconds=settings.upstream_timeout_seconds + 10)


async def account_routes(resources: Resources, *, model: str) -> list[PoolAccount]:
    """The accounts this create may go to, best first, the first holding one of its creates
    this minute; 503 when none takes creates now, 429 when none has a create left."""

    async def open_tasks() -> dict[tuple[str, str], int]:
        return await repository.open_tasks_by_account(resources.autocommit_engine)

    queue_on = resources.settings.create_queue_size > 0
    routes = await resources.upstream.routes(model, open_tasks, always_count=queue_on)
    if not routes:
        raise ServiceUnavailable(
            "No upstream account takes creates for this model now; retry later.",
            code="ServiceUnavailable.NoUpstreamAccount",
            retry_after=10,
        )
    if len(routes) == 1 and not queue_on:
        return routes  # a lone account's own 429 says when it is out of creates (no Redis trip)
    for index, account in enumerate(routes):
        if await _has_create_room(resources, account):
            return routes[index:]
    raise TooManyRequests(
        "Every upstream account serving this model is at its creates-per-minute limit; retry.",
        code="RateLimitExceeded.UpstreamAccounts",
        retry_after=5,
    )


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
    other outcome is this account's, reconciled there if in doubt. When the accounts left have
    no create this minute, the last refusal is the answer."""
    refusal: GatewayError = UpstreamCallFailed(
        "No upstream account took the create.", maybe_created=False
    )
    for index, account in enumerate(routes):
        last = index == len(routes) - 1
        if index > 0 and not await _has_create_room(resources, account):
            continue  # the first route's create was counted when it was chosen
        if index > 0 and not await _move(resources, task=task, account_id=account.id):
            break  # recorded as something else meanwhile: nothing more is sent
        forward = {**body, "model": account.row.upstream_model(task.model)}
        try:
            return await account.client.create_task(forward, request_id=request_id)
        except UpstreamRelayed as exc:
            if last or exc.status() != 429:
                raise
            refusal = exc
        except UpstreamCallFailed as exc:
            if last or exc.maybe_created:
                raise
            refusal = exc
        logger.warning("task %s: account %s did not take the create; next", task.id, account.id)
    raise refusal


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
