"""Drop-in files beside each artifact: MMDeploy SDK model metadata, and an rtmlib-ready zip for ONNX.

MMDeploy's SDK (`mmdeploy_runtime.PoseDetector(model_path=<dir>)`, C API `mmdeploy_pose_detector_create`)
loads a model *directory*: `deploy.json` names the backend, precision and model files, `pipeline.json`
holds the pre- and post-processing the SDK runs around the network, `detail.json` records how the
model was made (informational). MMDeploy writes them in `mmdeploy/utils/export_info.py` (`export2SDK`:
`get_deploy`, `get_pipeline`, `get_detail`) with the mmpose parts from
`mmdeploy/codebase/mmpose/deploy/pose_detection.py` (`get_preprocess`, `get_postprocess`); the SDK
reads them in `csrc/mmdeploy/core/model.h` (`deploy_meta_info_t`: version, task, models, customs;
`model_meta_info_t`: name, net, weights, backend, batch_size, precision, dynamic_shape),
`csrc/mmdeploy/codebase/mmpose/` (`TopDownGetBboxCenterScale` and `TopDownAffine` read `padding` and
`image_size` (W, H); `SimCCLabelDecode` reads `params.simcc_split_ratio`, `flip_test`, `input_size`) and
`csrc/mmdeploy/net/net_module.cpp` (`input_map`/`output_map`: pipeline key -> network tensor name).
The files here follow those, written for MMDeploy 1.3.1. Checked with `mmdeploy-runtime` 1.3.1 (PyPI; its
wheel bundles only the ONNX Runtime backend and needs numpy < 2): `PoseDetector(model_path=<dir>)` loads
an onnxruntime-fp32/fp16 artifact directory and runs it. Its keypoints differ from mmpose's (and
`pipeline.infer`'s) by up to a few pixels by the SDK's own design, not these files: it takes a box's
width as right - left + 1 and crops an integer-rounded ROI (`topdown_affine.cpp`, CropResizePad) where
mmpose warps exactly; a reimplementation of that arithmetic matched the SDK to 1e-4 px.

Differences from MMDeploy's own output, on purpose: model files keep this pipeline's names
(each backend's `FILES`: `model.onnx`, `model.xml`/`model.bin`, `model.ncnn.param`/`.bin`, `model.engine`);
`flip_test` is false because this pipeline's decode (and its verification) does not flip; `pth` and
`config` hold no paths (same inputs, same bytes). Where a backend renames the network's tensors (pnnx
names ncnn's blobs `in0`/`out0`/`out1`), `input_map`/`output_map` point the SDK at them (the backend's
`sdk_tensor_names`), and an artifact converted for one image at a time is not `dynamic_shape`.

rtmlib (`rtmlib.RTMPose(onnx_model=...)`) takes an ONNX path, or a URL to a zip holding `end2end.onnx`;
`rtmlib.zip` is that zip for the ONNX Runtime targets, with the three SDK files inside (net `end2end.onnx`).
rtmlib 0.0.16 decodes at a fixed SimCC split ratio 2.0 (`RTMPose.__call__` calls `postprocess` with its
default), so a model at any other ratio gets no `rtmlib.zip` (its keypoints would be off by the ratio's
factor, mmdeploy#2696); `not_shipped` says why, and the release manifest records it. The SDK's
`pipeline.json` carries the model's own ratio (`SimCCLabelDecode` reads it).
Zips are deterministic: sorted entries, fixed timestamps and permissions, stored (no compression,
whose bytes would depend on the zlib version).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from pipeline import backends
from pipeline.backends import Target, get_target
from pipeline.core.errors import InputError
from pipeline.core.io import atomic_path, write_json
from pipeline.core.onnx_io import INPUT_NAME, OUTPUT_NAMES, fixed_batch
from pipeline.model.presets import preset_spec
from pipeline.model.spec import ModelSpec
from pipeline.sources.sdk import DEPLOY_JSON, DETAIL_JSON, PIPELINE_JSON

MMDEPLOY_VERSION = "1.3.1"
MMPOSE_VERSION = "1.3.2"  # the codebase version RTMPose's released configs run on
MODEL_NAME = "topdownposeestimator"  # MMDeploy: the mmpose model type, lower-cased
RTMLIB_ZIP, RTMLIB_ONNX = "rtmlib.zip", "end2end.onnx"
RTMLIB_SPLIT_RATIO = 2.0  # rtmlib's fixed decode (RTMPose.postprocess's default, never passed by __call__)
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# What mmdeploy's Collect keeps for mmpose top-down models (get_preprocess).
COLLECT_META_KEYS = ["img_shape", "pad_shape", "ori_shape", "img_norm_cfg", "scale_factor", "bbox_score",
                     "center", "scale"]


def onnx_facts(path: Path) -> dict[str, Any]:
    """Opset and whether the batch axis is dynamic, read from an ONNX file's graph."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return {"opset": int(opset), "dynamic_batch": fixed_batch(proto) is None}


