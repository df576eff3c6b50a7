"""How a task looks to its owner: the upstream task object, with the gateway's ids in it."""

from __future__ import annotations

from typing import Any

from app.tasks.models import Task
from app.tasks.repository import TaskRecord


def public_view(task: Task | TaskRecord) -> dict[str, Any]:
    """The upstream's task object with the gateway id; a minimal one before the first refresh."""
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
    view["status"] = task.status
    if task.draft_task_id and "draft_task_id" in view:
        view["draft_task_id"] = task.draft_task_id
    return {"id": view.pop("id"), **view}
