"""The audit log: every change an admin makes (admin API or CLI) to users, keys, prices,
budgets and upstream accounts, and a user makes to its own keys, with who, from where, when,
and the values before and after.

A session an admin acts through carries the actor (`audited`); when it flushes, each new,
changed or deleted row of an audited table adds an entry to the same transaction (flushed by the
commit), so an action that fails (and rolls back) leaves none, and no path that changes these
rows can skip it. Entries are made after the flush, so a new row is recorded by its own id. A
key's hashes and an account's encrypted master key are never recorded (plaintexts are never on a
row).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, event, inspect
from sqlmodel import Field, Session, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import GatewaySession, UTCDateTime, utcnow
from app.keys.models import ApiKey, User
from app.upstream.accounts import UpstreamAccount
from app.usage.models import Budget, Price

AUDITED: dict[type[SQLModel], str] = {
    User: "user",
    ApiKey: "key",
    Price: "price",
    Budget: "budget",
    UpstreamAccount: "account",
}
# Secrets, even hashed or encrypted: a key's hashes, an account's master key.
NEVER_RECORDED = frozenset({"key_hash", "previous_hash", "key_ciphertext"})
_ACTOR, _ADDRESS = "audit_actor", "audit_address"


class AuditEntry(SQLModel, table=True):
    """One change to one row, by one actor."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    actor: str = Field(max_length=64)
    address: str = Field(max_length=64)
    action: str = Field(max_length=16)
    entity: str = Field(max_length=16)
    entity_id: str = Field(max_length=64)
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


def audited(session: AsyncSession, *, actor: str, address: str) -> AsyncSession:
    """Mark `session` as acting for `actor` (`admin`, `cli:<user>`) from `address`."""
    session.sync_session.info.update({_ACTOR: actor[:64], _ADDRESS: address[:64]})
    return session


async def audit_log(
    session: AsyncSession, *, entity: str | None, entity_id: str | None, limit: int
) -> list[AuditEntry]:
    """The newest entries first, optionally of one entity kind or one row."""
    query = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit)
    if entity is not None:
        query = query.where(AuditEntry.entity == entity)
    if entity_id is not None:
        query = query.where(AuditEntry.entity_id == entity_id)
    return list((await session.exec(query)).all())


# After the flush, new rows have their ids; `new`, `dirty`, `deleted` and each attribute's
# history still show what the flush wrote.
@event.listens_for(GatewaySession, "after_flush")
def _record_changes(session: Session, _context: Any) -> None:
    actor = session.info.get(_ACTOR)
    if actor is None:
        return
    changes = [
        *(("create", row) for row in session.new),
        *(("update", row) for row in session.dirty if session.is_modified(row)),
        *(("delete", row) for row in session.deleted),
    ]
    for action, row in changes:
        entity = AUDITED.get(type(row))
        if entity is None:
            continue
        before, after = _values(row, action)
        session.add(
            AuditEntry(
                actor=actor,
                address=session.info.get(_ADDRESS, ""),
                action=action,
                entity=entity,
                entity_id=_identity(row),
                before=before,
                after=after,
            )
        )


def _identity(row: Any) -> str:
    """The row's id; a budget by its scope (`user:<id>`, `key:<id>`)."""
    return row.scope if isinstance(row, Budget) else str(row.id)


def _values(row: Any, action: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """What the row held before and holds after (an update: only the columns it changes)."""
    state = inspect(row)
    current = {
        attr.key: _plain(attr.value)
        for attr in state.attrs
        if attr.key not in NEVER_RECORDED and attr.key in row.__table__.columns
    }
    if action == "create":
        return None, current
    if action == "delete":
        return current, None
    before, after = {}, {}
    for attr in state.attrs:
        history = attr.history
        if attr.key in current and history.has_changes():
            before[attr.key] = _plain(history.deleted[0]) if history.deleted else None
            after[attr.key] = current[attr.key]
    return before, after


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
