"""The tasks table: one row per create the gateway accepted, recorded before the upstream call."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    Text,
    TextClause,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime, utcnow


class TaskStatus(StrEnum):
    """Gateway task states; the six upstream ones plus submitting, rejected and unknown."""

    SUBMITTING = "submitting"  # recorded, upstream create not yet answered
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"  # the upstream refused the create; the client got its error
    UNKNOWN = "unknown"  # the create may or may not exist upstream; to be reconciled

    @property
    def is_terminal(self) -> bool:
        """True once the task can change no more."""
        return self in TERMINAL_STATUSES

    @property
    def is_visible(self) -> bool:
        """True for states a client can see (the upstream knows the task)."""
        return self in VISIBLE_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        TaskStatus.SUCCEEDED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
        TaskStatus.EXPIRED,
        TaskStatus.REJECTED,
    }
)
OPEN_STATUSES = frozenset(
    {TaskStatus.SUBMITTING, TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.UNKNOWN}
)
VISIBLE_STATUSES = frozenset(
    {
        TaskStatus.QUEUED,
        TaskStatus.RUNNING,
        TaskStatus.SUCCEEDED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
        TaskStatus.EXPIRED,
    }
)


def status_in(statuses: frozenset[TaskStatus]) -> TextClause:
    """`tasks.status IN (...)` with the statuses as constants of the SQL: a statement built once
    binds no list to expand on every execution (the statuses are ours, never a client's)."""
    return text("tasks.status IN (" + ", ".join(f"'{s}'" for s in sorted(statuses)) + ")")


class Task(SQLModel, table=True):
    """A video-generation task as the gateway knows it."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_user_created", "user_id", "created_at"),
        Index("ix_tasks_created", "created_at"),
        Index("ix_tasks_status_next_check", "status", "next_check_at"),
        Index("ix_tasks_key_status", "key_id", "status"),
        Index("ix_tasks_reread_due", "status", "reread_at", "updated_at"),
        Index("ix_tasks_account_status", "account_id", "status"),
        UniqueConstraint("key_id", "idempotency_key", name="uq_tasks_key_idempotency"),
    )

    id: str = Field(primary_key=True, max_length=64)
    upstream_id: str | None = Field(default=None, unique=True, max_length=128)
    user_id: str = Field(foreign_key="users.id", max_length=32)
    key_id: str = Field(foreign_key="api_keys.id", max_length=32)
    # The upstream account it was created on (None: the settings' account): every later call
    # for it goes there.
    account_id: str | None = Field(default=None, max_length=32)
    # The browser token it was made with, if any: that token sees only its own tasks.
    token_id: str | None = Field(default=None, max_length=32, index=True)
    model: str = Field(max_length=128)
    service_tier: str = Field(default="default", max_length=16)
    status: str = Field(default=TaskStatus.SUBMITTING, max_length=16)

    # The parameters that drive cost, as they will take effect (body over inline prompt commands).
    resolution: str | None = Field(default=None, max_length=8)
    ratio: str | None = Field(default=None, max_length=16)
    duration: int | None = None
    frames: int | None = None
    # Reference video seconds reserved (declared, or the model's most); None without one.
    input_video_seconds: int | None = None
    generate_audio: bool = Field(default=False)
    draft: bool = Field(default=False)
    execution_expires_after: int = 172800

    # The create body while the task waits in the gateway's queue (`app.tasks.queue`), as JSON;
    # None once the upstream took it, and for a create sent at once.
    pending_body: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # When its create left the gateway's queue (None: sent at once, at `created_at`).
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    callback_url: str | None = Field(default=None, max_length=2048)
    draft_task_id: str | None = Field(default=None, max_length=64)
    idempotency_key: str | None = Field(default=None, max_length=255)
    # SHA-256 of the create body as sent (nulls dropped, keys sorted): an Idempotency-Key reused
    # with another body is refused.
    request_fingerprint: str | None = Field(default=None, max_length=64)
    # The seed sent upstream (the client's, or one the gateway chose): the evidence that
    # identifies this request's upstream task when a create's outcome is unknown.
    seed: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))

    # Latest upstream task object (the retrieve body), with the upstream id in it.
    snapshot: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    error_code: str | None = Field(default=None, max_length=255)
    completion_tokens: int | None = None
    total_tokens: int | None = None
    price_id: int | None = Field(default=None)  # the cost price row its reservation used
    # The upstream's usage when re-read once after settlement (the reconciliation report).
    reread_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    reread_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    # Consecutive failed refreshes: the poller backs off exponentially on them.
    check_failures: int = Field(default=0)
    # Whether its outputs are copied into the gateway's archive once it succeeds (the archive
    # was on when it was created).
    archive: bool = Field(default=False)

    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    refreshed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    next_check_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def create_sent_at(self) -> datetime:
        """When its create went upstream: reconciliation looks for it around this moment."""
        return self.sent_at or self.created_at

    @property
    def create_in_doubt(self) -> bool:
        """Whether its create may or may not exist upstream: to be reconciled."""
        return self.status == TaskStatus.UNKNOWN or self.sent_in_doubt

    @property
    def sent_in_doubt(self) -> bool:
        """A create sent from the gateway's queue with no answer on record (the process died,
        or the answer was ambiguous): reconciled on its account like an `unknown` one."""
        return (
            self.status == TaskStatus.QUEUED
            and self.upstream_id is None
            and self.sent_at is not None
            and self.pending_body is not None
        )


class CallbackDelivery(SQLModel, table=True):
    """An outbox row: one status change of a task to POST to its `callback_url`."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (
        UniqueConstraint("task_id", "status", name="uq_callback_task_status"),
        Index("ix_callback_due", "delivered_at", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(foreign_key="tasks.id", max_length=64)
    status: str = Field(max_length=16)
    url: str = Field(max_length=2048)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    attempts: int = Field(default=0)
    max_attempts: int = Field(default=1)
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ArchiveStatus(StrEnum):
    """Where a succeeded task's copy stands."""

    PENDING = "pending"  # to copy (again, after a failed attempt, at `next_attempt_at`)
    ARCHIVED = "archived"  # in the store; served from there
    FAILED = "failed"  # given up (the upstream's link expired, or too many failures)
    DELETED = "deleted"  # removed after the retention period


class TaskArchive(SQLModel, table=True):
    """The copy of a succeeded task's outputs in the gateway's own storage."""

    __tablename__ = "task_archives"
    __table_args__ = (Index("ix_task_archives_due", "status", "next_attempt_at"),)

    task_id: str = Field(foreign_key="tasks.id", primary_key=True, max_length=64)
    status: str = Field(default=ArchiveStatus.PENDING, max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=255)
    # The outputs in the store: object key, size, SHA-256 (the ETag), media type.
    video_key: str | None = Field(default=None, max_length=255)
    video_bytes: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    video_sha256: str | None = Field(default=None, max_length=64)
    video_type: str | None = Field(default=None, max_length=64)
    frame_key: str | None = Field(default=None, max_length=255)
    frame_bytes: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    frame_sha256: str | None = Field(default=None, max_length=64)
    frame_type: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    archived_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    delete_after: datetime | None = Field(default=None, sa_type=UTCDateTime)


class TaskEvent(SQLModel, table=True):
    """A moment in a task's life the console's timeline shows: a status change (written with
    the change), or a refresh that failed."""

    __tablename__ = "task_events"
    __table_args__ = (
        Index("ix_task_events_task", "task_id", "id"),
        Index("ix_task_events_at", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(foreign_key="tasks.id", max_length=64)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    kind: str = Field(max_length=16)  # `status` or `refresh_failed`
    from_status: str | None = Field(default=None, max_length=16)
    to_status: str | None = Field(default=None, max_length=16)
    detail: str | None = Field(default=None, max_length=255)


class OpenTaskCount(SQLModel, table=True):
    """PostgreSQL: how many open tasks a scope (`gateway`, `user:<id>`, `key:<id>`) has, as of
    the last create; the in-flight caps read it instead of counting the tasks (migration 0020
    says why). Only a create, holding the create lock, writes these rows; SQLite counts rows."""

    __tablename__ = "open_task_counts"

    scope: str = Field(primary_key=True, max_length=48)
    open: int


class OpenTaskChange(SQLModel, table=True):
    """PostgreSQL: a task's trigger notes +1 or -1 here for each scope when the task opens or
    ends, in the transaction that moves it; the next create folds the notes into the counts.
    Insert-only outside the create lock, so a transaction that moves many tasks waits on no one
    (a counter row it updated would be locked until its commit, and ordered against others)."""

    __tablename__ = "open_task_changes"

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    scope: str = Field(max_length=48)
    delta: int
