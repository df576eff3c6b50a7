"""The simulator's own model tables and usage rule, written from the upstream's public docs.

Deliberately independent of the gateway's catalog (`app.tasks`): the simulator is the oracle the
gateway's estimates and ledger are checked against, so it must not share their code or data.
Where the two disagree a test fails, and the docs decide.

Sources: the BytePlus ModelArk video generation tutorial (model capability table and the
"output video resolution" table), https://ai.byteplus.com/ark/region:ap-southeast-1/docs/
ModelArk/video-generation-tutorial; usage as observed on real tasks: tokens =
width × height × (24 × seconds + 1) / 1024, rounded down (e.g. 1920×1088, 5 s → 246 840).
With input video (2.x), its seconds are billed as if they were output: a 14 s input to a 5 s
720p task is 1280×720×(24×19+1)/1024 = 411 300 (observed). Seedance 2.0 and 2.0 fast bill at
least a minimum with video input; resellers' minimum-charge tables come to about twice the
output's seconds, so here an input counts for at least as long as the output. 1.5 pro drafts
use 0.6 of the tokens (BytePlus tutorial).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any
from urllib.parse import urlsplit

# Output pixel sizes, from the docs' table: resolution → ratio → (width, height).
SIZES_1_0 = {
    "480p": {"16:9": (864, 480), "4:3": (736, 544), "1:1": (640, 640), "3:4": (544, 736),
             "9:16": (480, 864), "21:9": (960, 416)},
    "720p": {"16:9": (1248, 704), "4:3": (1120, 832), "1:1": (960, 960), "3:4": (832, 1120),
             "9:16": (704, 1248), "21:9": (1504, 640)},
    "1080p": {"16:9": (1920, 1088), "4:3": (1664, 1248), "1:1": (1440, 1440),
              "3:4": (1248, 1664), "9:16": (1088, 1920), "21:9": (2176, 928)},
}  # fmt: skip
SIZES_720_1080 = {
    "720p": {"16:9": (1280, 720), "4:3": (1112, 834), "1:1": (960, 960), "3:4": (834, 1112),
             "9:16": (720, 1280), "21:9": (1470, 630)},
    "1080p": {"16:9": (1920, 1080), "4:3": (1664, 1248), "1:1": (1440, 1440),
              "3:4": (1248, 1664), "9:16": (1080, 1920), "21:9": (2206, 946)},
}  # fmt: skip
SIZES_2_0 = {
    "480p": {"16:9": (864, 496), "4:3": (752, 560), "1:1": (640, 640), "3:4": (560, 752),
             "9:16": (496, 864), "21:9": (992, 432)},
    **SIZES_720_1080,
    "4k": {"16:9": (3840, 2160), "4:3": (3326, 2494), "1:1": (2880, 2880), "3:4": (2494, 3326),
           "9:16": (2160, 3840), "21:9": (4398, 1886)},
}  # fmt: skip
SIZES_2_5 = {
    "480p": {"16:9": (854, 480), "4:3": (752, 560), "1:1": (640, 640), "3:4": (560, 752),
             "9:16": (480, 854), "21:9": (992, 432)},
    **SIZES_720_1080,
}  # fmt: skip


@dataclass(frozen=True)
class SimModel:
    """What the simulated upstream serves for one model id."""

    sizes: dict[str, dict[str, tuple[int, int]]]
    resolutions: tuple[str, ...]
    default_resolution: str
    default_duration: int
    chosen_duration: int  # what the model "chooses" for duration -1
    input_video_limit: int = 0  # total seconds of reference video accepted (0: none)
    minimum_usage: bool = False  # with video input, the input counts at least as the output
    draft_factor: Fraction = Fraction(1)


def _models() -> dict[str, SimModel]:
    all3 = ("480p", "720p", "1080p")
    v10 = SimModel(SIZES_1_0, all3, "720p", 5, 5)
    v10_pro = SimModel(SIZES_1_0, all3, "1080p", 5, 5)
    v15 = SimModel(SIZES_2_0, all3, "720p", 5, 8, draft_factor=Fraction(3, 5))
    v20 = SimModel(SIZES_2_0, (*all3, "4k"), "720p", 5, 8, 15, minimum_usage=True)
    v20_fast = SimModel(SIZES_2_0, ("480p", "720p"), "720p", 5, 8, 15, minimum_usage=True)
    v20_mini = SimModel(SIZES_2_0, ("480p", "720p"), "720p", 5, 8, 15)
    v25 = SimModel(SIZES_2_5, all3, "720p", -1, 10, 30)
    byteplus = {
        "seedance-1-0-lite-t2v-250428": v10,
        "seedance-1-0-lite-i2v-250428": v10,
        "seedance-1-0-pro-250528": v10_pro,
        "seedance-1-0-pro-fast-251015": v10_pro,
        "seedance-1-5-pro-251215": v15,
        "dreamina-seedance-2-0-260128": v20,
        "dreamina-seedance-2-0-fast-260128": v20_fast,
        "dreamina-seedance-2-0-mini-260615": v20_mini,
        "dreamina-seedance-2-5-260628": v25,
    }
    volcengine = {
        "doubao-" + name.removeprefix("dreamina-"): model
        for name, model in byteplus.items()
        if "mini" not in name and "2-5" not in name
    }
    return {**byteplus, **volcengine}


MODELS = _models()
_INLINE = re.compile(r"--(resolution|rs|ratio|rt|duration|dur|frames|seed)\s+(\S+)")
_SHORT = {"rs": "resolution", "rt": "ratio", "dur": "duration"}


def inline_values(content: Any) -> dict[str, str]:
    """`--rs 720p --dur 5` style commands in the text items (the last one of a name wins)."""
    found: dict[str, str] = {}
    for item in content if isinstance(content, list) else []:
        text = item.get("text") if isinstance(item, dict) else None
        for name, value in _INLINE.findall(text if isinstance(text, str) else ""):
            found[_SHORT.get(name, name)] = value
    return found


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_SECONDS_IN_NAME = re.compile(r"(\d{1,3})s\.(?:mp4|mov)$")


def input_video_seconds(url: str) -> int:
    """How long a reference video is: the simulator's own media table. A file named
    `…-14s.mp4` lasts 14 s; any other URL lasts 2-15 s, fixed by a hash of the URL (the
    upstream measures the file; the gateway cannot know its length)."""
    named = _SECONDS_IN_NAME.search(urlsplit(url).path)
    if named:
        return int(named.group(1))
    return 2 + hashlib.sha256(url.encode()).digest()[0] % 14


def input_videos(content: Any) -> list[int]:
    """The seconds of each reference video in a create's content."""
    seconds = []
    for item in content if isinstance(content, list) else []:
        video = item.get("video_url") if isinstance(item, dict) else None
        if item.get("type") == "video_url" and isinstance(video, dict):
            seconds.append(input_video_seconds(str(video.get("url", ""))))
    return seconds


