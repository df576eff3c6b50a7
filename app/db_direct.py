"""The request hot paths' statements, run straight on asyncpg on PostgreSQL.

SQLAlchemy's execution layer (a Connection per checkout, the greenlet hop, result processing)
was about a quarter of a list's CPU under load (1.30 → 0.95 ms per list measured with wrk). Each
Core statement here is compiled once by SQLAlchemy's own asyncpg dialect (`$n` placeholders,
the order of its parameters, the values it binds itself) and then run on a pool of asyncpg
connections with the JSON codecs that dialect installs. On SQLite, and for a statement whose
SQL depends on its values (an expanding IN), the same statement runs through the autocommit
engine instead: callers get rows either way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler

# What asyncpg raises when the database is down or a connection died (SQLAlchemy's own
# wrappers of these are listed beside them in `app.main`).
DRIVER_UNAVAILABLE: tuple[type[Exception], ...] = (
    asyncpg.exceptions.PostgresConnectionError,  # a connection that died among them
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement as asyncpg takes it: its SQL, its parameters in order and those it binds
    itself (literal values in the statement)."""

    sql: str
    names: tuple[str, ...]
    own_values: Mapping[str, Any]

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] if name in params else self.own_values[name] for name in self.names]


class DirectStatements:
    """Runs Core statements one round trip each, outside any transaction."""

    def __init__(
        self, engine: AsyncEngine, pool: asyncpg.Pool | None, *, timeout_seconds: float
    ) -> None:
        self.engine = engine  # autocommit: the fallback path, and the repositories' other SQL
        self._pool = pool
        self._timeout = timeout_seconds
        self._compiled: dict[int, _Compiled | None] = {}

    @property
    def on_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    async def rows(self, statement: Executable, params: Mapping[str, Any]) -> list[Any]:
        """Every row the statement returns (each indexable like a tuple)."""
        compiled = self._compile(statement)
        if compiled is None:
            async with self.engine.connect() as connection:
                return list((await connection.execute(statement, params)).all())
        async with self._acquire() as connection:
            return list(await connection.fetch(compiled.sql, *compiled.arguments(params)))

    async def first(self, statement: Executable, params: Mapping[str, Any]) -> Any | None:
        """The first row, or None."""
        found = await self.rows(statement, params)
        return found[0] if found else None

    async def scalar(self, statement: Executable, params: Mapping[str, Any]) -> Any:
        """The first column of the one row the statement returns."""
        row = await self.first(statement, params)
        if row is None:
            raise LookupError("the statement returned no row")
        return row[0]

    async def affected(self, statement: Executable, params: Mapping[str, Any]) -> int:
        """How many rows a write statement changed (inserted, for an INSERT … SELECT)."""
        compiled = self._compile(statement)
        if compiled is None:
            async with self.engine.connect() as connection:
                return int((await connection.execute(statement, params)).rowcount)
        async with self._acquire() as connection:
            status = await connection.execute(compiled.sql, *compiled.arguments(params))
        return int(status.rsplit(" ", 1)[-1])  # "UPDATE 1", "INSERT 0 1"

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[asyncpg.Connection]:
        assert self._pool is not None
        # Bounded as SQLAlchemy's pool_timeout (a frozen database is a prompt 503); not through
        # acquire's own timeout, which runs every checkout as a task of its own.
        async with asyncio.timeout(self._timeout):
            connection = await self._pool.acquire()
        try:
            yield connection
        except asyncpg.exceptions.IntegrityConstraintViolationError as error:
            # As SQLAlchemy raises it: callers catch one kind (an Idempotency-Key's race).
            raise IntegrityError(None, None, error) from error
        finally:
            await self._pool.release(connection)

    def _compile(self, statement: Executable) -> _Compiled | None:
        key = id(statement)  # the statements are module constants, built once
        if key not in self._compiled:
            self._compiled[key] = self._compiled_for_driver(statement)
        return self._compiled[key]

    def _compiled_for_driver(self, statement: Executable) -> _Compiled | None:
        if self._pool is None:
            return None
        compiled = cast(
            SQLCompiler, cast(ClauseElement, statement).compile(dialect=self.engine.dialect)
        )
        if any(bind.expanding for bind in compiled.binds.values()):
            return None  # its SQL depends on the values: SQLAlchemy renders it per call
        names = tuple(compiled.positiontup or ())
        own = {
            name: compiled.binds[name].effective_value
            for name in names
            if not compiled.binds[name].required  # a value of the statement's own, even None
        }
        return _Compiled(str(compiled), names, own)


async def _json_codecs(connection: asyncpg.Connection) -> None:
    """JSON in and out as SQLAlchemy's asyncpg dialect has it: text in, Python values out."""
    await connection.set_type_codec(
        "json", encoder=str, decoder=json.loads, schema="pg_catalog", format="text"
    )
    await connection.set_type_codec(
        "jsonb", encoder=str, decoder=json.loads, schema="pg_catalog", format="text"
    )


async def _nothing_to_reset(_connection: asyncpg.Connection) -> None:
    """A statement here leaves no session state behind (no transaction, no LISTEN, no SET; its
    advisory locks are the transaction's own): asyncpg's default reset would cost a round trip
    on every release."""


@asynccontextmanager
async def direct_statements(
    engine: AsyncEngine, *, pool_size: int, timeout_seconds: float
) -> AsyncIterator[DirectStatements]:
    """The runner for `engine` (an autocommit engine); on PostgreSQL with a pool of up to
    `pool_size` asyncpg connections, opened as requests need them and closed on exit."""
    if engine.dialect.name != "postgresql":
        yield DirectStatements(engine, None, timeout_seconds=timeout_seconds)
        return
    url = engine.url.set(drivername="postgresql")
    pool = asyncpg.create_pool(
        url.render_as_string(hide_password=False),
        min_size=0,  # a database that is not up yet fails requests, not the start
        max_size=pool_size,
        timeout=timeout_seconds,
        command_timeout=timeout_seconds,
        init=_json_codecs,
        reset=_nothing_to_reset,
    )
    await pool
    try:
        yield DirectStatements(engine, pool, timeout_seconds=timeout_seconds)
    finally:
        await pool.close()
