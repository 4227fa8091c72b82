"""Describe the model a config points at: the file describes the model, the model is built from that.

`describe(model_cfg)` returns the `ModelSpec` of:
- a preset (`model=rtmpose-m_coco17_256x192`, no checkpoint): the released config's description;
- an mmpose `.pth` of any layout (pipeline/sources/checkpoint.py): `meta.cfg` and `meta.dataset_meta`
  (pipeline/sources/mmpose_config.py); where they are absent (bare state_dicts, EMA files, training
  checkpoints without cfg, distillers whose student lives in another file) the tensor shapes, which
  fix the scale, the keypoint count K, the head kind and, with the SimCC split ratio, the input size;
- an ONNX graph (ours, MMDeploy's, rtmlib's, DWPose's): our metadata if present, else the I/O dims,
  with a symbolic keypoint dimension pinned by running the graph once; an fp16 ONNX (fp16 weights, float32
  or fp16 I/O, as onnxconverter-common writes it) is described, and used, in its float32 form
  (pipeline/sources/fp16_onnx.py);
- an MMDeploy SDK folder or zip (`deploy.json`, `pipeline.json`, `detail.json` + `end2end.onnx`, as
  OpenMMLab distributes every released ONNX): `pipeline.json` gives input size, mean/std, colour
  order and split ratio (pipeline/sources/sdk.py reads it).
`model.*` overrides (input_size, mean, std, bgr_to_rgb, simcc_split_ratio, keypoint_names) fill or
correct what the file leaves open; a preset given together with a file must agree with it.
Errors are InputError/ConfigError with one line naming what is missing and the key that supplies it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.config import REPO_ROOT
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.onnx_io import (
    check_finite_weights,
    get_metadata,
    io_dims,
    load_onnx,
    load_onnx_bytes,
    pin_keypoint_dim,
)
from pipeline.model.presets import SCALES, preset_spec, scale_of
from pipeline.model.rtmpose import P5_STAGES, stage_channels
from pipeline.model.spec import (
    BackboneSpec,
    CodecSpec,
    HeadSpec,
    KeypointSpec,
    ModelSpec,
    NeckSpec,
    PreprocessSpec,
    feature_map_size,
    generic_keypoint_names,
    safe_name,
    validate,
)
from pipeline.sources.checkpoint import load_weights
from pipeline.sources.fp16_onnx import describe_fp16, float32_form
from pipeline.sources.mmpose_config import keypoints_from_dataset_meta, parse_config_text, spec_from_config
from pipeline.sources.sdk import SDK_REQUIRED_FILES, read_sdk, sdk_facts

METADATA_SPEC_KEY = "model_spec"  # our ONNX metadata_props entry holding ModelSpec.to_dict() as JSON
_TIMESTAMP = re.compile(r"_\d{8}_\d{6}$")  # mmengine's experiment_name = <config stem>_<YYYYmmdd_HHMMSS>


# ----------------------------------------------------------------------------------------- sources


def resolve_path(path: str) -> Path:
    """Relative to the working directory, falling back to the repository (where DVC runs stages)."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return REPO_ROOT / candidate


