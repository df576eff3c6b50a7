"""Public task routes, wire-compatible with Seedance's `/api/v3/contents/generations/tasks`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from app.db import SessionDep
from app.limits.deps import CreateCaller, ReadCaller
from app.middleware import request_id_of
from app.resources import ResourcesDep
from app.tasks import content, creation, service
from app.tasks.content import ContentVariant
from app.tasks.schemas import TaskListQuery
from app.tasks.validation import validate_create

TaskStatusFilter = Literal["queued", "running", "cancelled", "succeeded", "failed", "expired", ""]
ServiceTier = Literal["default", "flex", ""]

router = APIRouter(prefix="/api/v3/contents/generations/tasks", tags=["tasks"])


@router.post("")
async def create_task(
    request: Request,
    resources: ResourcesDep,
    auth: CreateCaller,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> dict[str, Any]:
    """Create a video-generation task."""
    create = validate_create(
        await request.body(),
        allowed_models=auth.allowed_models,
        aliases=resources.settings.model_aliases,
    )
    return await creation.create_task(
        resources=resources,
        auth=auth,
        request=create,
        idempotency_key=idempotency_key,
        request_id=request_id_of(request),
    )


@router.get("")
async def list_tasks(
    request: Request,
    resources: ResourcesDep,
    auth: ReadCaller,
    page_num: Annotated[int, Query(ge=1, le=500)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 20,
    status: Annotated[TaskStatusFilter | None, Query(alias="filter.status")] = None,
    task_ids: Annotated[list[str] | None, Query(alias="filter.task_ids")] = None,
    model: Annotated[str | None, Query(alias="filter.model", max_length=128)] = None,
    service_tier: Annotated[ServiceTier | None, Query(alias="filter.service_tier")] = None,
) -> dict[str, Any]:
    """List the caller's tasks with the upstream's query keys."""
    ids = [part for value in task_ids or [] for part in value.split(",") if part]
    query = TaskListQuery.model_validate(
        {
            "page_num": page_num,
            "page_size": page_size,
            "status": status or None,
            "task_ids": ids,
            "model": model or None,
            "service_tier": service_tier or "default",
        }
    )
    return await service.list_tasks(
        resources=resources, auth=auth, query=query, base_url=str(request.base_url)
    )


@router.get("/{task_id}")
async def retrieve_task(
    request: Request, task_id: str, resources: ResourcesDep, auth: ReadCaller
) -> dict[str, Any]:
    """Retrieve one task."""
    return await service.retrieve_task(
        resources=resources,
        auth=auth,
        task_id=task_id,
        request_id=request_id_of(request),
        base_url=str(request.base_url),
    )


@router.get("/{task_id}/content", response_class=StreamingResponse)
async def task_content(
    request: Request,
    task_id: str,
    resources: ResourcesDep,
    auth: ReadCaller,
    variant: ContentVariant = ContentVariant.VIDEO,
    range_header: Annotated[str | None, Header(alias="Range", max_length=200)] = None,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> StreamingResponse:
    """The task's video (or `variant=last_frame`), streamed; `Range` gives 206 partial content."""
    download = await content.task_content(
        resources=resources,
        auth=auth,
        task_id=task_id,
        variant=variant,
        range_header=range_header,
        if_none_match=if_none_match,
        request_id=request_id_of(request),
    )
    return StreamingResponse(
        download.body, status_code=download.status_code, headers=download.headers
    )


@router.delete("/{task_id}")
async def delete_task(
    request: Request, task_id: str, session: SessionDep, resources: ResourcesDep, auth: ReadCaller
) -> dict[str, Any]:
    """Cancel a queued task, or delete a finished one; answers `{}` as upstream does."""
    await service.delete_task(
        session=session,
        resources=resources,
        auth=auth,
        task_id=task_id,
        request_id=request_id_of(request),
    )
    return {}


# Signed links to outputs (what task objects carry with the archive on): no credential needed.
outputs_router = APIRouter(prefix="/gateway/v1/outputs", tags=["tasks"])


@outputs_router.get("/{task_id}/{variant}", response_class=StreamingResponse)
async def linked_content(
    task_id: str,
    variant: ContentVariant,
    resources: ResourcesDep,
    expires: Annotated[str, Query(max_length=20)] = "",
    kid: Annotated[str, Query(max_length=64)] = "",
    signature: Annotated[str, Query(max_length=128)] = "",
    range_header: Annotated[str | None, Header(alias="Range", max_length=200)] = None,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> StreamingResponse:
    """A task's output through a link the gateway signed, for `<video src>` (206 with `Range`)."""
    download = await content.linked_content(
        resources=resources,
        task_id=task_id,
        variant=variant,
        link={"expires": expires, "kid": kid, "signature": signature},
        range_header=range_header,
        if_none_match=if_none_match,
    )
    return StreamingResponse(
        download.body, status_code=download.status_code, headers=download.headers
    )
