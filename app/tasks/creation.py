"""Creating a task: check and reserve atomically, record, then send upstream with the master key.

The task row and its ledger reservation commit before the upstream sees anything, so a crash
between the two leaves a task the poller reconciles, never an unrecorded upstream task.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import insert_rows, new_row, utcnow
from app.errors import (
    Conflict,
    GatewayError,
    InvalidParameter,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    UnprocessableEntity,
    UpstreamRelayed,
)
from app.ids import new_task_id
from app.keys.service import AuthContext
from app.limits.inflight import (
    enforce_in_flight,
    in_flight_caps,
    in_flight_refusal,
    lock_gateway,
)
from app.logs import bind
from app.resources import Resources
from app.tasks import queue, repository
from app.tasks.models import VISIBLE_STATUSES, Task, TaskStatus
from app.tasks.routing import account_routes, send_create, submit_grace
from app.tasks.service import visible_task
from app.tasks.states import transition
from app.tasks.validation import CreateRequest
from app.upstream.client import UpstreamCallFailed, UpstreamTimedOut
from app.upstream.pool import PoolAccount
from app.usage.budgets import budgets_for, enforce_budgets
from app.usage.ledger import reserve_entry
from app.usage.pricing import Estimate, terms_for

logger = logging.getLogger(__name__)

# An Idempotency-Key is remembered this long (Stripe's rule), then it may be used again.
IDEMPOTENCY_WINDOW = timedelta(hours=24)


async def create_task(
    *,
    resources: Resources,
    auth: AuthContext,
    request: CreateRequest,
    idempotency_key: str | None,
    request_id: str,
) -> dict[str, Any]:
    """Record the task and its reservation, then forward it upstream; returns `{"id": ...}`."""
    # A session only for what needs one (a replay, a draft, a cache miss, a budget); it is
    # closed once the task is recorded, before the upstream is called.
    async with resources.sessionmaker() as session:
        if idempotency_key is not None:
            replay = await _idempotent_replay(
                session, auth=auth, idempotency_key=idempotency_key, fingerprint=request.fingerprint
            )
            if replay is not None:
                return replay
        body = dict(request.forward_body)
        draft_id = None
        routes: list[PoolAccount] | None
        if request.draft_task_ref is not None:
            draft = await _draft_for(session, auth=auth, draft_ref=request.draft_task_ref)
            body["content"] = _with_upstream_draft(body["content"], draft)
            draft_id = draft.id
            routes = await resources.upstream.pinned(draft.account_id)  # the draft lives there
        else:
            routes = await _routes_or_wait(resources, model=request.model)
        task = new_row(
            Task,
            id=new_task_id(),
            user_id=auth.user_id,
            key_id=auth.key_id,
            token_id=auth.token_id,
            **request.task_fields(),
            execution_expires_after=request.execution_expires_after,
            callback_url=request.callback_url,
            draft_task_id=draft_id,
            idempotency_key=idempotency_key,
            request_fingerprint=request.fingerprint,
            seed=request.seed,
            archive=resources.store is not None,
            next_check_at=utcnow() + submit_grace(resources.settings),
        )
        bind(task_id=task.id)
        task.account_id = routes[0].id if routes else None
        await _record(session, task=task, request=request, auth=auth, resources=resources)
    if routes is None:  # every account is full: it waits in the gateway's queue
        await queue.hold(resources, task=task, body=body)
        return {"id": task.id}
    # Shielded: a client that disconnects mid-call must not leave the task half-recorded.
    return await asyncio.shield(
        _submit(resources=resources, task=task, body=body, request_id=request_id, routes=routes)
    )


async def _routes_or_wait(resources: Resources, *, model: str) -> list[PoolAccount] | None:
    """The accounts the create may go to; None when every one is full and it may wait."""
    try:
        return await account_routes(resources, model=model)
    except (ServiceUnavailable, TooManyRequests):
        if await queue.may_wait(resources, model=model):
            return None
        raise


async def _record(
    session: AsyncSession,
    *,
    task: Task,
    request: CreateRequest,
    auth: AuthContext,
    resources: Resources,
) -> None:
    """Check budgets and in-flight caps and insert task + reservation, atomically.

    The gateway-wide lock serialises every create, so it is taken last, leaving only the
    in-flight count and the inserts in its critical section. Without a budget, on PostgreSQL,
    that is one statement (the lock held only while the server runs it); with one, the
    user's lock and the spend come first, in one transaction with the rest.
    """
    tokens = Estimate.of(task, request.spec).tokens
    try:
        terms = await terms_for(
            session, task=task, spec=request.spec, plan_id=auth.plan_id, cache=resources.prices
        )
        reservation = reserve_entry(task, tokens=tokens, terms=terms)
        budgets = await budgets_for(
            resources.statements, user_id=task.user_id, key_id=task.key_id, cache=resources.budgets
        )
        caps = in_flight_caps(auth, resources.settings)
        if not budgets and session.get_bind().dialect.name == "postgresql":
            if session.in_transaction():
                # Ends the price lookup's read, if any, and keeps an expired Idempotency-Key's
                # release (expired, it is free to reuse whatever happens next).
                await session.commit()
            refused = await repository.record_create(
                resources.statements,
                task=task,
                reserve=reservation,
                caps=caps,
                token_cap=auth.token_max_tasks,
            )
            if refused is not None:
                raise in_flight_refusal(refused, auth=auth, settings=resources.settings)
            return
        await enforce_budgets(  # takes the user's lock: there is a budget to enforce
            session,
            user_id=task.user_id,
            budgets=budgets,
            add=reservation,
        )
        await lock_gateway(session)  # always after the user's lock
        await enforce_in_flight(session, auth=auth, settings=resources.settings)
        await insert_rows(session, task, reservation)  # the task first (FK)
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(
            "Another request with this Idempotency-Key is in progress.", code="IdempotencyKeyInUse"
        ) from None
    except BaseException:
        await session.rollback()  # release the user lock at once; nothing is written
        raise


async def _submit(
    *,
    resources: Resources,
    task: Task,
    body: dict[str, Any],
    request_id: str,
    routes: list[PoolAccount],
) -> dict[str, Any]:
    """Send the create and record its outcome.

    From the moment the body may have reached the upstream, no answer may invite an SDK retry
    (it could create a second task): a failure to record the outcome (the database went away)
    is a 503 with `x-should-retry: false`, and the poller reconciles the task when the database
    is back (it stays `submitting` until then).
    """
    try:
        try:
            created = await send_create(
                resources, task=task, body=body, request_id=request_id, routes=routes
            )
            upstream_id = created.get("id")
            if not isinstance(upstream_id, str) or not upstream_id:
                raise UpstreamCallFailed(
                    "The upstream service sent no task id.", maybe_created=True
                )
        except (UpstreamRelayed, UpstreamCallFailed, UpstreamTimedOut) as exc:
            full = isinstance(exc, UpstreamRelayed) and exc.status() == 429
            if full and await queue.may_wait(resources, model=task.model):
                await queue.hold(resources, task=task, body=body)  # it was not created
                return {"id": task.id}
            async with resources.sessionmaker() as session:
                await _record_failed_submit(session, task=task, error=exc)
            raise
        await _record_created(resources, task=task, upstream_id=upstream_id)
    except GatewayError:
        raise
    except Exception:
        logger.exception("task %s: the create's outcome could not be recorded", task.id)
        raise ServiceUnavailable(
            "The task may have been created, but its outcome could not be recorded yet. Do not "
            "resend it; retry with the same Idempotency-Key later to get its id.",
            code="OutcomePending",
            retry_after=30,
            headers={"x-should-retry": "false"},
        ) from None
    return {**created, "id": task.id}


async def _record_created(resources: Resources, *, task: Task, upstream_id: str) -> None:
    """The upstream made the task: it is queued (its answer is a fresh observation)."""
    if task.callback_url is None:  # nothing to queue with the move: one statement suffices
        await repository.store_created(
            resources.statements, task_id=task.id, upstream_id=upstream_id, now=utcnow()
        )
        return
    async with resources.sessionmaker() as session:
        now = utcnow()
        await transition(
            session,
            task=task,
            to_status=TaskStatus.QUEUED,
            values={"upstream_id": upstream_id, "refreshed_at": now, "next_check_at": now},
        )
        await session.commit()


async def _record_failed_submit(session: AsyncSession, *, task: Task, error: GatewayError) -> None:
    """Refused: the task is rejected and its reservation released. Maybe created: unknown."""
    maybe_created = bool(getattr(error, "maybe_created", False))
    if maybe_created:
        await transition(
            session,
            task=task,
            to_status=TaskStatus.UNKNOWN,
            values={"error_code": error.code, "next_check_at": utcnow()},
        )
        # The create may exist upstream: an SDK auto-retry could make a second one.
        error.headers["x-should-retry"] = "false"
    else:
        await transition(
            session,
            task=task,
            to_status=TaskStatus.REJECTED,
            values={"error_code": error.code, "next_check_at": None},
        )
    await session.commit()


async def _idempotent_replay(
    session: AsyncSession, *, auth: AuthContext, idempotency_key: str, fingerprint: str
) -> dict[str, Any] | None:
    """The task an earlier create with this key made, or None to go ahead (Stripe's rules)."""
    existing = (
        await session.exec(
            select(Task).where(Task.key_id == auth.key_id, Task.idempotency_key == idempotency_key)
        )
    ).first()
    if existing is None:
        return None
    if existing.created_at < utcnow() - IDEMPOTENCY_WINDOW:
        # Expired: the old task lets go of the key in the transaction that records the new one.
        await session.exec(
            update(Task).where(col(Task.id) == existing.id).values(idempotency_key=None)
        )
        return None
    if existing.request_fingerprint not in (None, fingerprint):
        raise UnprocessableEntity(
            "This Idempotency-Key was used with a different request body; use a new key.",
            code="IdempotencyKeyReused",
            param="Idempotency-Key",
            headers={"x-should-retry": "false"},
        )
    if existing.status in VISIBLE_STATUSES:
        return {"id": existing.id}
    if existing.status == TaskStatus.UNKNOWN:
        raise Conflict(
            "The outcome of the request with this Idempotency-Key is not known yet; retry with "
            "the same key later.",
            code="IdempotencyKeyOutcomePending",
            headers={"Retry-After": "10"},
        )
    if existing.status == TaskStatus.SUBMITTING:
        raise Conflict(
            "Another request with this Idempotency-Key is in progress.", code="IdempotencyKeyInUse"
        )
    raise Conflict(
        "The request with this Idempotency-Key did not create a task; use a new key.",
        code="IdempotencyKeyUsed",
        headers={"x-should-retry": "false"},
    )


async def _draft_for(session: AsyncSession, *, auth: AuthContext, draft_ref: str) -> Task:
    try:
        draft = await visible_task(session, auth=auth, task_id=draft_ref)
    except NotFound:
        draft = None
    if draft is None or draft.upstream_id is None:
        raise InvalidParameter("content", f"the draft task {draft_ref} is not found")
    return draft


def _with_upstream_draft(content: list[dict[str, Any]], draft: Task) -> list[dict[str, Any]]:
    # Clients know gateway ids; the upstream knows its own.
    return [
        {**item, "draft_task": {**item["draft_task"], "id": draft.upstream_id}}
        if item.get("type") == "draft_task"
        else item
        for item in content
    ]
