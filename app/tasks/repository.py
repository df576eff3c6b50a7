"""Task SQL of the request hot paths: Core statements built once, one round trip each, outside
any transaction where one statement is the whole unit of work.

A retrieve or a list only reads, so it runs on an autocommit connection (no BEGIN, no ROLLBACK
round trips) and selects the columns an answer needs into plain records (no ORM identity map).
The list's page and its total come from one query (the total as a subquery run once). A create
is recorded by one statement on PostgreSQL (`record_create`) and its upstream answer stored by
another (`store_created`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import (
    Select,
    String,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from app.db_direct import DirectStatements
from app.limits.inflight import GLOBAL_CREATE_LOCK
from app.tasks.models import (
    OPEN_STATUSES,
    VISIBLE_STATUSES,
    ArchiveStatus,
    Task,
    TaskArchive,
    TaskEvent,
    TaskStatus,
    status_in,
)
from app.tasks.schemas import TaskListQuery
from app.usage.models import LedgerEntry

TASKS = Task.__table__  # type: ignore[attr-defined]
_VISIBLE = status_in(VISIBLE_STATUSES)
_RECORD_COLUMNS = (
    TASKS.c.id,
    TASKS.c.user_id,
    TASKS.c.token_id,
    TASKS.c.status,
    TASKS.c.model,
    TASKS.c.service_tier,
    TASKS.c.execution_expires_after,
    TASKS.c.draft_task_id,
    TASKS.c.snapshot,
    TASKS.c.created_at,
    TASKS.c.updated_at,
    TASKS.c.refreshed_at,
    TASKS.c.account_id,
    TASKS.c.upstream_id,
)
# A browser token sees only the tasks made with it; a key, every task of its user.
_TOKEN_SCOPE = or_(
    bindparam("token_id", type_=String) == None,  # noqa: E711 (SQL's IS NULL)
    TASKS.c.token_id == bindparam("token_id", type_=String),
)
_VISIBLE_TASK = select(*_RECORD_COLUMNS).where(
    TASKS.c.id == bindparam("task_id"),
    TASKS.c.user_id == bindparam("user_id"),
    _TOKEN_SCOPE,
    TASKS.c.deleted_at.is_(None),
    _VISIBLE,
)

# A task as a signed link reaches it: the signature stands for its owner.
_LINKED_TASK = select(*_RECORD_COLUMNS).where(
    TASKS.c.id == bindparam("task_id"), TASKS.c.deleted_at.is_(None), _VISIBLE
)


# A create the upstream accepted: queued, fresh as of its answer, due to the next poll cycle.
_STORE_CREATED = (
    update(TASKS)
    .where(TASKS.c.id == bindparam("task_id"), TASKS.c.status == TaskStatus.SUBMITTING)
    .values(
        status=TaskStatus.QUEUED,
        upstream_id=bindparam("created_upstream_id"),
        refreshed_at=bindparam("now"),
        next_check_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
)
_EVENTS = TaskEvent.__table__  # type: ignore[attr-defined]
_EVENT_COLUMNS = ("task_id", "at", "kind", "from_status", "to_status")


def _created_event(moved: Any) -> Any:
    """The timeline's entry for the move to `queued`, one row per id in `moved`."""
    return insert(_EVENTS).from_select(
        list(_EVENT_COLUMNS),
        select(
            moved.c.id,
            bindparam("now"),
            literal("status"),
            literal(str(TaskStatus.SUBMITTING)),
            literal(str(TaskStatus.QUEUED)),
        ),
    )


# PostgreSQL: the move and its timeline entry in one statement (a data-modifying CTE), whose
# commit does not wait for its WAL flush (`synchronous_commit` off for this transaction only):
# 0.2-0.4 ms off a create. A PostgreSQL crash may lose it: the task is then `submitting`, as when
# a gateway dies before storing the answer, and the poller adopts it from the upstream's list.
# The task and its reservation were committed durably before the upstream saw the create.
_STORE_CREATED_WITH_EVENT = _created_event(
    _STORE_CREATED.where(func.set_config("synchronous_commit", "off", True) == "off")
    .returning(TASKS.c.id)
    .cte("moved")
)


