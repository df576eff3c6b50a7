"""Caps on tasks in flight (submitting, queued, running, unknown): per key, per user, gateway-wide.

Read inside the create's transaction, under the locks that serialise creates, so no
interleaving can exceed a cap; a task frees its place when it ends. These caps hold whatever
happens to Redis. PostgreSQL keeps the counts (a trigger notes each task opening or ending, the
create folds the notes in: migration 0020), as a count of rows under the lock costs as much as
the dead index entries it walks; SQLite counts the rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import ColumnElement, ScalarSelect, bindparam, func, literal, text, true
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.config import Settings
from app.errors import AccessDenied, GatewayError, TooManyRequests
from app.keys.service import AuthContext
from app.tasks.models import OPEN_STATUSES, Task, TaskStatus, status_in

logger = logging.getLogger(__name__)

# Key of the PostgreSQL advisory lock that serialises creates for the gateway-wide cap.
GLOBAL_CREATE_LOCK = 0x5365_6564  # "Seed"
# Every create folds (deletes) the open-count notes, and its scan walks the dead rows until a
# vacuum: at 300 creates a second, 5 s leave about 60 pages (0.2 ms), where a minute left 560
# (1.6 ms) and autovacuum may be off or slow.
OPEN_CHANGES_VACUUM_SECONDS = 5.0
_VACUUM_OPEN_CHANGES = text("VACUUM (SKIP_LOCKED) open_task_changes")


# SQLite has one write lock for the whole database; a write that changes nothing takes it.
_SQLITE_WRITE_LOCK = text("UPDATE tasks SET status = status WHERE 1 = 0")
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=GLOBAL_CREATE_LOCK)
_OPEN = status_in(OPEN_STATUSES)


def _open_up_to(scope: ColumnElement[bool], cap: str) -> ScalarSelect[int]:
    """Open tasks in `scope`, counted only up to the cap (all a check needs to know): the
    count's cost stays bounded by the cap however many tasks are open."""
    found = select(literal(1)).select_from(Task).where(_OPEN, scope).limit(bindparam(cap))
    return select(func.count()).select_from(found.subquery()).scalar_subquery()


# PostgreSQL: the counts kept by the trigger, the changes committed so far folded in.
_KEPT_COUNTS = text(
    "SELECT key_open, user_open, gateway_open FROM sgw_open_counts(:key_id, :user_id)"
)
# SQLite: all three counts in one statement (it runs under the database's write lock), built
# once; the open statuses are constants of the SQL, not a list bound per request.
_OPEN_COUNTS = select(
    _open_up_to(col(Task.key_id) == bindparam("key_id"), "key_cap"),
    _open_up_to(col(Task.user_id) == bindparam("user_id"), "user_cap"),
    _open_up_to(true(), "gateway_cap"),
)

# The tasks a browser token has made (those the upstream refused aside), up to its allowance.
_TOKEN_MADE = select(func.count()).select_from(
    select(literal(1))
    .select_from(Task)
    .where(col(Task.token_id) == bindparam("token_id"), col(Task.status) != TaskStatus.REJECTED)
    .limit(bindparam("token_cap"))
    .subquery()
)


async def lock_gateway(session: AsyncSession) -> None:
    """Serialise creates across all users until commit."""
    postgres = session.get_bind().dialect.name == "postgresql"
    connection = await session.connection()
    await connection.execute(_ADVISORY_LOCK if postgres else _SQLITE_WRITE_LOCK)


def in_flight_caps(auth: AuthContext, settings: Settings) -> dict[str, int]:
    """The caps that apply to this caller, by scope (`Key`, `User`, `Gateway`)."""
    return {
        "Key": _cap(auth.key_max_in_flight, settings.max_tasks_in_flight_per_key),
        "User": _cap(auth.user_max_in_flight, settings.max_tasks_in_flight_per_user),
        "Gateway": settings.max_tasks_in_flight_global,
    }


def in_flight_refusal(scope: str, *, auth: AuthContext, settings: Settings) -> GatewayError:
    """The 429 for a cap that one more open task would exceed; the 403 for a browser token
    whose allowance of tasks is used up (waiting would not help)."""
    if scope == "Token":
        return AccessDenied(
            f"This browser token may create at most {auth.token_max_tasks} tasks.",
            code="TokenTaskLimitExceeded",
        )
    cap = in_flight_caps(auth, settings)[scope]
    who = {"Key": "this key", "User": "this user"}.get(scope, "the gateway")
    return TooManyRequests(
        f"Too many tasks in flight for {who} (at most {cap}); retry when one finishes.",
        code=f"ConcurrencyLimitExceeded.{scope}",
        retry_after=settings.in_flight_retry_after_seconds,
    )


async def enforce_in_flight(
    session: AsyncSession, *, auth: AuthContext, settings: Settings
) -> None:
    """429 `ConcurrencyLimitExceeded.*` if one more open task would exceed a cap; 403 if a
    browser token has made all the tasks it may."""
    connection = await session.connection()  # Core statements: no ORM execution path
    if auth.token_max_tasks is not None:
        params = {"token_id": auth.token_id, "token_cap": auth.token_max_tasks}
        if (await connection.execute(_TOKEN_MADE, params)).scalar_one() >= auth.token_max_tasks:
            raise in_flight_refusal("Token", auth=auth, settings=settings)
    caps = in_flight_caps(auth, settings)
    params = {
        "key_id": auth.key_id,
        "user_id": auth.user_id,
        **{f"{scope.lower()}_cap": cap for scope, cap in caps.items()},
    }
    counted = _KEPT_COUNTS if connection.dialect.name == "postgresql" else _OPEN_COUNTS
    counts = (await connection.execute(counted, params)).one()
    for (scope, cap), open_now in zip(caps.items(), counts, strict=True):
        if open_now >= cap:
            raise in_flight_refusal(scope, auth=auth, settings=settings)


def _cap(override: int | None, default: int) -> int:
    return default if override is None else override


async def vacuum_open_changes(autocommit_engine: AsyncEngine, stop: asyncio.Event) -> None:
    """PostgreSQL: vacuum the folded open-count notes every few seconds until `stop` is set (a
    replica finding another's vacuum at work skips its turn)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=OPEN_CHANGES_VACUUM_SECONDS)
        if stop.is_set():
            return
        try:
            async with autocommit_engine.connect() as connection:
                await connection.execute(_VACUUM_OPEN_CHANGES)
        except Exception as exc:  # the database away: the next turn tries again
            logger.warning("vacuum of the open-count notes failed: %s", type(exc).__name__)
