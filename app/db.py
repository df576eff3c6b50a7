"""Async engine and sessions; `SessionDep` hands a request its session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic_core import PydanticUndefined
from sqlalchemy import BigInteger, DateTime, Executable, Result, event, insert, text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, Session, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

logger = logging.getLogger(__name__)
RowT = TypeVar("RowT", bound=SQLModel)


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def is_sqlite(url: str) -> bool:
    """True for an SQLite database URL."""
    return url.startswith("sqlite")


def create_engine(
    url: str,
    *,
    pool_size: int = 20,
    timeout_seconds: float = 10.0,
    sqlite_foreign_keys: bool = True,
) -> AsyncEngine:
    """An async engine: WAL and a busy timeout on SQLite, a sized pool on PostgreSQL.

    Every wait on the database is bounded by `timeout_seconds` (connecting, waiting for a pooled
    connection, each statement), so a frozen database turns into a prompt 503, not a hang.
    Migrations turn SQLite's foreign keys off: altering a referenced table copies it, and the
    copy's swap would trip them (Alembic's batch mode advice).
    """
    if is_sqlite(url):
        engine = create_async_engine(
            url,
            connect_args={"timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=timeout_seconds,
        )
        pragmas = _sqlite_pragmas if sqlite_foreign_keys else _sqlite_pragmas_without_fks
        event.listen(engine.sync_engine, "connect", pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        # No overflow: connections opened past the pool would be closed on return and opened
        # again under load (a connect costs far more than a query); requests wait their turn.
        max_overflow=0,
        # No pre-ping (a round trip per checkout): a connection the server dropped fails its
        # request once (a 503), and the pool then discards every connection older than it.
        pool_timeout=timeout_seconds,
        connect_args={"timeout": timeout_seconds, "command_timeout": timeout_seconds},
    )


def _sqlite_pragmas(
    dbapi_connection: Any, _record: ConnectionPoolEntry, *, foreign_keys: bool = True
) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_pragmas_without_fks(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    _sqlite_pragmas(dbapi_connection, record, foreign_keys=False)


class GatewaySession(Session):
    """The sessions' sync core: runs the jobs `after_commit` queued once (and only if) the
    transaction commits."""


_AFTER_COMMIT = "after_commit_jobs"


@event.listens_for(GatewaySession, "after_commit")
def _run_after_commit(session: Session) -> None:
    for job in session.info.pop(_AFTER_COMMIT, []):
        job()


@event.listens_for(GatewaySession, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


def after_commit(session: AsyncSession, job: Callable[[], None]) -> None:
    """Run `job` when this session's transaction commits; never if it rolls back."""
    session.sync_session.info.setdefault(_AFTER_COMMIT, []).append(job)