_RECORD_CREATE = text(
    "SELECT sgw_record_create(CAST(:task AS jsonb), CAST(:reserve AS jsonb), :lock_key, "
    ":open_statuses, :key_cap, :user_cap, :gateway_cap, CAST(:token_cap AS integer))"
)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """What an answer about a task needs of its row."""

    id: str
    user_id: str
    token_id: str | None
    status: str
    model: str
    service_tier: str
    execution_expires_after: int
    draft_task_id: str | None
    snapshot: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    refreshed_at: datetime | None
    account_id: str | None  # the upstream account it lives on (None: `default`)
    upstream_id: str | None  # None until the upstream took it (it may wait in the queue)


def _record(row: Sequence[Any]) -> TaskRecord:
    return TaskRecord(*row[: len(_RECORD_COLUMNS)])


async def visible_task(
    statements: DirectStatements, *, task_id: str, user_id: str, token_id: str | None
) -> TaskRecord | None:
    """The task as a client may see it (its user's, made with its token if it holds one; not
    deleted, not internal), or None."""
    params = {"task_id": task_id, "user_id": user_id, "token_id": token_id}
    row = await statements.first(_VISIBLE_TASK, params)
    return None if row is None else _record(row)


_OPEN_COUNTS = (
    select(TASKS.c.status, func.count()).where(status_in(OPEN_STATUSES)).group_by(TASKS.c.status)
)


async def open_counts(engine: AsyncEngine) -> dict[str, int]:
    """Open tasks by status (the status index bounds it by the open tasks, not the table)."""
    async with engine.connect() as connection:
        rows = (await connection.execute(_OPEN_COUNTS)).all()
    return {str(status): int(count) for status, count in rows}


async def linked_task(statements: DirectStatements, *, task_id: str) -> TaskRecord | None:
    """The task a signed link names (not deleted, not internal), whoever owns it; or None."""
    row = await statements.first(_LINKED_TASK, {"task_id": task_id})
    return None if row is None else _record(row)


@dataclass(frozen=True, slots=True)
class StoredOutput:
    """An output in the archive: its object key, size, digest and media type."""

    key: str
    size: int
    sha256: str
    media_type: str


_ARCHIVES = TaskArchive.__table__  # type: ignore[attr-defined]
_ARCHIVED = select(
    _ARCHIVES.c.video_key,
    _ARCHIVES.c.video_bytes,
    _ARCHIVES.c.video_sha256,
    _ARCHIVES.c.video_type,
    _ARCHIVES.c.frame_key,
    _ARCHIVES.c.frame_bytes,
    _ARCHIVES.c.frame_sha256,
    _ARCHIVES.c.frame_type,
).where(_ARCHIVES.c.task_id == bindparam("task_id"), _ARCHIVES.c.status == ArchiveStatus.ARCHIVED)


async def archived_output(engine: AsyncEngine, *, task_id: str, frame: bool) -> StoredOutput | None:
    """The task's video (or last frame) as archived, or None if it is not in the archive."""
    async with engine.connect() as connection:
        row = (await connection.execute(_ARCHIVED, {"task_id": task_id})).first()
    if row is None:
        return None
    key, size, sha256, media_type = row[4:] if frame else row[:4]
    return None if key is None else StoredOutput(key, size, sha256, media_type)


async def store_created(
    statements: DirectStatements, *, task_id: str, upstream_id: str, now: datetime
) -> bool:
    """Record that the upstream created a `submitting` task, with its timeline entry; False if
    it had moved on."""
    params = {"task_id": task_id, "created_upstream_id": upstream_id, "now": now}
    if statements.on_postgresql:
        return await statements.affected(_STORE_CREATED_WITH_EVENT, params) == 1
    async with statements.engine.begin() as connection:
        result = await connection.execute(_STORE_CREATED, params)
        if result.rowcount != 1:
            return False
        await connection.execute(
            insert(_EVENTS).values(
                task_id=task_id,
                at=now,
                kind="status",
                from_status=TaskStatus.SUBMITTING,
                to_status=TaskStatus.QUEUED,
            )
        )
    return True


async def record_create(
    statements: DirectStatements,
    *,
    task: Task,
    reserve: LedgerEntry,
    caps: dict[str, int],
    token_cap: int | None,
) -> str | None:
    """PostgreSQL: insert a task and its reservation unless one more open task would exceed a
    cap or a browser token's allowance (`token_cap` tasks), in one statement outside any
    transaction (`sgw_record_create`, migrations 0006, 0008 and 0020: the open tasks are read
    from counts a trigger keeps): the gateway-wide create lock is held only while the server
    runs it. Returns the scope whose cap is reached (`Token`, `Key`, `User`, `Gateway`), or
    None once recorded."""
    params = {
        "task": _row_json(task),
        "reserve": _row_json(reserve),
        "lock_key": GLOBAL_CREATE_LOCK,
        "open_statuses": sorted(OPEN_STATUSES),
        "key_cap": caps["Key"],
        "user_cap": caps["User"],
        "gateway_cap": caps["Gateway"],
        "token_cap": token_cap,
    }
    refused = await statements.scalar(_RECORD_CREATE, params)
    return None if refused is None else str(refused)


