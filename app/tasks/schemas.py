"""Public request shapes for the task API, mirroring the upstream's create and list calls
(https://docs.byteplus.com/en/docs/ModelArk/1520757 and the Volcengine "视频生成 API" pages).

`null` is the same as absent everywhere, and unknown fields pass through to the upstream.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

MAX_CONTENT_ITEMS = 64
MAX_TEXT_CHARS = 20_000
MAX_URL_CHARS = 50 * 1024 * 1024  # data: URLs carry base64 media; the body cap bounds them too

UrlStr = Annotated[StrictStr, Field(min_length=1, max_length=MAX_URL_CHARS)]


class _Open(BaseModel):
    """Strict types, unknown keys kept (the upstream may know fields we do not)."""

    model_config = ConfigDict(strict=True, extra="allow")


class MediaRef(_Open):
    url: UrlStr


class DraftRef(_Open):
    id: Annotated[StrictStr, Field(min_length=1, max_length=128)]


class ContentItem(_Open):
    type: Literal["text", "image_url", "video_url", "audio_url", "draft_task"]
    text: Annotated[StrictStr, Field(max_length=MAX_TEXT_CHARS)] | None = None
    image_url: MediaRef | None = None
    video_url: MediaRef | None = None
    audio_url: MediaRef | None = None
    draft_task: DraftRef | None = None
    role: (
        Literal[
            "first_frame",
            "last_frame",
            "reference_image",
            "mask",
            "reference_video",
            "reference_audio",
        ]
        | None
    ) = None


class Tool(_Open):
    type: Literal["web_search"]


class TaskCreate(_Open):
    """The create body; the per-model rules live in `validation.py`."""

    model: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    content: Annotated[list[ContentItem], Field(min_length=1, max_length=MAX_CONTENT_ITEMS)]
    callback_url: Annotated[StrictStr, Field(max_length=2048, pattern=r"^https?://\S+$")] | None = (
        None
    )
    return_last_frame: StrictBool | None = None
    service_tier: Literal["default", "flex"] | None = None
    execution_expires_after: Annotated[StrictInt, Field(ge=3600, le=259200)] | None = None
    generate_audio: StrictBool | None = None
    draft: StrictBool | None = None
    camera_fixed: StrictBool | None = None
    watermark: StrictBool | None = None
    seed: Annotated[StrictInt, Field(ge=-1, le=2**32 - 1)] | None = None
    resolution: Literal["480p", "720p", "1080p", "4k"] | None = None
    ratio: Literal["16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"] | None = None
    duration: StrictInt | None = None
    frames: Annotated[StrictInt, Field(ge=29, le=289)] | None = None
    priority: Annotated[StrictInt, Field(ge=0, le=9)] | None = None
    safety_identifier: Annotated[StrictStr, Field(max_length=64)] | None = None
    tools: Annotated[list[Tool], Field(max_length=8)] | None = None
    output_format: Literal["mp4", "mov"] | None = None
    omni_reference_task_type: Literal["auto", "reference", "edit", "extend"] | None = None


class TaskListQuery(BaseModel):
    """The upstream's list query keys, parsed from the query string."""

    page_num: int = Field(default=1, ge=1, le=500)
    page_size: int = Field(default=20, ge=1, le=500)
    status: Literal["queued", "running", "cancelled", "succeeded", "failed", "expired"] | None = (
        None
    )
    task_ids: list[str] = Field(default_factory=list, max_length=500)
    model: str | None = None
    service_tier: Literal["default", "flex"] = "default"


def strip_nulls(body: dict[str, Any]) -> dict[str, Any]:
    """The body without top-level `null` values: the Python SDKs send every unset field as null."""
    return {key: value for key, value in body.items() if value is not None}
