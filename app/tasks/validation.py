"""Turns a raw create body into a validated request, or an Ark 4xx naming the bad parameter."""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from app.errors import InvalidParameter, MissingParameter, ModelNotFound
from app.tasks.callback_url import check_callback_url
from app.tasks.catalog import RATIOS, ModelSpec, find_model
from app.tasks.prompt import inline_commands, int_or_none
from app.tasks.schemas import TaskCreate, strip_nulls

_IMAGE_ROLES = {None, "first_frame", "last_frame", "reference_image", "mask"}
_ROLE_BY_MEDIA = {"video_url": {None, "reference_video"}, "audio_url": {None, "reference_audio"}}


@dataclass(frozen=True)
class CreateRequest:
    """A create that passed validation: what to forward and the parameters that drive cost."""

    forward_body: dict[str, Any]
    spec: ModelSpec
    model: str
    service_tier: str
    resolution: str
    ratio: str
    duration: int | None
    frames: int | None
    execution_expires_after: int
    callback_url: str | None
    draft_task_ref: str | None
    fingerprint: str
    seed: int
    # Reference video seconds to reserve (declared, or the model's most); None: no video input.
    input_video_seconds: int | None = None
    generate_audio: bool = False
    draft: bool = False

    def task_fields(self) -> dict[str, Any]:
        """The task columns that drive its cost, as the create records them."""
        return {
            "model": self.model,
            "service_tier": self.service_tier,
            "resolution": self.resolution,
            "ratio": self.ratio,
            "duration": self.duration,
            "frames": self.frames,
            "input_video_seconds": self.input_video_seconds,
            "generate_audio": self.generate_audio,
            "draft": self.draft,
        }


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or 400 InvalidParameter.

    Standard JSON only: NaN and ±Infinity, numbers with thousands of digits and nesting deeper
    than Python can parse are refused like any other malformed body.
    """
    try:
        body = json.loads(raw, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise InvalidParameter("body", f"the request body is not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise InvalidParameter("body", "the request body is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        reason = "too deeply nested" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidParameter("body", f"the request body is not valid JSON ({reason})") from None
    if not isinstance(body, dict):
        raise InvalidParameter("body", "the request body must be a JSON object")
    return body


def fingerprint(body: dict[str, Any]) -> str:
    """SHA-256 of a body in a canonical form (keys sorted, nulls already dropped)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_create(
    raw: bytes, *, allowed_models: list[str] | None, aliases: dict[str, str]
) -> CreateRequest:
    """Validate a create body against the schema and the model's capabilities."""
    body = strip_nulls(parse_json_object(raw))
    try:
        request = TaskCreate.model_validate(body)
    except ValidationError as exc:
        raise _as_ark_error(exc) from None
    spec = find_model(request.model, aliases)
    if spec is None or (allowed_models is not None and request.model not in allowed_models):
        raise ModelNotFound(request.model)
    _check_content(request, spec)
    effective = _effective_params(request, spec)
    _check_capabilities(request, spec, effective)
    input_seconds = _input_video_seconds(request, spec)

    forward = dict(body)
    forward.pop("callback_url", None)  # the gateway delivers callbacks itself, with its own ids
    if input_seconds is not None:
        forward["content"] = [_without_declared_length(item) for item in forward["content"]]
    seed = _seed(request, forward)
    draft_ref = next((item.draft_task.id for item in request.content if item.draft_task), None)
    return CreateRequest(
        forward_body=forward,
        spec=spec,
        model=request.model,
        service_tier=request.service_tier or "default",
        resolution=effective["resolution"],
        ratio=effective["ratio"],
        duration=effective["duration"],
        frames=effective["frames"],
        execution_expires_after=request.execution_expires_after or 172800,
        callback_url=check_callback_url(request.callback_url),
        draft_task_ref=draft_ref,
        fingerprint=fingerprint(body),
        seed=seed,
        input_video_seconds=input_seconds,
        generate_audio=spec.audio and request.generate_audio is not False,
        draft=request.draft is True,
    )


def _input_video_seconds(request: TaskCreate, spec: ModelSpec) -> int | None:
    """Reference video seconds to reserve: the declared lengths (`video_url.duration`, a
    gateway extension, not forwarded) when every video declares one, else the model's most."""
    videos = [item.video_url for item in request.content if item.video_url is not None]
    if not videos:
        return None
    if not spec.input_video_seconds:
        raise InvalidParameter("content", f"{spec.name} does not take video input")
    declared = [_declared_seconds(video.model_extra or {}) for video in videos]
    if any(seconds is None for seconds in declared):
        return spec.input_video_seconds
    total = math.ceil(sum(seconds for seconds in declared if seconds is not None))
    if total > spec.input_video_seconds:
        raise InvalidParameter(
            "content",
            f"the input videos last {total} s; {spec.name} takes {spec.input_video_seconds} s "
            "at most",
        )
    return total


def _declared_seconds(extra: dict[str, Any]) -> float | None:
    seconds = extra.get("duration")
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= 60:
        raise InvalidParameter("content", "video_url.duration must be seconds in (0, 60]")
    return float(seconds)


