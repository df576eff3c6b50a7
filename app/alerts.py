"""Alerts for operators: a budget crossing one of its thresholds, the upstream refusing the
master key. Each is an outbox row, written with what caused it and unique per period (a second
one is not written); the poller posts them to `GATEWAY_ALERT_WEBHOOK_URL` as Slack-compatible
JSON (`{"text": …}`), through the callbacks' client (public addresses only, unless allowed),
retrying with back-off."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import httpx
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import UTCDateTime, utcnow

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
MAX_BACKOFF_SECONDS = 600


class Alert(SQLModel, table=True):
    """One notification for the alert webhook; `dedupe` makes it once per period."""

    __tablename__ = "alerts"

    id: int | None = Field(default=None, primary_key=True)
    dedupe: str = Field(max_length=200, unique=True)
    kind: str = Field(max_length=32)
    message: str = Field(max_length=1000)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


async def raise_alert(session: AsyncSession, *, dedupe: str, kind: str, message: str) -> None:
    """Queue an alert in the session's transaction, unless one with `dedupe` exists."""
    postgres = session.get_bind().dialect.name == "postgresql"
    insert = pg_insert if postgres else sqlite_insert
    values = {
        "dedupe": dedupe[:200],
        "kind": kind,
        "message": message[:1000],
        "attempts": 0,
        "next_attempt_at": utcnow(),
        "created_at": utcnow(),
    }
    statement = insert(Alert).values(**values).on_conflict_do_nothing(index_elements=["dedupe"])
    connection = await session.connection()
    await connection.execute(statement)


async def deliver_alerts(
    *, sessionmaker: async_sessionmaker[AsyncSession], http: httpx.AsyncClient, url: str
) -> int:
    """Post the alerts that are due; returns how many were attempted."""
    async with sessionmaker() as session:
        due = list(
            (
                await session.exec(
                    select(Alert)
                    .where(col(Alert.delivered_at).is_(None), col(Alert.attempts) < MAX_ATTEMPTS)
                    .where(col(Alert.next_attempt_at) <= utcnow())
                    .order_by(col(Alert.id))
                    .limit(20)
                )
            ).all()
        )
    for alert in due:
        error = await _post(http, url, alert)
        attempts = alert.attempts + 1
        values = (
            {"delivered_at": utcnow(), "attempts": attempts}
            if error is None
            else {
                "attempts": attempts,
                "last_error": error[:255],
                "next_attempt_at": utcnow()
                + timedelta(seconds=min(MAX_BACKOFF_SECONDS, 2**attempts)),
            }
        )
        async with sessionmaker() as session:
            await session.exec(update(Alert).where(col(Alert.id) == alert.id).values(**values))
            await session.commit()
    return len(due)


async def _post(http: httpx.AsyncClient, url: str, alert: Alert) -> str | None:
    try:
        response = await http.post(url, json={"text": alert.message})
    except Exception as exc:  # refused host, network: this alert's failure, retried later
        logger.warning("alert %s not delivered: %s", alert.dedupe, type(exc).__name__)
        return f"{type(exc).__name__}: {exc}"
    return None if response.is_success else f"HTTP {response.status_code}"
