"""The Seedance models the gateway knows, what each accepts, and their output pixel sizes.

Figures are from the upstream's public docs: the BytePlus ModelArk video generation tutorial
(capability and output-size tables), https://ai.byteplus.com/ark/region:ap-southeast-1/docs/
ModelArk/video-generation-tutorial, and the create-task API page,
https://docs.byteplus.com/en/docs/ModelArk/1520757. Token usage is W×H×(24·d+1)/1024: the
pricing page's formula (https://docs.byteplus.com/en/docs/ModelArk/1544106) with 24·d+1
frames, which fits every observed task. Reference video (2.x) is billed by its seconds as if it
were output (a real 14 s input to a 5 s 720p task billed 411 300 = 900 × (24·19+1)); 2.0 and
2.0 fast bill a minimum with video input, which resellers' tables put at about twice the
output's seconds (approximate: the input counts for at least the output's length); 1.5 pro
drafts bill 60 % of the tokens (BytePlus tutorial).
"""

from __future__ import annotations

from dataclasses import dataclass

RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9")
RESOLUTIONS = ("480p", "720p", "1080p", "4k")
FPS = 24

Sizes = dict[str, tuple[tuple[int, int], ...]]

_V10_SIZES: Sizes = {
    "480p": ((864, 480), (736, 544), (640, 640), (544, 736), (480, 864), (960, 416)),
    "720p": ((1248, 704), (1120, 832), (960, 960), (832, 1120), (704, 1248), (1504, 640)),
    "1080p": ((1920, 1088), (1664, 1248), (1440, 1440), (1248, 1664), (1088, 1920), (2176, 928)),
}
_V25_720 = ((1280, 720), (1112, 834), (960, 960), (834, 1112), (720, 1280), (1470, 630))
_V25_1080 = ((1920, 1080), (1664, 1248), (1440, 1440), (1248, 1664), (1080, 1920), (2206, 946))
_V20_SIZES: Sizes = {
    "480p": ((864, 496), (752, 560), (640, 640), (560, 752), (496, 864), (992, 432)),
    "720p": _V25_720,
    "1080p": _V25_1080,
    "4k": ((3840, 2160), (3326, 2494), (2880, 2880), (2494, 3326), (2160, 3840), (4398, 1886)),
}
_V25_SIZES: Sizes = {
    "480p": ((854, 480), (752, 560), (640, 640), (560, 752), (480, 854), (992, 432)),
    "720p": _V25_720,
    "1080p": _V25_1080,
}
SIZE_TABLES: dict[str, Sizes] = {
    "1.0": _V10_SIZES,
    "2.0": _V20_SIZES,
    "2.5": _V25_SIZES,
}


@dataclass(frozen=True)
class ModelSpec:
    """What one Seedance model accepts and how its output is sized."""

    name: str
    size_table: str
    resolutions: tuple[str, ...]
    default_resolution: str
    min_duration: int
    max_duration: int
    default_duration: int = 5
    model_chooses_duration: bool = False  # accepts duration -1
    frames: bool = False
    text_to_video_adaptive: bool = True  # 1.0 text-to-video cannot use `adaptive`
    draft: bool = False
    flex: bool = True
    priority: bool = False
    output_formats: tuple[str, ...] = ("mp4",)
    audio: bool = False  # takes `generate_audio` (on unless turned off)
    input_video_seconds: int = 0  # the most reference video it takes, in all (0: none)
    minimum_usage: bool = False  # with video input, the input bills at least the output's length
    draft_percent: int = 100  # of the tokens a draft bills

    def size(self, resolution: str, ratio: str) -> tuple[int, int]:
        """Output width and height; `adaptive` or an unlisted ratio counts as the largest."""
        sizes = SIZE_TABLES[self.size_table][resolution]
        if ratio in RATIOS:
            return sizes[RATIOS.index(ratio)]
        return max(sizes, key=lambda wh: wh[0] * wh[1])

    def frame_count(self, *, duration: int | None, frames: int | None) -> int:
        """Output frames: `frames` as asked (it wins over `duration`), else 24·d+1 for d seconds,
        with -1 (the model chooses) counted as the longest."""
        if frames is not None:
            return frames
        if duration is None:
            duration = self.default_duration
        return FPS * (self.max_duration if duration == -1 else duration) + 1

    def tokens(
        self,
        *,
        resolution: str,
        ratio: str,
        frame_count: int,
        input_seconds: int = 0,
        draft: bool = False,
    ) -> int:
        """Usage tokens by the upstream's rule W×H×frames/1024, rounded down, with the input
        video's frames added (at least the output's where a minimum applies) and a draft's
        share taken."""
        width, height = self.size(resolution, ratio)
        billed = frame_count + self.input_frames(input_seconds, frame_count=frame_count)
        percent = self.draft_percent if draft else 100
        return width * height * billed * percent // (1024 * 100)

    def input_frames(self, input_seconds: int, *, frame_count: int) -> int:
        """The frames an input video of `input_seconds` bills for an output of `frame_count`."""
        if not input_seconds:
            return 0
        frames = 24 * input_seconds
        return max(frames, frame_count - 1) if self.minimum_usage else frames


