"""Inline prompt commands (`--rs 720p --dur 5`), as the upstream's video generation tutorial
documents them: https://ai.byteplus.com/ark/region:ap-southeast-1/docs/ModelArk/
video-generation-tutorial."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_INLINE = re.compile(
    r"--(resolution|rs|ratio|rt|duration|dur|frames|camerafixed|cf|watermark|wm|seed)\s+(\S+)"
)
_LONG_NAMES = {
    "rs": "resolution",
    "rt": "ratio",
    "dur": "duration",
    "cf": "camerafixed",
    "wm": "watermark",
}


def inline_commands(content: Iterable[Any]) -> dict[str, str]:
    """The `--name value` commands in a create's text items, by long name (last one wins)."""
    found: dict[str, str] = {}
    for item in content:
        text = item.get("text") if isinstance(item, dict) else getattr(item, "text", None)
        if isinstance(text, str):
            for name, value in _INLINE.findall(text):
                found[_LONG_NAMES.get(name, name)] = value
    return found


def int_or_none(value: Any) -> int | None:
    """`value` as an int, or None when it is not one."""
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
