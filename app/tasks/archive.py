"""The archiver: copies each succeeded task's outputs into the gateway's store before the
upstream's links expire (24 h), and deletes them once the retention period has passed.

A task moving to `succeeded` queues its `task_archives` row in the same transaction. Every
replica's archiver claims due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL, and a lease pushing
`next_attempt_at` forward), so a row is worked by one replica at a time; object keys are the
task's id, so a copy made twice (a lease that ran out mid-copy) writes the same object, and only
the first to finish records it. Bytes stream from the download into the store (multipart), never
held whole in memory. A failed copy is retried with exponential back-off; one whose upstream
link has expired, or that failed `GATEWAY_ARCHIVE_MAX_ATTEMPTS` times, is given up (`failed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import utcnow
from app.errors import Gone
from app.metrics import Metrics
from app.storage import ObjectStore
from app.tasks.models import ArchiveStatus, Task, TaskArchive
from app.upstream.content import open_download

logger = logging.getLogger(__name__)

# The outputs a task object may link to: its field under `content`, and the object's name.
OUTPUTS = {"video_url": "video", "last_frame_url": "last_frame"}
MAX_BACKOFF_SECONDS = 600


@dataclass
class ArchiverConfig:
    """How the archiver works."""

    retention_days: int = 0
    max_attempts: int = 8
    interval_seconds: float = 1.0
    lease_seconds: float = 300.0
    batch_size: int = 8


@dataclass
class Archiver:
    """Claims due copies and makes them; deletes copies past their retention."""

    sessionmaker: async_sessionmaker[AsyncSession]
    store: ObjectStore
    downloads: httpx.AsyncClient
    config: ArchiverConfig
    metrics: Metrics | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; a failed round is logged and the next one runs."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                logger.exception("archiver round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.config.interval_seconds)

    async def run_once(self) -> int:
        """One round: the due copies, side by side, then the expired ones; returns how many
        copies were attempted."""
        task_ids = await self._claim()
        await asyncio.gather(*(self._copy(task_id) for task_id in task_ids))
        await self._delete_expired()
        return len(task_ids)

    async def _claim(self) -> list[str]:
        now = utcnow()
        async with self.sessionmaker() as session:
            due = await session.exec(
                select(TaskArchive.task_id)
                .where(
                    col(TaskArchive.status) == ArchiveStatus.PENDING,
                    col(TaskArchive.next_attempt_at) <= now,
                )
                .order_by(col(TaskArchive.next_attempt_at))
                .limit(self.config.batch_size)
                .with_for_update(skip_locked=True)
            )
            task_ids = list(due.all())
            if task_ids:
                lease = now + timedelta(seconds=self.config.lease_seconds)
                await session.exec(
                    update(TaskArchive)
                    .where(col(TaskArchive.task_id).in_(task_ids))
                    .values(next_attempt_at=lease)
                )
            await session.commit()
        return task_ids

    async def _copy(self, task_id: str) -> None:
        async with self.sessionmaker() as session:
            task = await session.get(Task, task_id)
        snapshot = (task.snapshot if task is not None else None) or {}
        links = snapshot.get("content") or {}
        try:
            stored = {
                name: await self._copy_one(url, key=f"{task_id}/{name}")
                for field, name in OUTPUTS.items()
                if isinstance(url := links.get(field), str) and url
            }
            if "video" not in stored:
                raise Gone("The task's object names no video.")
        except Gone as exc:
            self._count("given_up")
            await self._record(task_id, status=ArchiveStatus.FAILED, error=exc.message)
            logger.warning("archive of task %s given up: %s", task_id, exc.message)
        except Exception as exc:
            self._count("failed")
            await self._record_failure(task_id, error=f"{type(exc).__name__}: {exc}"[:255])
        else:
            self._count("archived")
            await self._record(task_id, status=ArchiveStatus.ARCHIVED, stored=stored)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.archive_copies.labels(outcome).inc()

    async def _copy_one(self, url: str, *, key: str) -> dict[str, Any]:
        download = await open_download(self.downloads, url, range_header=None, if_none_match=None)
        media_type = download.headers.get("content-type", "application/octet-stream")
        written = await self.store.put(key, download.body)
        return {"key": key, "bytes": written.size, "sha256": written.sha256, "type": media_type}

    async def _record(
        self,
        task_id: str,
        *,
        status: ArchiveStatus,
        error: str | None = None,
        stored: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        now = utcnow()
        values: dict[str, Any] = {"status": status, "last_error": error}
        for name, prefix in (("video", "video"), ("last_frame", "frame")):
            item = (stored or {}).get(name)
            if item is not None:
                values |= {f"{prefix}_{field}": item[field] for field in ("key", "bytes", "type")}
                values[f"{prefix}_sha256"] = item["sha256"]
        if status == ArchiveStatus.ARCHIVED:
            values["archived_at"] = now
            if self.config.retention_days:
                values["delete_after"] = now + timedelta(days=self.config.retention_days)
        async with self.sessionmaker() as session:
            await session.exec(
                update(TaskArchive)
                .where(
                    col(TaskArchive.task_id) == task_id,
                    col(TaskArchive.status) == ArchiveStatus.PENDING,
                )
                .values(**values)
            )
            await session.commit()

    async def _record_failure(self, task_id: str, *, error: str) -> None:
        async with self.sessionmaker() as session:
            row = await session.get(TaskArchive, task_id)
            if row is None or row.status != ArchiveStatus.PENDING:
                return
            row.attempts += 1
            row.last_error = error
            if row.attempts >= self.config.max_attempts:
                row.status = ArchiveStatus.FAILED
                logger.warning(
                    "archive of task %s given up after %d attempts", task_id, row.attempts
                )
            else:
                delay = min(MAX_BACKOFF_SECONDS, 2**row.attempts)
                row.next_attempt_at = utcnow() + timedelta(seconds=delay)
                logger.info("archive of task %s failed (%s); retry in %d s", task_id, error, delay)
            session.add(row)
            await session.commit()

    async def _delete_expired(self) -> None:
        async with self.sessionmaker() as session:
            expired = (
                await session.exec(
                    select(TaskArchive)
                    .where(
                        col(TaskArchive.status) == ArchiveStatus.ARCHIVED,
                        col(TaskArchive.delete_after) <= utcnow(),
                    )
                    .limit(self.config.batch_size * 10)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in expired:
                for key in (row.video_key, row.frame_key):
                    if key is not None:
                        await self.store.delete(key)
                row.status = ArchiveStatus.DELETED
                session.add(row)
            await session.commit()
