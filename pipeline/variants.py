"""The variant table: a variant name `rtmpose-<scale>_<keypoints>_<H>x<W>` fixes every tensor shape.

Scales are data (deepen/widen factors from mmpose's `configs/body_2d_keypoint/rtmpose/`), as in
timm's `model_cfgs`; a name is parsed, never looked up in a hand-written list of 75 entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import ConfigError
from pipeline.keypoints import KEYPOINT_SETS
from pipeline.model.rtmpose import ArchConfig, RTMPose

SCALES: dict[str, tuple[float, float]] = {
    "t": (0.167, 0.375),
    "s": (0.33, 0.5),
    "m": (0.67, 0.75),
    "l": (1.0, 1.0),
    "x": (1.33, 1.25),
}
INPUT_SIZES: tuple[tuple[int, int], ...] = ((256, 192), (384, 288), (256, 256))  # (H, W)

# mmpose's data preprocessor (RGB order); not stored in checkpoints.
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)
SIMCC_SPLIT_RATIO = 2.0

_NAME = re.compile(r"^rtmpose-(?P<scale>[a-z]+)_(?P<kpts>[a-z0-9]+)_(?P<h>\d+)x(?P<w>\d+)$")


@dataclass(frozen=True)
class Variant:
    scale: str
    keypoints: str
    input_hw: tuple[int, int]

    @property
    def name(self) -> str:
        h, w = self.input_hw
        return f"rtmpose-{self.scale}_{self.keypoints}_{h}x{w}"

    @property
    def num_keypoints(self) -> int:
        return len(KEYPOINT_SETS[self.keypoints])

    @property
    def keypoint_names(self) -> tuple[str, ...]:
        return KEYPOINT_SETS[self.keypoints]

    @property
    def simcc_shapes(self) -> dict[str, tuple[int, int]]:
        """Per-image output shapes [K, bins] keyed by output name."""
        h, w = self.input_hw
        k = self.num_keypoints
        return {"simcc_x": (k, int(w * SIMCC_SPLIT_RATIO)), "simcc_y": (k, int(h * SIMCC_SPLIT_RATIO))}

    def arch(self) -> ArchConfig:
        deepen, widen = SCALES[self.scale]
        return ArchConfig(deepen, widen, self.num_keypoints, self.input_hw, SIMCC_SPLIT_RATIO)

    def build_model(self) -> RTMPose:
        return RTMPose(self.arch())


def parse_variant(name: str) -> Variant:
    """Parse and validate a variant name; every failure names the allowed values."""
    match = _NAME.match(name)
    if not match:
        raise ConfigError(
            f"model.name={name!r} is not a variant name; expected rtmpose-<scale>_<keypoints>_<H>x<W>, "
            "e.g. rtmpose-m_coco17_256x192")
    scale, kpts = match["scale"], match["kpts"]
    hw = (int(match["h"]), int(match["w"]))
    if scale not in SCALES:
        raise ConfigError(f"model.name={name!r}: unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    if kpts not in KEYPOINT_SETS:
        raise ConfigError(
            f"model.name={name!r}: unknown keypoint set {kpts!r}; choose one of {', '.join(KEYPOINT_SETS)}")
    if hw not in INPUT_SIZES:
        sizes = ", ".join(f"{h}x{w}" for h, w in INPUT_SIZES)
        raise ConfigError(f"model.name={name!r}: input size {hw[0]}x{hw[1]} is not released; choose one of {sizes}")
    return Variant(scale, kpts, hw)


def all_variants() -> list[Variant]:
    return [Variant(s, k, hw) for s in SCALES for k in KEYPOINT_SETS for hw in INPUT_SIZES]
