"""A task's outputs for its owner: the video (or last frame) streamed with byte ranges, so a
`<video>` element can play and seek it through the gateway alone.

An output in the archive is served from the store (the gateway answers the range itself);
otherwise it is streamed from the upstream's link while that still works. The owner asks with
a key or a browser token, or anyone holding a link the gateway signed (`/gateway/v1/outputs`).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from enum import StrEnum

from app.errors import AccessDenied, Conflict, NotFound, RangeNotSatisfiable
from app.keys.service import AuthContext
from app.logs import bind
from app.resources import Resources
from app.storage import ObjectStore
from app.tasks import repository
from app.tasks.models import TaskStatus
from app.tasks.render import link_path
from app.tasks.repository import StoredOutput, TaskRecord
from app.tasks.service import fresh_record, linked_record
from app.upstream.content import Download, open_download

# One byte range (first-last, first-, or -suffix); several ranges are not served.
_ONE_RANGE = re.compile(r"bytes=(\d{1,15})-(\d{0,15})|bytes=-(\d{1,15})")


class ContentVariant(StrEnum):
    """Which output of a task: its video, or the last frame it was asked to return."""

    VIDEO = "video"
    LAST_FRAME = "last_frame"

    @property
    def snapshot_field(self) -> str:
        """Where the upstream's task object gives this output's URL (under `content`)."""
        return "video_url" if self is ContentVariant.VIDEO else "last_frame_url"


async def task_content(
    *,
    resources: Resources,
    auth: AuthContext,
    task_id: str,
    variant: ContentVariant,
    range_header: str | None,
    if_none_match: str | None,
    request_id: str,
) -> Download:
    """The output for its owner: 404 for a task the caller cannot see or without this output,
    409 while it runs, 416 for a Range that is not one byte range. Nothing is fetched for any
    of them."""
    bind(task_id=task_id[:64])
    task = await fresh_record(
        resources=resources, auth=auth, task_id=task_id, request_id=request_id
    )
    return await _serve(resources, task, variant, range_header, if_none_match)


async def linked_content(
    *,
    resources: Resources,
    task_id: str,
    variant: ContentVariant,
    link: dict[str, str],
    range_header: str | None,
    if_none_match: str | None,
) -> Download:
    """The output for whoever holds a link the gateway signed; 403 once it has expired."""
    valid = resources.token_signer.enabled and resources.token_signer.valid_link(
        link_path(task_id, variant.value),
        expires=link.get("expires", ""),
        kid=link.get("kid", ""),
        signature=link.get("signature", ""),
        now=int(time.time()),
    )
    if not valid:
        raise AccessDenied("This link is not valid, or has expired.", code="LinkExpired")
    task = await linked_record(resources, task_id=task_id)
    return await _serve(resources, task, variant, range_header, if_none_match)


async def _serve(
    resources: Resources,
    task: TaskRecord,
    variant: ContentVariant,
    range_header: str | None,
    if_none_match: str | None,
) -> Download:
    status = TaskStatus(task.status)
    if not status.is_terminal:
        raise Conflict(
            f"The task {task.id} is {status}; its outputs are ready once it has succeeded.",
            code="ContentNotReady",
            headers={"Retry-After": "5"},
        )
    content = (task.snapshot or {}).get("content") or {}
    url = content.get(variant.snapshot_field) if status == TaskStatus.SUCCEEDED else None
    if not isinstance(url, str) or not url:
        raise NotFound(
            f"The task {task.id} has no {variant.value.replace('_', ' ')}.",
            param="variant",
            code="ContentNotFound",
        )
    wanted = _one_range(range_header) if range_header is not None else None
    if resources.store is not None:
        stored = await repository.archived_output(
            resources.autocommit_engine,
            task_id=task.id,
            frame=variant is ContentVariant.LAST_FRAME,
        )
        if stored is not None:
            return _from_store(resources.store, stored, wanted, if_none_match)
    return await open_download(
        resources.downloads, url, range_header=range_header, if_none_match=if_none_match
    )


def _one_range(header: str) -> tuple[int | None, int | None]:
    """(first, last) of a single byte range, either end open (None); 416 for anything else."""
    match = _ONE_RANGE.fullmatch(header.strip())
    if match is None:
        raise RangeNotSatisfiable()
    first, last, suffix = match.groups()
    if suffix is not None:
        return None, int(suffix)
    if last and int(first) > int(last):
        raise RangeNotSatisfiable()
    return int(first), int(last) if last else None


def _from_store(
    store: ObjectStore,
    stored: StoredOutput,
    wanted: tuple[int | None, int | None] | None,
    if_none_match: str | None,
) -> Download:
    size, etag = stored.size, f'"{stored.sha256[:32]}"'
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Type": stored.media_type}
    if if_none_match is not None and etag in [tag.strip() for tag in if_none_match.split(",")]:
        return Download(304, headers, _nothing())
    start, end, status = 0, size, 200
    if wanted is not None:
        first, last = wanted
        if first is None:  # the last `last` bytes
            start = max(size - (last or 0), 0)
        else:
            start, end = first, min(last + 1, size) if last is not None else size
        if start >= size or start >= end:
            raise RangeNotSatisfiable(content_range=f"bytes */{size}")
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        status = 206
    headers["Content-Length"] = str(end - start)
    return Download(status, headers, store.read(stored.key, start=start, end=end))


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""