@dataclass(frozen=True)
class Output:
    """The video a request produces: its size and length, and what it bills."""

    resolution: str
    ratio: str
    width: int
    height: int
    duration: int | None  # seconds, when asked by duration
    frames: int | None  # when asked by frames
    input_seconds: int = 0  # reference video, in all
    minimum_usage: bool = False
    draft_factor: Fraction = Fraction(1)

    @property
    def tokens(self) -> int:
        """Usage: W×H×(24·s+1)/1024 with 24·s+1 frames (the frame count when given), input
        video seconds billed as output ones (at least the output's length where a minimum
        applies), times the draft factor, rounded down."""
        frame_count = self.frames if self.frames is not None else 24 * (self.duration or 0) + 1
        input_frames = 24 * self.input_seconds
        if self.input_seconds and self.minimum_usage:
            input_frames = max(input_frames, frame_count - 1)
        billed = Fraction(self.width * self.height * (frame_count + input_frames), 1024)
        return int(billed * self.draft_factor)


def output_of(model: SimModel, body: dict[str, Any]) -> Output:
    """What the upstream makes of a create body: body fields first, then inline commands."""
    inline = inline_values(body.get("content"))
    resolution = body.get("resolution") or inline.get("resolution")
    if resolution not in model.resolutions:
        resolution = "480p" if body.get("draft") is True else model.default_resolution
    ratio = body.get("ratio") or inline.get("ratio")
    if ratio not in model.sizes[resolution]:
        ratio = "16:9"  # adaptive: the simulator's own pick
    width, height = model.sizes[resolution][ratio]
    billing = (
        sum(input_videos(body.get("content"))),
        model.minimum_usage,
        model.draft_factor if body.get("draft") is True else Fraction(1),
    )
    frames = body.get("frames")
    frames = _int(inline.get("frames")) if frames is None else frames
    if frames is not None:
        return Output(resolution, ratio, width, height, None, frames, *billing)
    duration = body.get("duration")
    duration = _int(inline.get("duration")) if duration is None else duration
    if duration is None:
        duration = model.default_duration
    if duration == -1:
        duration = model.chosen_duration
    return Output(resolution, ratio, width, height, duration, None, *billing)


def input_video_refusal(model: SimModel, content: Any) -> str | None:
    """Why the upstream refuses a create's reference videos, if it does."""
    seconds = input_videos(content)
    if seconds and not model.input_video_limit:
        return "The model does not accept video input."
    if sum(seconds) > model.input_video_limit:
        return f"The total length of the input videos must not exceed {model.input_video_limit} s."
    return None
