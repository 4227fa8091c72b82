"""The one place that knows mmpose's config vocabulary: config text and dataset meta <-> ModelSpec.

mmpose checkpoints carry `meta.cfg`, mmengine's `Config.pretty_text`: a Python module of assignments
whose values are `dict(...)` calls, lists, tuples and literals, already resolved. `parse_config_text`
reads it with an AST walk that accepts only those (nothing is imported, called or executed; the URLs
in `init_cfg` are never fetched). `spec_from_config` maps the `model` and `codec` entries onto a
`ModelSpec`, with the defaults of the mmpose 1.3.2 classes where a key is absent, and refuses, naming
the key, every setting our network does not implement. `keypoints_from_dataset_meta` reads
`meta.dataset_meta` (mmpose `datasets/datasets/utils.py:parse_pose_metainfo`). `config_text` writes
a spec back as a config of the same form (the demo checkpoint's meta), which `parse_config_text` reads.

Upstream defaults (mmpose 1.3.2): CSPNeXt `models/backbones/cspnext.py` (arch P5, expand_ratio 0.5,
channel_attention True, out_indices (2, 3, 4), norm_cfg BN eps 1e-3, act SiLU); CSPNeXtPAFPN
`models/necks/cspnext_pafpn.py` (out_indices (0, 1, 2), num_csp_blocks 3, norm_cfg BN eps 1e-3);
RTMCCHead/RTMWHead (simcc_split_ratio 2.0, final_layer_kernel_size 1, gau_cfg act_fn ReLU);
PoseDataPreprocessor (mmengine ImgDataPreprocessor: bgr_to_rgb False); SimCCLabel (`codecs/simcc_label.py`).
Of SimCCLabel's settings the split ratio is honoured everywhere (it scales bins to pixels); `normalize`
scales only the training targets (`encode`), so it is read and ignored; `use_dark` (DARK refinement of
the decoded maxima) and `decode_visibility` (a visibility output) change what `decode` returns and are
refused (mmdeploy#2316: plain argmax moved DARK-decoded keypoints by up to 18.8 px on photo crops).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from pipeline.core.errors import InputError
from pipeline.model.rtmpose import stage_channels
from pipeline.model.spec import (
    BackboneSpec,
    CodecSpec,
    HeadSpec,
    KeypointSpec,
    ModelSpec,
    NeckSpec,
    PreprocessSpec,
    generic_keypoint_names,
)

TORCH_BN_EPS = 1e-5  # nn.BatchNorm2d / SyncBN default, what `norm_cfg=dict(type='SyncBN')` gives
MMCV_DEFAULT_BN_EPS = 1e-3  # CSPNeXt's and CSPNeXtPAFPN's own default norm_cfg
SILU_NAMES = ("SiLU", "Swish")
DISTILLERS = ("PoseEstimatorDistiller", "DWPoseDistiller")
# SimCCLabel decode settings this project's decode (pipeline/model/decode.py) does not implement, with why.
UNIMPLEMENTED_DECODE = {
    "use_dark": "DARK refinement is not implemented by this project's decode (plain argmax moved mmpose's "
                "DARK-decoded keypoints by up to 18.8 px on photo crops, issue #21)",
    "decode_visibility": "the visibility output of mmpose's decode is not produced by this project's decode",
}


# ----------------------------------------------------------------------------------------- config text


class _LiteralReader(ast.NodeVisitor):
    """Evaluates literals, containers, unary minus and `dict(key=value)` calls; refuses everything else."""

    def read(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            values = [self.read(e) for e in node.elts]
            return values if isinstance(node, ast.List) else tuple(values)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise ValueError("dict unpacking")
            return {self.read(k): self.read(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self.read(node.operand)
            if not isinstance(value, (int, float)):
                raise ValueError("unary operator on a non-number")
            return -value if isinstance(node.op, ast.USub) else value
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"
                and not node.args and all(k.arg is not None for k in node.keywords)):
            return {k.arg: self.read(k.value) for k in node.keywords}
        raise ValueError(type(node).__name__)


def parse_config_text(text: str) -> dict[str, Any]:
    """Top-level assignments of a config text whose values are literals or `dict(...)` calls.

    Assignments of any other form (names, lambdas, other calls) are skipped, not evaluated.
    Raises InputError when the text is not Python at all.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise InputError(f"meta.cfg is not a config text (line {exc.lineno}: {exc.msg})") from None
    reader, result = _LiteralReader(), {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                result[stmt.targets[0].id] = reader.read(stmt.value)
            except (ValueError, RecursionError):
                continue
    return result


# ----------------------------------------------------------------------------------------- config -> spec


class _Section:
    """A config dict that remembers its path, so every refusal names the key (`model.backbone.arch`)."""

    def __init__(self, data: Any, path: str, source: str):
        if not isinstance(data, Mapping):
            raise InputError(f"{source}: {path} is {type(data).__name__}, not a dict")
        self.data, self.path, self.source = data, path, source

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def section(self, key: str) -> "_Section":
        if key not in self.data:
            raise InputError(f"{self.source}: {self.path}.{key} is missing")
        return _Section(self.data[key], f"{self.path}.{key}", self.source)

    def type(self) -> str:
        """The registered type without a scope prefix (`mmdet.CSPNeXt` -> `CSPNeXt`)."""
        return str(self.data.get("type", "")).split(".")[-1]

    def refuse(self, key: str, value: Any, why: str) -> InputError:
        return InputError(f"{self.source}: {self.path}.{key}={value!r} is not supported ({why})")

    def require(self, key: str, allowed: tuple, default: Any, why: str) -> Any:
        value = self.data.get(key, default)
        if value not in allowed:
            raise self.refuse(key, value, why)
        return value


def _bn_eps(section: _Section, default_eps: float) -> float:
    norm = section.get("norm_cfg")
    if norm is None:
        return default_eps
    kind = str(norm.get("type", "BN"))
    if kind not in ("BN", "SyncBN", "BN2d"):
        raise section.refuse("norm_cfg", norm, "only BatchNorm is implemented")
    return float(norm.get("eps", TORCH_BN_EPS))


def _activation(section: _Section, key: str, default: str) -> str:
    cfg = section.get(key)
    kind = default if cfg is None else str(cfg.get("type", default))
    if kind not in SILU_NAMES:
        raise section.refuse(key, cfg, "only SiLU (Swish) is implemented in CSPNeXt and its neck")
    return "SiLU"


def _backbone(section: _Section) -> BackboneSpec:
    if section.type() != "CSPNeXt":
        raise section.refuse("type", section.get("type"), "only CSPNeXt backbones (RTMPose, RTMW, DWPose)")
    section.require("arch", ("P5",), "P5", "only the P5 arch is implemented")
    section.require("use_depthwise", (False,), False, "depthwise stages are not implemented")
    spp = section.get("spp_kernel_sizes", (5, 9, 13))
    if tuple(spp) != (5, 9, 13):
        raise section.refuse("spp_kernel_sizes", spp, "only (5, 9, 13) is implemented")
    _activation(section, "act_cfg", "SiLU")
    out_indices = tuple(int(i) for i in section.get("out_indices", (2, 3, 4)))
    if not out_indices or any(not 0 <= i <= 4 for i in out_indices):
        raise section.refuse("out_indices", out_indices, "indices must lie in 0..4")
    return BackboneSpec(deepen_factor=float(section.get("deepen_factor", 1.0)),
                        widen_factor=float(section.get("widen_factor", 1.0)),
                        expand_ratio=float(section.get("expand_ratio", 0.5)),
                        channel_attention=bool(section.get("channel_attention", True)),
                        out_indices=out_indices, norm_eps=_bn_eps(section, MMCV_DEFAULT_BN_EPS))


def _neck(section: _Section, backbone: BackboneSpec) -> NeckSpec:
    if section.type() != "CSPNeXtPAFPN":
        raise section.refuse("type", section.get("type"), "the only neck implemented is RTMW's CSPNeXtPAFPN")
    section.require("out_channels", (None,), None, "out convs are not implemented (RTMW has none)")
    section.require("use_depthwise", (False,), False, "depthwise convolutions are not implemented")
    upsample = section.get("upsample_cfg")
    if upsample is not None and (upsample.get("mode", "nearest") != "nearest" or upsample.get("scale_factor", 2) != 2):
        raise section.refuse("upsample_cfg", upsample, "only nearest upsampling by 2 is implemented")
    _activation(section, "act_cfg", "Swish")
    in_channels = tuple(int(c) for c in section.get("in_channels", ()))
    channels = stage_channels(backbone.widen_factor)
    expected = tuple(channels[i] for i in backbone.out_indices)
    if in_channels != expected:
        raise section.refuse("in_channels", list(in_channels),
                             f"the backbone's out_indices {list(backbone.out_indices)} give {list(expected)}")
    return NeckSpec(in_channels=in_channels,
                    out_indices=tuple(int(i) for i in section.get("out_indices", (0, 1, 2))),
                    num_csp_blocks=int(section.get("num_csp_blocks", 3)),
                    expand_ratio=float(section.get("expand_ratio", 0.5)),
                    norm_eps=_bn_eps(section, MMCV_DEFAULT_BN_EPS))


def _head(section: _Section) -> tuple[HeadSpec, tuple[int, int], float]:
    kind = section.type()
    if kind not in ("RTMCCHead", "RTMWHead"):
        raise section.refuse("type", section.get("type"), "supported heads: RTMCCHead, RTMWHead")
    gau = _Section(section.get("gau_cfg", {}), f"{section.path}.gau_cfg", section.source)
    gau.require("use_rel_bias", (False,), False, "relative position bias is off in every released model")
    gau.require("pos_enc", (False,), False, "rotary position encoding is off in every released model")
    act = gau.require("act_fn", ("SiLU", "ReLU"), "ReLU", "the GAU implements SiLU and ReLU")
    in_channels = section.get("in_channels")
    if not isinstance(in_channels, int):
        raise section.refuse("in_channels", in_channels, "one input map is expected")
    input_size = tuple(int(v) for v in section.get("input_size", ()))
    if len(input_size) != 2:
        raise section.refuse("input_size", section.get("input_size"), "expected (W, H)")
    head = HeadSpec(type=kind, in_channels=in_channels, out_channels=int(section.get("out_channels", 0)),
                    in_featuremap_size=tuple(int(v) for v in section.get("in_featuremap_size", ())),
                    final_layer_kernel_size=int(section.get("final_layer_kernel_size", 1)),
                    hidden_dims=int(gau.get("hidden_dims", 256)), s=int(gau.get("s", 128)),
                    expansion_factor=int(gau.get("expansion_factor", 2)), act_fn=act)
    return head, input_size, float(section.get("simcc_split_ratio", 2.0))


def _refuse_decode_settings(codec: _Section) -> None:
    """Raise InputError naming the first SimCCLabel decode setting that is on but not implemented here."""
    for key, why in UNIMPLEMENTED_DECODE.items():
        if codec.get(key, False):
            raise InputError(f"{codec.source}: {codec.path}.{key}={codec.get(key)!r}: {why}; to convert it anyway, "
                             f"save the checkpoint with {key}=False in meta.cfg (same weights, argmax decoding)")


def spec_from_config(config: Mapping[str, Any], name: str, keypoints: KeypointSpec | None,
                     source: str) -> ModelSpec:
    """The description a parsed mmpose config gives; `keypoints` from the dataset meta (or generic names).

    Raises InputError naming the config key of anything not implemented, and for a distiller config,
    whose student is a path to another file (`describe` then falls back to the tensor shapes).
    """
    model = _Section(config.get("model"), "model", source) if "model" in config else None
    if model is None:
        raise InputError(f"{source}: the config has no `model` entry")
    if model.type() in DISTILLERS:
        raise InputError(f"{source}: model.type={model.get('type')!r} is a distiller; its student is described "
                         "by another file")
    if model.type() != "TopdownPoseEstimator":
        raise model.refuse("type", model.get("type"), "only top-down pose estimators are converted")
    backbone = _backbone(model.section("backbone"))
    neck = _neck(model.section("neck"), backbone) if model.get("neck") else None
    head, head_size, head_ratio = _head(model.section("head"))
    codec_cfg = model.section("head").get("decoder") or config.get("codec") or {}
    codec_sec = _Section(codec_cfg, "codec", source)
    if codec_cfg and codec_sec.type() not in ("SimCCLabel", ""):
        raise codec_sec.refuse("type", codec_sec.get("type"), "only SimCC codecs are converted")
    codec_size = tuple(int(v) for v in codec_sec.get("input_size", head_size))
    if codec_size != head_size:
        raise InputError(f"{source}: codec input_size {list(codec_size)} differs from model.head.input_size "
                         f"{list(head_size)}")
    ratio = float(codec_sec.get("simcc_split_ratio", head_ratio))
    if ratio != head_ratio:
        raise InputError(f"{source}: codec simcc_split_ratio {ratio} differs from model.head.simcc_split_ratio "
                         f"{head_ratio}")
    _refuse_decode_settings(codec_sec)
    sigma = tuple(float(v) for v in codec_sec.get("sigma", (4.9, 5.66)))
    pre = _Section(model.get("data_preprocessor") or {}, "model.data_preprocessor", source)
    preprocess = PreprocessSpec(mean=tuple(float(v) for v in pre.get("mean", (0.0, 0.0, 0.0))),
                                std=tuple(float(v) for v in pre.get("std", (1.0, 1.0, 1.0))),
                                # either swap flips mmcv's BGR decode, so the network sees RGB
                                bgr_to_rgb=bool(pre.get("bgr_to_rgb") or pre.get("rgb_to_bgr")))
    if keypoints is None or len(keypoints.names) != head.out_channels:
        keypoints = KeypointSpec(dataset_name=keypoints.dataset_name if keypoints else "custom",
                                 names=generic_keypoint_names(head.out_channels))
    return ModelSpec(name=name, backbone=backbone, neck=neck, head=head,
                     codec=CodecSpec(input_size=head_size, simcc_split_ratio=ratio,
                                     sigma=sigma if len(sigma) == 2 else (sigma[0], sigma[0])),
                     preprocess=preprocess, keypoints=keypoints,
                     source={"architecture": f"{source} (meta.cfg)"})


# ----------------------------------------------------------------------------------------- dataset meta


def keypoints_from_dataset_meta(meta: Any, count: int | None = None) -> KeypointSpec | None:
    """Names, skeleton and flip indices from `meta.dataset_meta`; None when it names no keypoints.

    `count` (the head's K), when given, must equal the number of names, else the names are not used.
    """
    if not isinstance(meta, Mapping):
        return None
    id2name = meta.get("keypoint_id2name")
    if not isinstance(id2name, Mapping) or not id2name:
        return None
    try:
        names = tuple(str(id2name[i]) for i in range(len(id2name)))
    except KeyError:
        return None
    if count is not None and len(names) != count:
        return None
    links = meta.get("skeleton_links") or ()
    skeleton = tuple((int(a), int(b)) for a, b in links if 0 <= int(a) < len(names) and 0 <= int(b) < len(names))
    flips = tuple(int(i) for i in (meta.get("flip_indices") or ()))
    return KeypointSpec(dataset_name=str(meta.get("dataset_name") or "custom"), names=names, skeleton=skeleton,
                        flip_indices=flips if len(flips) == len(names) else ())


# ----------------------------------------------------------------------------------------- spec -> config


def model_config(spec: ModelSpec) -> dict[str, Any]:
    """The `model` entry of an mmpose config that builds this network (types as mmpose registers them)."""
    b, h = spec.backbone, spec.head
    model: dict[str, Any] = {
        "type": "TopdownPoseEstimator",
        "data_preprocessor": {"type": "PoseDataPreprocessor", "mean": list(spec.preprocess.mean),
                              "std": list(spec.preprocess.std), "bgr_to_rgb": spec.preprocess.bgr_to_rgb},
        "backbone": {"type": "CSPNeXt", "arch": b.arch, "expand_ratio": b.expand_ratio,
                     "deepen_factor": b.deepen_factor, "widen_factor": b.widen_factor,
                     "out_indices": tuple(b.out_indices), "channel_attention": b.channel_attention,
                     "norm_cfg": {"type": "SyncBN", "eps": b.norm_eps}, "act_cfg": {"type": "SiLU"}},
        "head": {"type": h.type, "in_channels": h.in_channels, "out_channels": h.out_channels,
                 "input_size": tuple(spec.codec.input_size), "in_featuremap_size": tuple(h.in_featuremap_size),
                 "simcc_split_ratio": spec.codec.simcc_split_ratio,
                 "final_layer_kernel_size": h.final_layer_kernel_size,
                 "gau_cfg": {"hidden_dims": h.hidden_dims, "s": h.s, "expansion_factor": h.expansion_factor,
                             "dropout_rate": 0.0, "drop_path": 0.0, "act_fn": h.act_fn, "use_rel_bias": False,
                             "pos_enc": False},
                 "decoder": codec_config(spec)},
        "test_cfg": {"flip_test": False},
    }
    if spec.neck is not None:
        n = spec.neck
        model["neck"] = {"type": "CSPNeXtPAFPN", "in_channels": list(n.in_channels), "out_channels": None,
                         "out_indices": tuple(n.out_indices), "num_csp_blocks": n.num_csp_blocks,
                         "expand_ratio": n.expand_ratio, "norm_cfg": {"type": "SyncBN", "eps": n.norm_eps},
                         "act_cfg": {"type": "SiLU"}}
    return model


def codec_config(spec: ModelSpec) -> dict[str, Any]:
    return {"type": "SimCCLabel", "input_size": tuple(spec.codec.input_size), "sigma": tuple(spec.codec.sigma),
            "simcc_split_ratio": spec.codec.simcc_split_ratio, "normalize": False, "use_dark": False}


def _format(value: Any, indent: int) -> str:
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        if not value:
            return "dict()"
        items = ",\n".join(f"{pad}{k}={_format(v, indent + 4)}" for k, v in value.items())
        return f"dict(\n{items})"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_format(v, indent) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    return repr(value)


def config_text(spec: ModelSpec) -> str:
    """A config text in the form of mmengine's pretty_text (`codec = dict(...)`, `model = dict(...)`)."""
    return (f"codec = {_format(codec_config(spec), 0)}\n"
            f"model = {_format(model_config(spec), 0)}\n")


def dataset_meta(keypoints: KeypointSpec) -> dict[str, Any]:
    """`meta.dataset_meta` as mmpose's parse_pose_metainfo names its keys (the parts a spec holds)."""
    return {"dataset_name": keypoints.dataset_name, "num_keypoints": len(keypoints.names),
            "keypoint_id2name": dict(enumerate(keypoints.names)),
            "keypoint_name2id": {n: i for i, n in enumerate(keypoints.names)},
            "skeleton_links": [list(link) for link in keypoints.skeleton],
            "flip_indices": list(keypoints.flip_indices)}
