"""The model description every stage reads: architecture, codec, preprocessing and keypoints.

A `ModelSpec` is what an mmpose config plus its dataset meta say about one top-down SimCC model
(RTMPose, RTMW, DWPose), reduced to the fields that fix the network and how to feed and decode it.
It is read off the user's file (pipeline/sources/describe.py), or made from a released preset
(pipeline/model/presets.py), and travels through the plan as a plain dict (`to_dict`/`from_dict`), so DVC
tracks it as a parameter and every stage rebuilds the same model from it.

Field names follow mmpose's own config vocabulary (`deepen_factor`, `in_featuremap_size`,
`simcc_split_ratio`, `bgr_to_rgb`, ...); mmpose writes sizes as (W, H), and so do the fields here
whose mmpose namesake does (`codec.input_size`, `head.in_featuremap_size`). `input_hw` is (H, W),
the order of the NCHW tensor.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from pipeline.core.errors import ConfigError

HEAD_TYPES = ("RTMCCHead", "RTMWHead")
# Characters allowed in a model name: it becomes a folder, a DVC stage key and half of a job name
# (`<name>.<target>`), so no dots, separators, spaces or control characters.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+-]{0,119}$")


@dataclass(frozen=True)
class BackboneSpec:
    """CSPNeXt (mmpose `models/backbones/cspnext.py`, mmdet's is the same network)."""

    deepen_factor: float
    widen_factor: float
    arch: str = "P5"
    expand_ratio: float = 0.5
    channel_attention: bool = True
    out_indices: tuple[int, ...] = (4,)
    norm_eps: float = 1e-5  # BatchNorm eps of the config's norm_cfg (SyncBN/BN default 1e-5)


@dataclass(frozen=True)
class NeckSpec:
    """CSPNeXtPAFPN (mmpose `models/necks/cspnext_pafpn.py`), RTMW's neck; `out_channels=None` only."""

    in_channels: tuple[int, ...]
    out_indices: tuple[int, ...] = (1, 2)
    num_csp_blocks: int = 2
    expand_ratio: float = 0.5
    norm_eps: float = 1e-5


@dataclass(frozen=True)
class HeadSpec:
    """RTMCCHead or RTMWHead (mmpose `models/heads/coord_cls_heads/`) with its GAU (`gau_cfg`)."""

    type: str
    in_channels: int
    out_channels: int  # number of keypoints K
    in_featuremap_size: tuple[int, int]  # (W, H) of the stride-32 map
    final_layer_kernel_size: int = 7
    hidden_dims: int = 256
    s: int = 128
    expansion_factor: int = 2
    act_fn: str = "SiLU"


@dataclass(frozen=True)
class CodecSpec:
    """SimCCLabel (mmpose `codecs/simcc_label.py`): outputs have input_size * split ratio bins per axis."""

    input_size: tuple[int, int]  # (W, H) in input pixels
    simcc_split_ratio: float = 2.0
    sigma: tuple[float, float] = (4.9, 5.66)  # label sigma (x, y) in bins; training only, recorded for reference


@dataclass(frozen=True)
class PreprocessSpec:
    """mmpose's PoseDataPreprocessor and top-down crop: mean/std apply in the network's channel order."""

    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    bgr_to_rgb: bool = True  # True: the network takes RGB (images are decoded BGR by mmcv/cv2)
    bbox_padding: float = 1.25

    @property
    def channel_order(self) -> str:
        return "RGB" if self.bgr_to_rgb else "BGR"

    @property
    def normalization(self) -> tuple:
        """What reaches the network from a crop: (mean, std, channel order); padding shapes the crop itself."""
        return (tuple(self.mean), tuple(self.std), self.bgr_to_rgb)

    def normalization_dict(self) -> dict[str, object]:
        return {"channels": self.channel_order, "mean": list(self.mean), "std": list(self.std)}

    def describe(self) -> str:
        """e.g. `RGB mean [123.675, 116.28, 103.53] std [58.395, 57.12, 57.375]`."""
        return (f"{self.channel_order} mean [{', '.join(f'{v:g}' for v in self.mean)}] "
                f"std [{', '.join(f'{v:g}' for v in self.std)}]")


@dataclass(frozen=True)
class KeypointSpec:
    """Dataset meta: names by index, limbs (index pairs) for drawing, and flip partners."""

    dataset_name: str
    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...] = ()
    flip_indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """One top-down SimCC pose model: `name` names its artifacts; the rest fixes the network.

    `backbone` and `head` are None where the model arrives as an ONNX graph: the graph is then the
    network, and only its I/O (codec), preprocessing and keypoints are described.
    """

    name: str
    codec: CodecSpec
    preprocess: PreprocessSpec
    keypoints: KeypointSpec
    backbone: Optional[BackboneSpec] = None
    neck: Optional[NeckSpec] = None
    head: Optional[HeadSpec] = None
    source: dict[str, str] = field(default_factory=dict, compare=False)  # where each part was read from

    # ------------------------------------------------------------------------------------- derived facts
    @property
    def input_hw(self) -> tuple[int, int]:
        """(H, W) of the input tensor in pixels."""
        w, h = self.codec.input_size
        return int(h), int(w)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints.names)

    @property
    def keypoint_names(self) -> tuple[str, ...]:
        return self.keypoints.names

    @property
    def simcc_split_ratio(self) -> float:
        return self.codec.simcc_split_ratio

    @property
    def simcc_shapes(self) -> dict[str, tuple[int, int]]:
        """Per-image output shapes [K, bins] keyed by output name."""
        h, w = self.input_hw
        ratio = self.codec.simcc_split_ratio
        return {"simcc_x": (self.num_keypoints, int(w * ratio)), "simcc_y": (self.num_keypoints, int(h * ratio))}

    @property
    def has_network(self) -> bool:
        """Whether the description fixes a network we build in PyTorch (not so for an ONNX graph)."""
        return self.backbone is not None and self.head is not None

    def renamed(self, name: str) -> "ModelSpec":
        return dataclasses.replace(self, name=check_name(name, "model.name"))

    # ------------------------------------------------------------------------------------- plain dicts
    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready: tuples become lists, `neck` None stays None."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        """Inverse of `to_dict`; a missing or unknown key raises ConfigError naming it."""
        try:
            parts = {key: _build(cls_, data[key]) if data.get(key) else None
                     for key, cls_ in (("backbone", BackboneSpec), ("neck", NeckSpec), ("head", HeadSpec))}
            spec = cls(
                name=data["name"],
                codec=_build(CodecSpec, data["codec"]),
                preprocess=_build(PreprocessSpec, data["preprocess"]),
                keypoints=_build(KeypointSpec, data["keypoints"]),
                source=dict(data.get("source") or {}),
                **parts,
            )
        except KeyError as exc:
            raise ConfigError(f"model description lacks {exc.args[0]!r}; recompose with `python -m pipeline.params`") from None
        validate(spec)
        return spec


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def _build(cls: type, data: Any) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    data = dict(data)
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"model description: unknown {cls.__name__} keys {unknown}")
    return cls(**{k: _tuples(v) for k, v in data.items()})


def check_name(name: str, key: str) -> str:
    """A model name usable as a folder and a DVC stage key; refuses separators and control characters."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(f"{key}={name!r} is not a usable model name: use letters, digits, '_', '+' and '-' "
                          "(no dots, slashes, spaces or control characters), at most 120 characters")
    return name


