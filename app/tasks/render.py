"""How a task looks to its owner: the upstream task object, with the gateway's ids in it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from app.keys.tokens import TokenSigner
from app.tasks.models import Task
from app.tasks.repository import TaskRecord

TASKS_PATH = "/api/v3/contents/generations/tasks"
# An output's field under `content`, and the variant the gateway serves it as.
OUTPUT_VARIANTS = {"video_url": "video", "last_frame_url": "last_frame"}


def link_path(task_id: str, variant: str) -> str:
    """Where a signed link to a task's output points."""
    return f"/gateway/v1/outputs/{task_id}/{variant}"


@dataclass(frozen=True)
class OutputLinks:
    """With the archive on, a task's output URLs are the gateway's, never the upstream's: links
    signed for `ttl_seconds` (for `<video src>`), or the content endpoint without a signer."""

    signer: TokenSigner
    base_url: str
    ttl_seconds: int

    def rewrite(self, task_id: str, content: dict[str, Any]) -> dict[str, Any]:
        """`content` with each output URL replaced by the gateway's."""
        expires_at = int(time.time()) + self.ttl_seconds
        rewritten = dict(content)
        for field, variant in OUTPUT_VARIANTS.items():
            if field not in content:
                continue
            if self.signer.enabled:
                path = link_path(task_id, variant)
                query = self.signer.sign_link(path, expires_at=expires_at)
            else:
                path, query = f"{TASKS_PATH}/{task_id}/content", {"variant": variant}
            rewritten[field] = f"{self.base_url}{path}?{urlencode(query)}"
        return rewritten


def public_view(task: Task | TaskRecord, links: OutputLinks | None = None) -> dict[str, Any]:
    """The upstream's task object with the gateway's id and model name (and the gateway's
    output links, when given); a minimal one before the first refresh."""
    if task.snapshot:
        view = dict(task.snapshot)
    else:
        view = {
            "model": task.model,
            "created_at": int(task.created_at.timestamp()),
            "updated_at": int(task.updated_at.timestamp()),
            "service_tier": task.service_tier,
            "execution_expires_after": task.execution_expires_after,
        }
    view["id"] = task.id
    view["model"] = task.model  # as the client named it (an account may know it by another)
    view["status"] = task.status
    if links is not None and isinstance(view.get("content"), dict):
        view["content"] = links.rewrite(task.id, view["content"])
    if task.draft_task_id and "draft_task_id" in view:
        view["draft_task_id"] = task.draft_task_id
    return {"id": view.pop("id"), **view}