def not_shipped(target: Target, spec: ModelSpec) -> dict[str, str]:
    """Drop-in files `target`'s artifact would carry but whose consumer cannot express `spec`: {file: why}."""
    if not backends.files(target.backend).model.endswith(".onnx"):
        return {}
    if spec.simcc_split_ratio != RTMLIB_SPLIT_RATIO:
        return {RTMLIB_ZIP: f"rtmlib decodes at split ratio {RTMLIB_SPLIT_RATIO}; this model's is "
                            f"{spec.simcc_split_ratio}"}
    return {}


def deploy_json(target: Target, net: str, weights: str, dynamic_batch: bool) -> dict[str, Any]:
    return {
        "version": MMDEPLOY_VERSION,
        "task": "PoseDetector",
        "models": [{
            "name": MODEL_NAME, "net": net, "weights": weights, "backend": target.backend,
            "precision": target.precision.upper(), "batch_size": 1, "dynamic_shape": dynamic_batch,
        }],
        "customs": [],
    }


def pipeline_json(spec: ModelSpec, input_name: str, output_map: dict[str, str]) -> dict[str, Any]:
    """The SDK's pre-/post-processing of `spec`: its crop padding and size, mean/std and colour order
    (the SDK decodes images as BGR; `to_rgb` swaps before normalising), and its SimCC split ratio."""
    h, w = spec.input_hw
    image_size = [w, h]  # mmpose and the SDK write sizes (W, H)
    pre = spec.preprocess
    preprocess = {
        "type": "Task", "module": "Transform", "name": "Preprocess", "input": ["img"], "output": ["prep_output"],
        "transforms": [
            {"type": "LoadImageFromFile"},
            {"type": "TopDownGetBboxCenterScale", "padding": pre.bbox_padding, "image_size": image_size},
            {"type": "TopDownAffine", "image_size": image_size},
            {"type": "Normalize", "mean": list(pre.mean), "std": list(pre.std), "to_rgb": pre.bgr_to_rgb},
            {"type": "ImageToTensor", "keys": ["img"]},
            {"type": "Collect", "keys": ["img"], "meta_keys": COLLECT_META_KEYS},
        ],
    }
    net = {"name": MODEL_NAME, "type": "Task", "module": "Net", "is_batched": True, "input": ["prep_output"],
           "output": ["infer_output"], "input_map": {"img": input_name}, "output_map": output_map}
    postprocess = {
        "type": "Task", "module": "mmpose", "name": "postprocess", "component": "SimCCLabelDecode",
        "params": {"type": "SimCCLabel", "input_size": image_size, "simcc_split_ratio": spec.simcc_split_ratio,
                   "normalize": False, "use_dark": False, "flip_test": False, "export_postprocess": False},
        "input": ["prep_output", "infer_output"], "output": ["post_output"],
    }
    return {"pipeline": {"input": ["img"], "output": ["post_output"], "tasks": [preprocess, net, postprocess]}}


def backend_config(target: Target, spec: ModelSpec, runtime: dict[str, Any]) -> dict[str, Any]:
    """detail.json's backend_config: type and precision, and the runtime settings the artifact was tuned
    and benchmarked with (pipeline/backends/runtime.py); where the latency settings fix the batch, the input
    shape in MMDeploy's own form (`model_inputs[].opt_shapes`, as its OpenVINO deploy configs write it)."""
    config: dict[str, Any] = {"type": target.backend, "precision": target.precision.upper()}
    if runtime:
        config["runtime"] = runtime
    static = (runtime.get("latency") or {}).get("static_batch")
    if static:
        config["model_inputs"] = [{"opt_shapes": {INPUT_NAME: [int(static), 3, *spec.input_hw]}}]
    return config


