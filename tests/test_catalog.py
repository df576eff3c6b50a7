"""Token arithmetic and the effective parameters, against the reference's observed figures."""

from __future__ import annotations

import json

import pytest

from app.config import Settings
from app.tasks.catalog import MODELS, find_model
from app.tasks.validation import validate_create


@pytest.mark.parametrize(
    ("model", "resolution", "ratio", "seconds", "tokens"),
    [
        ("dreamina-seedance-2-0-260128", "720p", "16:9", 5, 108_900),
        ("seedance-1-0-pro-250528", "1080p", "16:9", 5, 246_840),
        ("seedance-1-0-pro-250528", "1080p", "16:9", 6, 295_800),
        ("seedance-1-0-lite-t2v-250428", "720p", "16:9", 5, 103_818),
        ("seedance-1-0-pro-fast-251015", "480p", "16:9", 5, 49_005),
    ],
)
def test_tokens_match_observed_upstream_usage(model, resolution, ratio, seconds, tokens) -> None:
    frames = MODELS[model].frame_count(duration=seconds, frames=None)
    assert MODELS[model].tokens(resolution=resolution, ratio=ratio, frame_count=frames) == tokens


def test_volcengine_ids_and_endpoint_aliases_resolve() -> None:
    assert find_model("doubao-seedance-1-0-pro-250528") is MODELS["seedance-1-0-pro-250528"]
    assert find_model("ep-20250101-abc") is None
    aliases = {"ep-20250101-abc": "seedance-1-0-pro-250528"}
    assert find_model("ep-20250101-abc", aliases) is MODELS["seedance-1-0-pro-250528"]


def _create(**fields) -> bytes:
    base = {"model": "seedance-1-0-pro-250528", "content": [{"type": "text", "text": "fox"}]}
    return json.dumps({**base, **fields}).encode()


def test_body_fields_win_over_inline_commands_which_win_over_defaults() -> None:
    raw = _create(
        content=[{"type": "text", "text": "fox --rs 480p --dur 9 --rt 1:1"}], resolution="720p"
    )
    request = validate_create(raw, allowed_models=None, aliases={})
    assert (request.resolution, request.duration, request.ratio) == ("720p", 9, "1:1")
    default = validate_create(_create(), allowed_models=None, aliases={})
    assert (default.resolution, default.duration, default.ratio) == ("1080p", 5, "16:9")


def test_callback_url_is_kept_by_the_gateway_not_forwarded() -> None:
    request = validate_create(
        _create(callback_url="https://example.test/hook"), allowed_models=None, aliases={}
    )
    assert request.callback_url == "https://example.test/hook"
    assert "callback_url" not in request.forward_body


def test_placeholder_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        Settings(_env_file=None, upstream_api_key="change-me")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="ADMIN_TOKEN"):
        Settings(_env_file=None, admin_token="short")  # type: ignore[call-arg]
    assert Settings(_env_file=None).demo_mode  # type: ignore[call-arg]


def _lengths(spec):
    lengths = [{"duration": d} for d in {spec.min_duration, spec.max_duration}]
    if spec.model_chooses_duration:
        lengths.append({"duration": -1})
    if spec.frames:
        lengths += [{"frames": 29}, {"frames": 121}, {"frames": 289}]
    return lengths


def _videos(spec):
    """No video, one declared clip (exact), clips without a declared length (the most)."""
    if not spec.input_video_seconds:
        return [[]]
    clip = {"type": "video_url", "role": "reference_video"}
    return [
        [],
        [{**clip, "video_url": {"url": "https://x.test/a-3s.mp4", "duration": 3}}],
        [{**clip, "video_url": {"url": "https://x.test/b-2s.mp4"}},
         {**clip, "video_url": {"url": "https://x.test/c-12s.mp4"}}],
    ]  # fmt: skip


def _grid():
    """Every model × resolution × ratio × length × audio × draft × video input."""
    for name, spec in sorted(MODELS.items()):
        extras = [{}] + ([{"generate_audio": False}] if spec.audio else [])
        extras += [{"draft": True}] if spec.draft else []
        for resolution in spec.resolutions:
            for ratio in ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"):
                for length in _lengths(spec):
                    for extra in extras:
                        if extra.get("draft") and resolution != "480p":
                            continue
                        for videos in _videos(spec):
                            fields = {"resolution": resolution, "ratio": ratio, **length, **extra}
                            yield name, fields, videos


def test_reservations_agree_with_the_independent_simulator() -> None:
    """The gateway's estimate against the simulator's own tables (written apart from the
    catalog): equal where the request fixes the output, never below it where the upstream
    chooses (adaptive ratio, duration -1, input videos of undeclared length)."""
    from app.simulator import tables
    from app.tasks.models import Task
    from app.usage.pricing import Estimate

    checked = 0
    for name, fields, videos in _grid():
        content = [{"type": "text", "text": "fox"}, *videos]
        if fields["ratio"] == "adaptive":
            content.append({"type": "image_url", "image_url": {"url": "https://x.test/a.png"}})
        raw = json.dumps({"model": name, "content": content, **fields}).encode()
        request = validate_create(raw, allowed_models=None, aliases={})
        task = Task(
            id="t", user_id="u", key_id="k", model=name, resolution=request.resolution,
            ratio=request.ratio, duration=request.duration, frames=request.frames,
            input_video_seconds=request.input_video_seconds, draft=request.draft,
        )  # fmt: skip
        reserved = Estimate.of(task, request.spec).tokens
        billed = tables.output_of(tables.MODELS[name], request.forward_body).tokens
        chosen = fields["ratio"] == "adaptive" or fields.get("duration") == -1
        if chosen or len(videos) > 1:
            assert billed <= reserved, (name, fields, videos, billed, reserved)
        else:
            assert billed == reserved, (name, fields, videos, billed, reserved)
        checked += 1
    assert checked > 1500


def test_the_declared_length_of_an_input_video_is_not_forwarded() -> None:
    clip = {"url": "https://x.test/a.mp4", "duration": 4.5}
    raw = _create(
        model="dreamina-seedance-2-0-260128",
        content=[{"type": "text", "text": "fox"}, {"type": "video_url", "video_url": clip}],
    )
    request = validate_create(raw, allowed_models=None, aliases={})
    assert request.input_video_seconds == 5  # rounded up: never reserve less
    assert request.forward_body["content"][1]["video_url"] == {"url": "https://x.test/a.mp4"}