def _without_declared_length(item: dict[str, Any]) -> dict[str, Any]:
    video = item.get("video_url")
    if item.get("type") != "video_url" or not isinstance(video, dict) or "duration" not in video:
        return item
    return {**item, "video_url": {k: v for k, v in video.items() if k != "duration"}}


# The upstream's seed range (BytePlus: [-1, 2147483647]); -1 asks for a random one.
MAX_SEED = 2**31 - 1


def _seed(request: TaskCreate, forward: dict[str, Any]) -> int:
    """The seed the task will run with; the gateway picks it when the client left it random.

    The upstream echoes the seed, so a seed of the gateway's choosing identifies this request's
    upstream task when a create's outcome is unknown (see `reconcile`). A random seed picked
    here is as random as the upstream's own.
    """
    if request.seed is not None and request.seed != -1:
        return request.seed
    inline = int_or_none(inline_commands(request.content).get("seed"))
    if inline is not None and inline != -1:
        return inline  # an inline `--seed` the body must not override
    forward["seed"] = secrets.randbelow(MAX_SEED + 1)
    return int(forward["seed"])


def _as_ark_error(exc: ValidationError) -> InvalidParameter | MissingParameter:
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"]]
    param = loc[0] if loc else "body"
    if first["type"] == "missing" and len(loc) == 1:
        return MissingParameter(param)
    where = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
    return InvalidParameter(param, f"{param}{where}: {first['msg']}")


def _check_content(request: TaskCreate, spec: ModelSpec) -> None:
    images = 0
    for index, item in enumerate(request.content):
        payload = getattr(item, item.type, None)
        if payload is None:
            raise InvalidParameter(
                "content", f"content[{index}] of type {item.type} has no `{item.type}`"
            )
        if item.type == "image_url":
            images += 1
            if item.role not in _IMAGE_ROLES:
                raise InvalidParameter(
                    "content", f"role {item.role} is not valid for image contents"
                )
        elif item.type in _ROLE_BY_MEDIA and item.role not in _ROLE_BY_MEDIA[item.type]:
            raise InvalidParameter(
                "content", f"role {item.role} is not valid for {item.type} contents"
            )
        elif item.type == "draft_task" and not spec.draft:
            raise InvalidParameter("content", f"model {spec.name} does not support draft tasks")
    roles = [item.role for item in request.content if item.type == "image_url"]
    if "last_frame" in roles and (images != 2 or "first_frame" not in roles):
        raise InvalidParameter(
            "content", "a last_frame needs exactly one first_frame image with it"
        )
    if images > 1 and None in roles:
        raise InvalidParameter("content", "role must be specified for image contents")


def _effective_params(request: TaskCreate, spec: ModelSpec) -> dict[str, Any]:
    """Resolution, ratio, duration and frames in effect: body, else prompt, else default."""
    inline = inline_commands(request.content)
    has_image = any(item.type == "image_url" for item in request.content)
    default_ratio = "adaptive" if has_image or spec.text_to_video_adaptive else "16:9"
    resolution = request.resolution or inline.get("resolution")
    if resolution not in spec.resolutions:
        resolution = "480p" if request.draft else spec.default_resolution
    ratio = request.ratio or inline.get("ratio")
    if ratio not in (*RATIOS, "adaptive"):
        ratio = default_ratio
    frames = request.frames if request.frames is not None else int_or_none(inline.get("frames"))
    duration = (
        request.duration if request.duration is not None else int_or_none(inline.get("duration"))
    )
    if frames is not None and not spec.frames:
        frames = None
    if duration is None and frames is None:
        duration = spec.default_duration
    return {"resolution": resolution, "ratio": ratio, "duration": duration, "frames": frames}


def _check_capabilities(request: TaskCreate, spec: ModelSpec, effective: dict[str, Any]) -> None:
    name = spec.name
    if request.resolution is not None and request.resolution not in spec.resolutions:
        raise InvalidParameter("resolution", f"{request.resolution} is not supported by {name}")
    if request.duration is not None:
        low, high = spec.min_duration, spec.max_duration
        if not (
            low <= request.duration <= high
            or (request.duration == -1 and spec.model_chooses_duration)
        ):
            allowed = f"[{low}, {high}]" + (" or -1" if spec.model_chooses_duration else "")
            raise InvalidParameter("duration", f"must be in {allowed} for {name}")
    if request.frames is not None:
        if not spec.frames:
            raise InvalidParameter("frames", f"{name} does not support frames")
        if (request.frames - 25) % 4:
            raise InvalidParameter("frames", "must be of the form 25+4n")
    if (
        effective["ratio"] == "adaptive"
        and not spec.text_to_video_adaptive
        and not any(item.type == "image_url" for item in request.content)
    ):
        raise InvalidParameter("ratio", f"adaptive is not supported for text-to-video on {name}")
    if request.service_tier == "flex" and not spec.flex:
        raise InvalidParameter("service_tier", f"flex is not supported by {name}")
    if request.draft and not spec.draft:
        raise InvalidParameter("draft", f"{name} does not support draft mode")
    if request.draft and request.resolution not in (None, "480p"):
        raise InvalidParameter("resolution", "draft mode supports only 480p")
    if request.output_format is not None and request.output_format not in spec.output_formats:
        raise InvalidParameter(
            "output_format", f"{request.output_format} is not supported by {name}"
        )