def detail_json(target: Target, spec: ModelSpec, save_file: str, opset: int | None, dynamic_batch: bool,
                onnx_metadata: dict[str, str], runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    h, w = spec.input_hw
    batch_axis = {name: {"0": "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)} if dynamic_batch else {}
    return {
        "version": MMDEPLOY_VERSION,
        "codebase": {"task": "PoseDetection", "codebase": "mmpose", "version": MMPOSE_VERSION, "pth": "",
                     "config": spec.name},
        "codebase_config": {"type": "mmpose", "task": "PoseDetection"},
        "onnx_config": {"type": "onnx", "export_params": True, "keep_initializers_as_inputs": False,
                        "opset_version": opset, "save_file": save_file, "input_names": [INPUT_NAME],
                        "output_names": list(OUTPUT_NAMES), "input_shape": [w, h], "optimize": True,
                        "dynamic_axes": batch_axis},
        "backend_config": backend_config(target, spec, runtime or {}),
        "calib_config": {},
        "rtmpose_pipeline": dict(sorted(onnx_metadata.items())),  # provenance: this pipeline's ONNX metadata
    }


def sdk_files(artifact_dir: Path, target: Target, spec: ModelSpec, onnx_metadata: dict[str, str],
              net: str, weights: str, opset: int | None, dynamic_batch: bool,
              runtime: dict[str, Any] | None = None) -> dict[str, dict]:
    input_name, output_map = backends.module(target.backend).sdk_tensor_names(artifact_dir)
    return {
        DEPLOY_JSON: deploy_json(target, net, weights, dynamic_batch),
        PIPELINE_JSON: pipeline_json(spec, input_name, output_map),
        DETAIL_JSON: detail_json(target, spec, net if net.endswith(".onnx") else "model.onnx", opset,
                                   dynamic_batch, onnx_metadata, runtime),
    }


def _json_bytes(data: Any) -> bytes:
    """The bytes pipeline.core.io.write_json writes: sorted keys, indent 2, trailing newline."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_zip(path: Path, members: dict[str, bytes | Path]) -> Path:
    """A zip whose bytes depend only on the members: sorted, fixed date and mode, stored."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.create_system = 3  # unix, whatever the host
            info.external_attr = 0o644 << 16
            content = members[name]
            archive.writestr(info, content.read_bytes() if isinstance(content, Path) else content)
    return path


def write_dropin(artifact_dir: Path, target: Target | str, spec: ModelSpec | str, onnx_metadata: dict[str, str],
                 opset: int | None = None, runtime: dict[str, Any] | None = None) -> list[Path]:
    """Write deploy.json, pipeline.json and detail.json into `artifact_dir` (and `rtmlib.zip` for ONNX artifacts,
    unless `not_shipped` withholds it); return the paths written. `spec` is the model's description (or a preset
    name); `opset` is read from the artifact's ONNX when it has one; `runtime` ({mode: settings}, as
    artifact.json records them) goes into detail.json's backend_config."""

    artifact_dir = Path(artifact_dir)
    target = get_target(target) if isinstance(target, str) else target
    spec = preset_spec(spec) if isinstance(spec, str) else spec
    recorded = onnx_metadata.get("variant")
    if recorded and recorded != spec.name:
        raise InputError(f"{artifact_dir}: the ONNX metadata says {recorded}, not {spec.name}")
    files = backends.files(target.backend)
    net, weights = files.model, files.weights
    for name in filter(None, (net, weights)):
        if not (artifact_dir / name).is_file():
            raise InputError(f"{artifact_dir} has no {name}; build the {target.name} artifact first")
    if net.endswith(".onnx"):
        facts = onnx_facts(artifact_dir / net)
        opset, dynamic_batch = facts["opset"], facts["dynamic_batch"]
    else:
        dynamic_batch = not files.one_image and onnx_metadata.get("dynamic_batch") == "true"
    written = []
    for name, data in sdk_files(artifact_dir, target, spec, onnx_metadata, net, weights, opset,
                                dynamic_batch, runtime).items():
        write_json(artifact_dir / name, data)
        written.append(artifact_dir / name)
    if net.endswith(".onnx") and RTMLIB_ZIP not in not_shipped(target, spec):
        members: dict[str, bytes | Path] = {RTMLIB_ONNX: artifact_dir / net}
        for name, data in sdk_files(artifact_dir, target, spec, onnx_metadata, RTMLIB_ONNX, "", opset,
                                    dynamic_batch, runtime).items():
            members[name] = _json_bytes(data)
        written.append(write_zip(artifact_dir / RTMLIB_ZIP, members))
    return sorted(written)