def source_kind(path: Path) -> str:
    """'pth' | 'onnx' | 'sdk' (a folder or .zip with deploy.json) for a model file path."""
    if path.is_dir():
        if all((path / name).is_file() for name in SDK_REQUIRED_FILES):
            return "sdk"
        raise InputError(f"model.checkpoint={path} is a folder without {' and '.join(SDK_REQUIRED_FILES)}; point "
                         "it at an MMDeploy SDK folder, a .zip of one, a .pth or an .onnx file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".zip":
        return "sdk"
    return "pth"


# ----------------------------------------------------------------------------------------- state_dict shapes


def _count(state: Mapping[str, Any], prefix: str) -> int:
    """Number of numbered children under `prefix` (e.g. blocks of a CSP layer)."""
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def _deepen_factor(blocks: list[int]) -> float:
    """A deepen factor that gives these per-stage block counts (a released one where it fits)."""
    def counts(d: float) -> list[int]:
        return [max(round(n * d), 1) for _, _, n, *_ in P5_STAGES]

    for deepen, _ in SCALES.values():
        if counts(deepen) == blocks:
            return deepen
    for step in range(1, 400):  # any other factor that reproduces the counts builds the same network
        if counts(step / 100) == blocks:
            return step / 100
    raise InputError(f"the backbone's blocks per stage {blocks} fit no CSPNeXt deepen factor")


def spec_from_shapes(state: Mapping[str, Any], name: str, split_ratio: float, input_size: tuple[int, int] | None,
                     source: str) -> ModelSpec:
    """What the tensor shapes fix: scale, K, head kind and GAU size, neck, and the input size."""
    try:
        stem = state["backbone.stem.2.conv.weight"].shape[0]
        csp = "backbone.stage1.1" if "backbone.stage1.1.main_conv.conv.weight" in state else None
        rtmw = "head.mlp2.1.weight" in state
        final = state["head.final_layer.conv.weight" if rtmw else "head.final_layer.weight"]
        cls_x, cls_y = state["head.cls_x.weight"], state["head.cls_y.weight"]
        flat = state["head.mlp.1.weight"].shape[1]
        hidden = cls_x.shape[1]
        uv = state["head.gau.uv.weight"]
        gamma = state["head.gau.gamma"]
    except (KeyError, AttributeError, IndexError) as exc:
        raise InputError(f"model.checkpoint={source} has no RTMPose-family weights "
                         f"({exc.args[0] if exc.args else 'shape'} missing): expected CSPNeXt backbone.* and "
                         "RTMCCHead/RTMWHead head.* keys") from None
    widen = stem / 64
    if csp is None:
        raise InputError(f"model.checkpoint={source}: backbone.stage1.1 is not a CSP layer; not a CSPNeXt backbone")
    blocks = []
    for i in range(1, 5):
        index = 2 if i == 4 else 1  # stage 4 has the SPP block before its CSP layer
        blocks.append(_count(state, f"backbone.stage{i}.{index}.blocks."))
    mid = state["backbone.stage1.1.main_conv.conv.weight"].shape[0]
    expand = mid / stage_channels(widen)[1]
    attention = "backbone.stage1.1.attention.fc.weight" in state
    k = int(final.shape[0])
    bins_x, bins_y = int(cls_x.shape[0]), int(cls_y.shape[0])
    given = input_size is not None
    if input_size is None:
        if bins_x % split_ratio or bins_y % split_ratio:
            raise InputError(f"model.checkpoint={source}: SimCC bins {bins_x}x{bins_y} do not fit split ratio "
                             f"{split_ratio}; set model.simcc_split_ratio (and model.input_size=[W,H])")
        input_size = (int(bins_x / split_ratio), int(bins_y / split_ratio))
    w, h = input_size
    fw, fh = feature_map_size((w, h))
    if fw * fh != flat or int(w * split_ratio) != bins_x or int(h * split_ratio) != bins_y:
        if given:
            raise ConfigError(f"model.input_size={[w, h]} contradicts model.checkpoint={source}: its head has "
                              f"{bins_x}x{bins_y} SimCC bins and {flat} tokens")
        raise InputError(f"model.checkpoint={source}: its head has {bins_x}x{bins_y} SimCC bins and {flat} tokens, "
                         f"which input size {w}x{h} at split ratio {split_ratio} does not give; set "
                         "model.input_size=[W,H] and model.simcc_split_ratio to the values it was trained with")
    neck = None
    out_indices: tuple[int, ...] = (4,)
    if rtmw:
        levels = _count(state, "neck.top_down_blocks.") + 1
        out_indices = tuple(range(5 - levels, 5))
        channels = stage_channels(widen)
        neck = NeckSpec(in_channels=tuple(channels[i] for i in out_indices), out_indices=(levels - 2, levels - 1),
                        num_csp_blocks=_count(state, "neck.top_down_blocks.0.blocks."),
                        expand_ratio=state["neck.top_down_blocks.0.main_conv.conv.weight"].shape[0]
                        / stage_channels(widen)[out_indices[-2]])
    backbone = BackboneSpec(deepen_factor=_deepen_factor(blocks), widen_factor=widen, expand_ratio=expand,
                            channel_attention=attention, out_indices=out_indices)
    head = HeadSpec(type="RTMWHead" if rtmw else "RTMCCHead", in_channels=int(final.shape[1]), out_channels=k,
                    in_featuremap_size=(fw, fh), final_layer_kernel_size=int(final.shape[-1]),
                    hidden_dims=int(hidden), s=int(gamma.shape[1]),
                    expansion_factor=int((uv.shape[0] - gamma.shape[1]) // 2 // hidden))
    return ModelSpec(name=name, backbone=backbone, neck=neck, head=head,
                     codec=CodecSpec(input_size=(w, h), simcc_split_ratio=split_ratio), preprocess=PreprocessSpec(),
                     keypoints=KeypointSpec("custom", generic_keypoint_names(k)),
                     source={"architecture": f"{source} (tensor shapes)",
                             "preprocess": "mmpose's default (ImageNet mean/std, RGB); set model.mean/std/bgr_to_rgb"})


# ----------------------------------------------------------------------------------------- the entry point


def derived_name(path: Path, meta: Mapping[str, Any] | None = None, recorded: str | None = None) -> str:
    """A name for a file's model: recorded by us, mmengine's experiment name, else the file's name."""
    if recorded:
        return safe_name(recorded)
    experiment = (meta or {}).get("experiment_name")
    if isinstance(experiment, str) and experiment.strip():
        return safe_name(_TIMESTAMP.sub("", experiment.strip()))
    stem = path.stem if path.suffix else path.name
    if stem in ("end2end", "model") and path.parent.name:  # MMDeploy/rtmlib names the file, the folder the model
        stem = path.parent.name
    return safe_name(stem)


def describe(model_cfg: Any) -> ModelSpec:
    """The ModelSpec of `model_cfg` (pipeline.config.ModelConfig); see the module docstring."""
    preset = preset_spec(model_cfg.preset) if model_cfg.preset else None
    if not model_cfg.checkpoint:
        if preset is None:
            raise ConfigError("model needs a preset (model=rtmpose-m_coco17_256x192) or a model file "
                              "(model.checkpoint=<.pth/.onnx/SDK folder or zip>)")
        spec = apply_overrides(preset, model_cfg, "preset")
        return spec.renamed(model_cfg.name) if model_cfg.name else spec
    path = resolve_path(model_cfg.checkpoint)
    if not path.exists():
        raise InputError(f"model.checkpoint={model_cfg.checkpoint} does not exist; point it at a .pth/.onnx file "
                         "or an MMDeploy SDK folder/zip")
    kind = source_kind(path)
    described = (_describe_pth(path, model_cfg) if kind == "pth" else
                 _describe_onnx_source(path, model_cfg, kind))
    spec = apply_overrides(described, model_cfg, model_cfg.checkpoint)
    if preset is not None:
        spec = _agree_with_preset(spec, preset, model_cfg)
        spec = spec.renamed(model_cfg.preset)
    if model_cfg.name:
        spec = spec.renamed(model_cfg.name)
    validate(spec)
    return spec


def _describe_pth(path: Path, model_cfg: Any) -> ModelSpec:
    """A .pth's description: meta.cfg first (split ratio, input size), then the tensor shapes checked against it."""
    weights = load_weights_cached(path, model_cfg.trust_pickle)
    name = derived_name(path, weights.meta)
    source = str(model_cfg.checkpoint)
    config, note = _read_config(weights.meta.get("cfg"))
    stated = None
    if "model" in config:
        try:
            stated = spec_from_config(config, name, None, source)
        except InputError as exc:
            if "distiller" not in str(exc):
                raise
            note = "meta.cfg describes a distiller; the student's tensors describe it"
    if stated is None:
        ratio = float(model_cfg.simcc_split_ratio or 2.0)
        size = tuple(model_cfg.input_size) if model_cfg.input_size else None
        from_shapes = spec_from_shapes(weights.state_dict, name, ratio, size, source)
    else:
        _check_overrides(stated, model_cfg, source)
        from_shapes = _shapes_as_stated(weights.state_dict, stated, source)
    keypoints = keypoints_from_dataset_meta(weights.meta.get("dataset_meta"), from_shapes.num_keypoints)
    spec = from_shapes
    if note:
        spec = dataclasses.replace(from_shapes, source={**from_shapes.source, "note": note})
    if stated is not None:
        spec = spec_from_config(config, name, keypoints, source)
        _check_against_shapes(spec, from_shapes, source)
    if keypoints is not None:
        spec = dataclasses.replace(spec, keypoints=keypoints,
                                   source={**spec.source, "keypoints": "meta.dataset_meta"})
    notes = "; ".join(weights.notes)
    return dataclasses.replace(spec, source={**spec.source, "file": f"{weights.form}, sha256 {weights.sha256[:16]}"
                                             + (f" ({notes})" if notes else "")})


def _read_config(cfg_text: Any) -> tuple[dict[str, Any], str]:
    """meta.cfg parsed ({} when absent or unreadable), and a note when it is there but has no `model`."""
    try:
        config = parse_config_text(cfg_text) if isinstance(cfg_text, str) and cfg_text.strip() else {}
    except InputError:
        config = {}
    if "model" not in config and cfg_text:
        return config, "meta.cfg has no readable `model` entry; the tensors describe it"
    return config, ""


def _check_overrides(stated: ModelSpec, model_cfg: Any, source: str) -> None:
    """model.simcc_split_ratio / model.input_size must agree with what meta.cfg states (ConfigError, one line)."""
    ratio = stated.codec.simcc_split_ratio
    if model_cfg.simcc_split_ratio and float(model_cfg.simcc_split_ratio) != ratio:
        raise ConfigError(f"model.simcc_split_ratio={model_cfg.simcc_split_ratio} contradicts "
                          f"model.checkpoint={source}, whose meta.cfg states simcc_split_ratio={ratio}; "
                          "drop the override")
    size = list(stated.codec.input_size)
    if model_cfg.input_size and [int(v) for v in model_cfg.input_size] != size:
        raise ConfigError(f"model.input_size={list(model_cfg.input_size)} contradicts model.checkpoint={source}, "
                          f"whose meta.cfg states input_size={size} (W, H); drop the override")


def _shapes_as_stated(state: Mapping[str, Any], stated: ModelSpec, source: str) -> ModelSpec:
    """spec_from_shapes at meta.cfg's split ratio and input size; a disagreement is the config's, said so."""
    ratio, size = stated.codec.simcc_split_ratio, tuple(stated.codec.input_size)
    try:
        return spec_from_shapes(state, stated.name, ratio, size, source)
    except ConfigError:
        bins = (state["head.cls_x.weight"].shape[0], state["head.cls_y.weight"].shape[0])
        raise InputError(f"model.checkpoint={source}: meta.cfg says input size {size[0]}x{size[1]} at split ratio "
                         f"{ratio}, but the weights have {bins[0]}x{bins[1]} SimCC bins; the config is not the one "
                         "these weights were trained with") from None


def _check_against_shapes(spec: ModelSpec, shapes: ModelSpec, source: str) -> None:
    """meta.cfg and the tensors must describe the same network; name the first field that differs."""
    pairs = [("keypoints (head out_channels)", spec.head.out_channels, shapes.head.out_channels),
             ("head type", spec.head.type, shapes.head.type),
             ("widen_factor", round(spec.backbone.widen_factor, 4), round(shapes.backbone.widen_factor, 4)),
             ("input size (W, H)", tuple(spec.codec.input_size), tuple(shapes.codec.input_size))]
    for what, cfg_value, tensor_value in pairs:
        if cfg_value != tensor_value:
            raise InputError(f"model.checkpoint={source}: meta.cfg says {what} {cfg_value}, but the weights have "
                             f"{tensor_value}; the config is not the one these weights were trained with")


@lru_cache(maxsize=8)
def _load_weights_cached(path: str, size: int, mtime_ns: int, trust_pickle: bool):

    return load_weights(path, trust_pickle=trust_pickle)


def load_weights_cached(path: Path, trust_pickle: bool):
    """pipeline.sources.checkpoint.load_weights, once per process for an unchanged file (plan + stage share it)."""
    stat = path.stat()
    return _load_weights_cached(str(path), stat.st_size, stat.st_mtime_ns, bool(trust_pickle))


def _describe_onnx_source(path: Path, model_cfg: Any, kind: str) -> ModelSpec:

    source = str(model_cfg.checkpoint)
    facts: dict[str, Any] = {}
    if kind == "sdk":
        sdk = read_sdk(path)
        proto = load_onnx_bytes(sdk.onnx_bytes, f"{source}:{sdk.net}")
        facts = sdk_facts(sdk, source)
        name = derived_name(path.with_suffix("") if path.suffix.lower() == ".zip" else path)
    else:
        proto = load_onnx(path)
        name = ""
    check_finite_weights(proto, f"model.checkpoint={source}")
    fp16 = describe_fp16(proto)
    spec = describe_onnx(float32_form(proto, f"model.checkpoint={source}"), name or None, source, facts, path)
    if fp16:
        spec = dataclasses.replace(spec, source={**spec.source, "file": f"{fp16}, used in its float32 form"})
    return spec


def describe_onnx(proto, name: str | None, source: str, facts: Mapping[str, Any], path: Path | None = None) -> ModelSpec:
    """ModelSpec of an ONNX graph: our recorded spec, else the I/O dims plus `facts` (SDK pipeline.json)."""

    metadata = get_metadata(proto)
    if METADATA_SPEC_KEY in metadata:
        try:
            recorded = ModelSpec.from_dict(json.loads(metadata[METADATA_SPEC_KEY]))
        except (ValueError, ConfigError) as exc:
            raise InputError(f"{source}: its {METADATA_SPEC_KEY} metadata is damaged ({exc}); re-export it") from None
        spec = dataclasses.replace(recorded, backbone=None, neck=None, head=None,
                                   source={**recorded.source, "architecture": f"{source} (ONNX graph)"})
        return spec.renamed(name) if name else spec
    inputs, outputs = io_dims(proto, source)
    h, w = inputs[2], inputs[3]
    if "input_size" in facts:
        size = tuple(facts["input_size"])
    elif isinstance(h, int) and isinstance(w, int):
        size = (w, h)
    else:
        raise InputError(f"{source} leaves the input size open (dims {inputs}); set model.input_size=[W,H]")
    if isinstance(h, int) and isinstance(w, int) and (w, h) != size:
        raise InputError(f"{source}: the graph's input is {w}x{h} (W x H) but its SDK files say {size[0]}x{size[1]}")
    k = outputs["simcc_x"][1]
    if not isinstance(k, int):
        k = pin_keypoint_dim(proto, size, inputs[0], source)
    ratio = float(facts.get("simcc_split_ratio", 0) or 0)
    bins_x = outputs["simcc_x"][2]
    if not ratio:
        ratio = bins_x / size[0] if isinstance(bins_x, int) else 2.0
    preprocess = PreprocessSpec(**{key: facts[key] for key in ("mean", "std", "bgr_to_rgb", "bbox_padding")
                                   if key in facts})
    stem = _stem_channels(proto)
    scale = next((s for s, (_, widen) in SCALES.items() if int(64 * widen // 2) == stem), None)
    return ModelSpec(
        name=name or derived_name(path or Path("model.onnx"), recorded=metadata.get("variant")),
        codec=CodecSpec(input_size=size, simcc_split_ratio=ratio), preprocess=preprocess,
        keypoints=KeypointSpec("custom", generic_keypoint_names(int(k))),
        source={"architecture": f"{source} (ONNX graph" + (f", stem fits rtmpose-{scale})" if scale else ")"),
                "preprocess": "pipeline.json" if facts else
                "mmpose's default (ImageNet mean/std, RGB); set model.mean/std/bgr_to_rgb"})


def _stem_channels(proto) -> int | None:
    """Output channels of the first convolution fed by the image input: int(64 * widen // 2) in CSPNeXt."""
    initializers = {init.name: init for init in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Conv" and node.input[1] in initializers and node.input[0] == proto.graph.input[0].name:
            return int(initializers[node.input[1]].dims[0])
    return None


# ----------------------------------------------------------------------------------------- overrides, presets


def apply_overrides(spec: ModelSpec, model_cfg: Any, source: str) -> ModelSpec:
    """`model.*` values replace what the file says (or fill what it leaves open)."""
    changes: dict[str, Any] = {}
    notes = dict(spec.source)
    if model_cfg.input_size:
        size = tuple(int(v) for v in model_cfg.input_size)
        if len(size) != 2:
            raise ConfigError(f"model.input_size={list(model_cfg.input_size)} must be [W, H]")
        if size != tuple(spec.codec.input_size):
            if spec.has_network:
                raise ConfigError(f"model.input_size={list(size)} contradicts {source}, whose network takes "
                                  f"{list(spec.codec.input_size)}")
            changes["codec"] = dataclasses.replace(spec.codec, input_size=size)
    if model_cfg.simcc_split_ratio and float(model_cfg.simcc_split_ratio) != spec.codec.simcc_split_ratio:
        if spec.has_network:
            raise ConfigError(f"model.simcc_split_ratio={model_cfg.simcc_split_ratio} contradicts {source} "
                              f"({spec.codec.simcc_split_ratio})")
        changes["codec"] = dataclasses.replace(changes.get("codec", spec.codec),
                                               simcc_split_ratio=float(model_cfg.simcc_split_ratio))
    pre = {}
    for key in ("mean", "std"):
        value = getattr(model_cfg, key)
        if value:
            if len(value) != 3:
                raise ConfigError(f"model.{key}={list(value)} needs three values")
            pre[key] = tuple(float(v) for v in value)
    if model_cfg.bgr_to_rgb is not None:
        pre["bgr_to_rgb"] = bool(model_cfg.bgr_to_rgb)
    if pre:
        changes["preprocess"] = dataclasses.replace(spec.preprocess, **pre)
        notes["preprocess"] = "model.mean/std/bgr_to_rgb"
    if model_cfg.keypoint_names:
        names = tuple(str(n) for n in model_cfg.keypoint_names)
        if len(names) != spec.num_keypoints:
            raise ConfigError(f"model.keypoint_names has {len(names)} names, but {source} has {spec.num_keypoints} "
                              "keypoints")
        changes["keypoints"] = KeypointSpec(spec.keypoints.dataset_name, names,
                                            spec.keypoints.skeleton, spec.keypoints.flip_indices)
        notes["keypoints"] = "model.keypoint_names"
    return dataclasses.replace(spec, **changes, source=notes) if changes else spec


def _agree_with_preset(spec: ModelSpec, preset: ModelSpec, model_cfg: Any) -> ModelSpec:
    """A preset named with a file is a claim about the file: check it, and take the preset's names
    (and skeleton) where the file has none of its own."""
    what = (f"{scale_of(spec.backbone) or 'custom'}-scale " if spec.backbone else "") + \
        f"{spec.num_keypoints} keypoints, {spec.codec.input_size[0]}x{spec.codec.input_size[1]}"
    mismatch = (spec.num_keypoints != preset.num_keypoints or tuple(spec.codec.input_size) != tuple(preset.codec.input_size)
                or (spec.backbone is not None and scale_of(spec.backbone) != scale_of(preset.backbone))
                or (spec.head is not None and spec.head.type != preset.head.type))
    if mismatch:
        raise InputError(f"model.checkpoint={model_cfg.checkpoint} is a {what} (W x H) model, not "
                         f"model={model_cfg.preset}; drop model= to let the file describe itself")
    if spec.keypoints.names == generic_keypoint_names(spec.num_keypoints):
        spec = dataclasses.replace(spec, keypoints=preset.keypoints,
                                   source={**spec.source, "keypoints": f"preset {model_cfg.preset}"})
    return spec