def safe_name(text: str) -> str:
    """A derived name made usable: every run of other characters becomes one '_'."""
    cleaned = re.sub(r"[^A-Za-z0-9_+-]+", "_", text).strip("_+-")[:120]
    return cleaned or "model"


def feature_map_size(input_size: tuple[int, int]) -> tuple[int, int]:
    """(W, H) of CSPNeXt's stride-32 map: five stride-2 3x3 convolutions with padding 1 round up.

    mmpose's configs write `in_featuremap_size=tuple(s // 32 for s in input_size)`, equal to this for
    multiples of 32 (every released size); a model trained at another size had to set the rounded-up one."""
    return tuple(-(-int(s) // 32) for s in input_size)  # type: ignore[return-value]


def validate(spec: ModelSpec) -> None:
    """Cross-field rules of the networks we build; each error names the field and the fix."""
    check_name(spec.name, "model.name")
    h, w = spec.input_hw
    if h < 32 or w < 32:
        raise ConfigError(f"{spec.name}: input size {w}x{h} (W x H) must be at least 32 pixels each way; "
                          "set model.input_size=[W,H]")
    if spec.head is not None:
        if spec.head.type not in HEAD_TYPES:
            raise ConfigError(f"{spec.name}: head type {spec.head.type!r} is not supported; "
                              f"supported: {', '.join(HEAD_TYPES)}")
        expected = feature_map_size((w, h))
        if tuple(spec.head.in_featuremap_size) != expected:
            raise ConfigError(f"{spec.name}: head.in_featuremap_size {list(spec.head.in_featuremap_size)} does not "
                              f"fit input size {w}x{h}: CSPNeXt gives a {expected[0]}x{expected[1]} map")
        if spec.head.type == "RTMWHead" and (h % 32 or w % 32):
            raise ConfigError(f"{spec.name}: RTMW joins its stride-16 and upsampled stride-32 maps, which needs an "
                              f"input size in multiples of 32, not {w}x{h}")
        if spec.head.out_channels != spec.num_keypoints:
            raise ConfigError(f"{spec.name}: {spec.num_keypoints} keypoint names for {spec.head.out_channels} "
                              "keypoints; set model.keypoint_names to a list of exactly that many names")
        if spec.head.type == "RTMWHead" and spec.neck is None:
            raise ConfigError(f"{spec.name}: RTMWHead needs the CSPNeXtPAFPN neck")
    if spec.num_keypoints < 1:
        raise ConfigError(f"{spec.name}: the model has no keypoints")
    if spec.codec.simcc_split_ratio <= 0 or (w * spec.codec.simcc_split_ratio) % 1 or (h * spec.codec.simcc_split_ratio) % 1:
        raise ConfigError(f"{spec.name}: simcc_split_ratio {spec.codec.simcc_split_ratio} must give whole bin counts")
    k = spec.num_keypoints
    if any(not (0 <= a < k and 0 <= b < k) for a, b in spec.keypoints.skeleton):
        raise ConfigError(f"{spec.name}: skeleton links refer to keypoints outside 0..{k - 1}")
    if len(spec.preprocess.mean) != 3 or len(spec.preprocess.std) != 3 or min(spec.preprocess.std) <= 0:
        raise ConfigError(f"{spec.name}: mean and std need three values each, std positive")


def generic_keypoint_names(count: int) -> tuple[str, ...]:
    """Names for a model whose file names none: `kpt_0`, `kpt_1`, ..."""
    return tuple(f"kpt_{i}" for i in range(count))