def _row_json(row: SQLModel) -> str:
    table = row.__table__  # type: ignore[attr-defined]
    state = row.__dict__  # a new row's values (`new_row`), read past the ORM's descriptors
    values = {column.name: state.get(column.name) for column in table.columns}
    return json.dumps(values, default=lambda value: value.isoformat())


async def task_page(
    statements: DirectStatements, *, user_id: str, token_id: str | None, query: TaskListQuery
) -> tuple[int, list[TaskRecord]]:
    """One page of the user's visible tasks (those of the token, if one is given), newest
    first, and how many there are in all."""
    shape = (query.status is not None, query.model is not None, bool(query.task_ids))
    params = {
        "user_id": user_id,
        "token_id": token_id,
        "service_tier": query.service_tier,
        "status": query.status,
        "model": query.model,
        "task_ids": query.task_ids,
        "offset": (query.page_num - 1) * query.page_size,
        "limit": query.page_size,
    }
    rows = await statements.rows(_PAGES[shape], params)
    if rows:
        return int(rows[0][-1]), [_record(row) for row in rows]
    # Past the last page (or nothing at all): the total still counts.
    return int(await statements.scalar(_COUNTS[shape], params)), []


def _filtered(statement: Select[Any], shape: tuple[bool, bool, bool]) -> Select[Any]:
    with_status, with_model, with_ids = shape
    statement = statement.select_from(TASKS).where(
        TASKS.c.user_id == bindparam("user_id"),
        _TOKEN_SCOPE,
        TASKS.c.deleted_at.is_(None),
        TASKS.c.service_tier == bindparam("service_tier"),
        TASKS.c.status == bindparam("status") if with_status else _VISIBLE,
    )
    if with_model:
        statement = statement.where(TASKS.c.model == bindparam("model"))
    if with_ids:
        statement = statement.where(TASKS.c.id.in_(bindparam("task_ids", expanding=True)))
    return statement


# Every shape of list query, built once: a request only binds its values.
_SHAPES = [(s, m, i) for s in (False, True) for m in (False, True) for i in (False, True)]
_PAGES = MappingProxyType(
    {
        shape: _filtered(
            select(*_RECORD_COLUMNS, _filtered(select(func.count()), shape).scalar_subquery()),
            shape,
        )
        .order_by(TASKS.c.created_at.desc(), TASKS.c.id.desc())
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
        for shape in _SHAPES
    }
)
_COUNTS = MappingProxyType({shape: _filtered(select(func.count()), shape) for shape in _SHAPES})


_OPEN_BY_ACCOUNT = (
    select(TASKS.c.account_id, TASKS.c.model, func.count())
    .where(status_in(OPEN_STATUSES))
    # A create waiting in the gateway's queue is no account's yet.
    .where(or_(TASKS.c.account_id.is_not(None), TASKS.c.pending_body.is_(None)))
    .group_by(TASKS.c.account_id, TASKS.c.model)
)


async def open_tasks_by_account(engine: AsyncEngine) -> dict[tuple[str, str], int]:
    """Open tasks per upstream account and model (the settings' account under `default`)."""
    async with engine.connect() as connection:
        rows = (await connection.execute(_OPEN_BY_ACCOUNT)).all()
    counts: dict[tuple[str, str], int] = {}
    for account_id, model, count in rows:
        key = (account_id or "default", model)
        counts[key] = counts.get(key, 0) + int(count)
    return counts


_MOVE_TO_ACCOUNT = (
    update(TASKS)
    .where(TASKS.c.id == bindparam("task_id"), TASKS.c.status == TaskStatus.SUBMITTING)
    .values(account_id=bindparam("to_account"))
)


async def move_to_account(engine: AsyncEngine, *, task_id: str, account_id: str) -> bool:
    """Point a task still `submitting` at another account; False if it moved on."""
    async with engine.connect() as connection:
        result = await connection.execute(
            _MOVE_TO_ACCOUNT, {"task_id": task_id, "to_account": account_id}
        )
    return bool(result.rowcount == 1)
