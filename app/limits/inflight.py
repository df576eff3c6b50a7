"""Caps on tasks in flight (submitting, queued, running, unknown): per key, per user, gateway-wide.

Counted from the database inside the create's transaction, under the locks that serialise
creates, so no interleaving can exceed a cap; a task frees its place when it ends. These caps
hold whatever happens to Redis.
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.config import Settings
from app.errors import TooManyRequests
from app.keys.service import AuthContext
from app.tasks.models import OPEN_STATUSES, Task

# Key of the PostgreSQL advisory lock that serialises creates for the gateway-wide cap.
GLOBAL_CREATE_LOCK = 0x5365_6564  # "Seed"


# SQLite has one write lock for the whole database; a write that changes nothing takes it.
_SQLITE_WRITE_LOCK = text("UPDATE tasks SET status = status WHERE 1 = 0")
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=GLOBAL_CREATE_LOCK)
# One query for all three counts (it runs under the lock that serialises every create), built
# once; the open statuses are constants of the SQL, not a list bound per request.
_OPEN_COUNTS = select(
    func.count().filter(col(Task.key_id) == bindparam("key_id")),
    func.count().filter(col(Task.user_id) == bindparam("user_id")),
    func.count(),
).where(text("tasks.status IN (" + ", ".join(f"'{s}'" for s in sorted(OPEN_STATUSES)) + ")"))


async def lock_gateway(session: AsyncSession) -> None:
    """Serialise creates across all users until commit."""
    postgres = session.get_bind().dialect.name == "postgresql"
    connection = await session.connection()
    await connection.execute(_ADVISORY_LOCK if postgres else _SQLITE_WRITE_LOCK)


async def enforce_in_flight(
    session: AsyncSession, *, auth: AuthContext, settings: Settings
) -> None:
    """429 `ConcurrencyLimitExceeded.*` if one more open task would exceed a cap."""
    params = {"key_id": auth.key_id, "user_id": auth.user_id}
    connection = await session.connection()  # a Core statement: no ORM execution path
    key_open, user_open, gateway_open = (await connection.execute(_OPEN_COUNTS, params)).one()
    caps = (
        (
            "Key",
            "this key",
            key_open,
            _cap(auth.key_max_in_flight, settings.max_tasks_in_flight_per_key),
        ),
        (
            "User",
            "this user",
            user_open,
            _cap(auth.user_max_in_flight, settings.max_tasks_in_flight_per_user),
        ),
        ("Gateway", "the gateway", gateway_open, settings.max_tasks_in_flight_global),
    )
    for scope, who, open_now, cap in caps:
        if open_now >= cap:
            raise TooManyRequests(
                f"Too many tasks in flight for {who} (at most {cap}); retry when one finishes.",
                code=f"ConcurrencyLimitExceeded.{scope}",
                retry_after=settings.in_flight_retry_after_seconds,
            )


def _cap(override: int | None, default: int) -> int:
    return default if override is None else override