def _v10(
    name: str,
    default_resolution: str,
    resolutions: tuple[str, ...] = RESOLUTIONS[:3],
    *,
    t2v_adaptive: bool = True,
) -> ModelSpec:
    return ModelSpec(
        name=name,
        size_table="1.0",
        resolutions=resolutions,
        default_resolution=default_resolution,
        min_duration=2,
        max_duration=12,
        frames=True,
        text_to_video_adaptive=t2v_adaptive,
    )


def _v20(name: str, resolutions: tuple[str, ...], *, minimum_usage: bool = True) -> ModelSpec:
    return ModelSpec(
        name=name,
        size_table="2.0",
        resolutions=resolutions,
        default_resolution="720p",
        min_duration=4,
        max_duration=15,
        model_chooses_duration=True,
        flex=False,
        priority=True,
        audio=True,
        input_video_seconds=15,
        minimum_usage=minimum_usage,
    )


_SPECS = (
    _v10("seedance-1-0-lite-t2v-250428", "720p", t2v_adaptive=False),
    _v10("seedance-1-0-lite-i2v-250428", "720p"),
    _v10("seedance-1-0-pro-250528", "1080p", t2v_adaptive=False),
    _v10("seedance-1-0-pro-fast-251015", "1080p", t2v_adaptive=False),
    ModelSpec(
        name="seedance-1-5-pro-251215",
        size_table="2.0",
        resolutions=RESOLUTIONS[:3],
        default_resolution="720p",
        min_duration=4,
        max_duration=12,
        model_chooses_duration=True,
        draft=True,
        audio=True,
        draft_percent=60,
    ),
    _v20("dreamina-seedance-2-0-260128", RESOLUTIONS),
    _v20("dreamina-seedance-2-0-fast-260128", RESOLUTIONS[:2]),
    _v20("dreamina-seedance-2-0-mini-260615", RESOLUTIONS[:2], minimum_usage=False),
    ModelSpec(
        name="dreamina-seedance-2-5-260628",
        size_table="2.5",
        resolutions=RESOLUTIONS[:3],
        default_resolution="720p",
        min_duration=4,
        max_duration=30,
        default_duration=-1,
        model_chooses_duration=True,
        draft=True,
        flex=False,
        priority=True,
        output_formats=("mp4", "mov"),
        audio=True,
        input_video_seconds=30,
    ),
)

# Volcengine ids are the BytePlus ids with `doubao-` in front of the `seedance-…` part.
_VOLC_IDS = {
    "doubao-seedance-1-0-lite-t2v-250428": "seedance-1-0-lite-t2v-250428",
    "doubao-seedance-1-0-lite-i2v-250428": "seedance-1-0-lite-i2v-250428",
    "doubao-seedance-1-0-pro-250528": "seedance-1-0-pro-250528",
    "doubao-seedance-1-0-pro-fast-251015": "seedance-1-0-pro-fast-251015",
    "doubao-seedance-1-5-pro-251215": "seedance-1-5-pro-251215",
    "doubao-seedance-2-0-260128": "dreamina-seedance-2-0-260128",
    "doubao-seedance-2-0-fast-260128": "dreamina-seedance-2-0-fast-260128",
}

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
MODELS.update({volc: MODELS[byteplus] for volc, byteplus in _VOLC_IDS.items()})


def find_model(model_id: str, aliases: dict[str, str] | None = None) -> ModelSpec | None:
    """The spec for a model id, a Volcengine id, or a configured endpoint alias (`ep-…`)."""
    spec = MODELS.get(model_id)
    if spec is None and aliases and model_id in aliases:
        spec = MODELS.get(aliases[model_id])
    return spec