def create_sessionmaker(
    engine: AsyncEngine, *, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit; `info` is every session's
    `info` (the app's metrics, for what is counted once committed)."""
    return async_sessionmaker(
        engine,
        class_=AsyncSession,
        sync_session_class=GatewaySession,
        expire_on_commit=False,
        info=info,
    )


@dataclass(frozen=True)
class _RowDefaults:
    plain: dict[str, Any]
    mutable: dict[str, Any]  # copied for each row, as pydantic does
    factories: dict[str, Callable[[], Any]]


@cache  # of a class's field declarations: a constant table, computed once per model
def _row_defaults(table: type[SQLModel]) -> _RowDefaults:
    plain: dict[str, Any] = {}
    mutable: dict[str, Any] = {}
    factories: dict[str, Callable[[], Any]] = {}
    for name, declared in table.model_fields.items():
        if declared.default_factory is not None:
            factories[name] = declared.default_factory  # type: ignore[assignment]
        elif declared.default is not PydanticUndefined:
            target = mutable if isinstance(declared.default, list | dict | set) else plain
            target[name] = declared.default
    return _RowDefaults(plain, mutable, factories)


def new_row(table: type[RowT], /, **values: Any) -> RowT:
    """A new row object of a table model, as `table(**values)` makes it (table models never
    validate) but set as SQLAlchemy loads a row rather than attribute by attribute through
    pydantic's default machinery: a Task took 0.11 ms that way, 0.006 ms this way."""
    defaults = _row_defaults(table)
    row: RowT = table._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    state = row.__dict__
    state.update(defaults.plain)
    state.update({name: deepcopy(value) for name, value in defaults.mutable.items()})
    for name, factory in defaults.factories.items():
        if name not in values:
            state[name] = factory()
    state.update(values)
    object.__setattr__(row, "__pydantic_fields_set__", set(values))
    object.__setattr__(row, "__pydantic_extra__", None)
    object.__setattr__(row, "__pydantic_private__", None)
    return row


async def insert_rows(session: AsyncSession, *rows: SQLModel) -> None:
    """Insert new rows with plain INSERTs, in order (a unit-of-work flush costs several times
    the statement's own CPU). The session does not track them afterwards."""
    connection = await session.connection()  # Core statements skip the ORM's execution path
    for row in rows:
        table = row.__table__  # type: ignore[attr-defined]
        values = {
            column.name: getattr(row, column.name)
            for column in table.columns
            if not (column.primary_key and getattr(row, column.name) is None)  # autoincrement
        }
        await connection.execute(insert(table), values)


async def release_connection(session: AsyncSession) -> None:
    """End the session's (read) transaction, returning its connection to the pool.

    Call before waiting on the network, so slow upstream calls cannot exhaust the pool.
    """
    await session.commit()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, from the sessionmaker the lifespan created.

    It is closed after the answer is sent: a database that went away meanwhile fails only the
    clean-up (the connection is discarded), never the answer already given.
    """
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.resources.sessionmaker
    session = sessionmaker()
    try:
        yield session
    finally:
        try:
            await session.close()
        except Exception as exc:  # the connection is gone; the pool replaces it
            logger.info("closing a request's database session failed: %s", type(exc).__name__)


SessionDep = Annotated[AsyncSession, Depends(get_session)]


class TurnSlot(SQLModel, table=True):
    """When a turn's holder may next make a paced call, kept so a new holder honours it."""

    __tablename__ = "turn_slots"

    lock_key: int = Field(sa_type=BigInteger, primary_key=True)
    free_at: datetime = Field(sa_type=UTCDateTime)


@dataclass
class Turn:
    """A turn held (or not) by this process; on PostgreSQL, the connection that holds it.

    A holder that dies cannot wait out the gap after its last paced call before the next holder
    starts, so it books each call's gap in `turn_slots` and a new holder starts after it.
    """

    held: bool
    lock_key: int
    connection: AsyncConnection | None = None
    _statements: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def seconds_until_free(self) -> float:
        """How long until the last holder's booked gap ends (0 when none is booked)."""
        wait = text(
            "SELECT GREATEST(EXTRACT(EPOCH FROM free_at - clock_timestamp()), 0) "
            "FROM turn_slots WHERE lock_key = :key"
        ).bindparams(key=self.lock_key)
        answer = await self._run(wait)
        return float(answer.scalar() or 0.0) if answer is not None else 0.0

    async def book(self, gap_seconds: float) -> None:
        """Note that the next paced call may go out `gap_seconds` from now, at the earliest."""
        book = text(
            "INSERT INTO turn_slots (lock_key, free_at) "
            "VALUES (:key, clock_timestamp() + make_interval(secs => :gap)) "
            "ON CONFLICT (lock_key) DO UPDATE SET free_at = EXCLUDED.free_at"
        ).bindparams(key=self.lock_key, gap=gap_seconds)
        await self._run(book)

    async def give_back(self) -> None:
        """Release the lock, once the statement in progress (if any) is done."""
        await self._run(text("SELECT pg_advisory_unlock(:key)").bindparams(key=self.lock_key))

    async def _run(self, statement: Executable) -> Result[Any] | None:
        """One statement at a time on the turn's connection, shielded: a holder cancelled midway
        still completes it, or the connection could not give the lock back."""
        if self.connection is None:
            return None
        connection = self.connection

        async def run() -> Result[Any]:
            async with self._statements:
                return await connection.execute(statement)

        return await asyncio.shield(run())


@contextlib.asynccontextmanager
async def exclusive_turn(engine: AsyncEngine, lock_key: int) -> AsyncIterator[Turn]:
    """Whether this process holds PostgreSQL advisory lock `lock_key`, held for the block.

    Only one holder at a time across every process on the database; a process that dies loses
    the lock with its connection. SQLite serves one process, so there it is always granted.
    """
    if engine.dialect.name != "postgresql":
        yield Turn(held=True, lock_key=lock_key)
        return
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        lock = text("SELECT pg_try_advisory_lock(:key)").bindparams(key=lock_key)
        held = bool(await autocommit.scalar(lock))
        turn = Turn(held=held, lock_key=lock_key, connection=autocommit if held else None)
        try:
            yield turn
        finally:
            await turn.give_back()
