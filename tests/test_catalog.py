"""Token arithmetic and the effective parameters, against the reference's observed figures."""

from __future__ import annotations

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
    assert MODELS[model].tokens(resolution=resolution, ratio=ratio, seconds=seconds) == tokens


def test_volcengine_ids_and_endpoint_aliases_resolve() -> None:
    assert find_model("doubao-seedance-1-0-pro-250528") is MODELS["seedance-1-0-pro-250528"]
    assert find_model("ep-20250101-abc") is None
    aliases = {"ep-20250101-abc": "seedance-1-0-pro-250528"}
    assert find_model("ep-20250101-abc", aliases) is MODELS["seedance-1-0-pro-250528"]


def _create(**fields) -> bytes:
    import json

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
