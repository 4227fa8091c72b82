"""Released RTMPose presets: `rtmpose-<scale>_<keypoints>_<H>x<W>` names a model description.

A preset is a shortcut for the description a released mmpose config gives (scales from mmpose's
`configs/body_2d_keypoint/rtmpose/`, as timm's `model_cfgs`): CSPNeXt P5 with the scale's
deepen/widen factors, RTMCCHead, SimCC split ratio 2, ImageNet RGB mean/std. Names are parsed, never
looked up in a hand-written list. Files describe themselves (pipeline/sources/describe.py); presets serve
seeded synthetic weights, the full released matrix, and a cross-check of a file against a name.
"""

from __future__ import annotations

import re

from pipeline.core.errors import ConfigError
from pipeline.model.keypoints import KEYPOINT_SETS, skeleton_for
from pipeline.model.rtmpose import stage_channels
from pipeline.model.spec import (
    BackboneSpec,
    CodecSpec,
    HeadSpec,
    KeypointSpec,
    ModelSpec,
    PreprocessSpec,
    feature_map_size,
)

SCALES: dict[str, tuple[float, float]] = {
    "t": (0.167, 0.375),
    "s": (0.33, 0.5),
    "m": (0.67, 0.75),
    "l": (1.0, 1.0),
    "x": (1.33, 1.25),
}
INPUT_SIZES: tuple[tuple[int, int], ...] = ((256, 192), (384, 288), (256, 256))  # (H, W)

_NAME = re.compile(r"^rtmpose-(?P<scale>[a-z]+)_(?P<kpts>[a-z0-9]+)_(?P<h>\d+)x(?P<w>\d+)$")


def preset_spec(name: str) -> ModelSpec:
    """Parse and validate a preset name into its description; every failure names the allowed values."""
    match = _NAME.match(name or "")
    if not match:
        raise ConfigError(
            f"model={name!r} is not a preset name; expected rtmpose-<scale>_<keypoints>_<H>x<W>, e.g. "
            "rtmpose-m_coco17_256x192, or set model.checkpoint=<file> to let a model file describe itself")
    scale, kpts = match["scale"], match["kpts"]
    hw = (int(match["h"]), int(match["w"]))
    if scale not in SCALES:
        raise ConfigError(f"model={name!r}: unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    if kpts not in KEYPOINT_SETS:
        raise ConfigError(f"model={name!r}: unknown keypoint set {kpts!r}; choose one of {', '.join(KEYPOINT_SETS)}")
    if hw not in INPUT_SIZES:
        sizes = ", ".join(f"{h}x{w}" for h, w in INPUT_SIZES)
        raise ConfigError(f"model={name!r}: input size {hw[0]}x{hw[1]} is not released; choose one of {sizes} "
                          "(other sizes come from a model file: model.checkpoint=<file>)")
    return rtmpose_spec(name, scale, kpts, hw)


def rtmpose_spec(name: str, scale: str, keypoint_set: str, input_hw: tuple[int, int]) -> ModelSpec:
    """The description of a released RTMPose config of this scale, keypoint set and size."""
    deepen, widen = SCALES[scale]
    h, w = input_hw
    names = KEYPOINT_SETS[keypoint_set]
    return ModelSpec(
        name=name,
        backbone=BackboneSpec(deepen_factor=deepen, widen_factor=widen),
        head=HeadSpec(type="RTMCCHead", in_channels=stage_channels(widen)[4], out_channels=len(names),
                      in_featuremap_size=feature_map_size((w, h))),
        codec=CodecSpec(input_size=(w, h)),
        preprocess=PreprocessSpec(),
        keypoints=KeypointSpec(dataset_name=keypoint_set, names=names, skeleton=skeleton_for(names)),
        source={"description": f"preset {name}"},
    )


def all_presets() -> list[str]:
    """Every released preset name: 5 scales x 5 keypoint sets x 3 input sizes."""
    return [f"rtmpose-{s}_{k}_{h}x{w}" for s in SCALES for k in KEYPOINT_SETS for h, w in INPUT_SIZES]


def scale_of(backbone: BackboneSpec) -> str | None:
    """The released scale letter whose factors these are, if any (informational: names, messages)."""
    return next((s for s, (d, w) in SCALES.items()
                 if abs(d - backbone.deepen_factor) < 1e-6 and abs(w - backbone.widen_factor) < 1e-6), None)
