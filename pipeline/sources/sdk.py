"""MMDeploy SDK models: the names of their files, reading a folder or zip, and what its pipeline.json states.

An SDK model (as OpenMMLab distributes every released ONNX, and as pipeline/package/dropin.py writes beside
each artifact) is a folder or zip of `deploy.json` (backend, precision, model files), `pipeline.json` (the
pre- and post-processing the SDK runs around the network), `detail.json` (how the model was made,
informational) and the network. The `Normalize` transform of pipeline.json is parsed here once, for the
model description (pipeline/sources/describe.py) and for the check that an artifact records the
preprocessing its model expects (pipeline/check/verify.py).
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.errors import InputError
from pipeline.model.spec import PreprocessSpec
from pipeline.sources.mmpose_config import UNIMPLEMENTED_DECODE

DEPLOY_JSON, PIPELINE_JSON, DETAIL_JSON = "deploy.json", "pipeline.json", "detail.json"
SDK_FILES = (DEPLOY_JSON, DETAIL_JSON, PIPELINE_JSON)  # every SDK file beside the network, as MMDeploy writes them
SDK_REQUIRED_FILES = (DEPLOY_JSON, PIPELINE_JSON)  # what reading a model needs: detail.json is informational


@dataclasses.dataclass(frozen=True)
class SdkPackage:
    """An MMDeploy SDK model: its JSON files and the ONNX network they name."""

    deploy: dict
    pipeline: dict
    detail: dict
    onnx_bytes: bytes
    net: str


def read_sdk(path: Path) -> SdkPackage:
    """Read an SDK folder or zip without unpacking it; the net must be an ONNX file inside it."""
    def reader():
        if path.is_dir():
            root = path.resolve()

            def read(name: str) -> bytes:
                target = (root / name).resolve()
                if root not in target.parents:  # never follow a path out of the model's folder
                    raise InputError(f"model.checkpoint={path}: {name!r} points outside the folder")
                return target.read_bytes()
            return read, lambda name: (root / name).is_file()
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"model.checkpoint={path} is not a readable zip ({exc}); re-download it") from None
        names = archive.namelist()
        prefix = next((n[: -len(DEPLOY_JSON)] for n in names if n.endswith(DEPLOY_JSON)), None)
        if prefix is None:
            raise InputError(f"model.checkpoint={path} holds no {DEPLOY_JSON}; it is not an MMDeploy SDK zip")

        def read(name: str) -> bytes:
            if ".." in Path(name).parts or name.startswith("/"):
                raise InputError(f"model.checkpoint={path}: {name!r} points outside the zip's folder")
            return archive.read(prefix + name)
        return read, lambda name: prefix + name in names

    read, exists = reader()

    def load_json(name: str, required: bool) -> dict:
        if not exists(name):
            if required:
                raise InputError(f"model.checkpoint={path} has no {name}; it is not a complete MMDeploy SDK model")
            return {}
        try:
            return json.loads(read(name))
        except ValueError as exc:
            raise InputError(f"model.checkpoint={path}: {name} is not valid JSON ({exc})") from None

    deploy, pipeline = (load_json(name, True) for name in SDK_REQUIRED_FILES)
    detail = load_json(DETAIL_JSON, False)
    models = deploy.get("models") or [{}]
    net = str(models[0].get("net", ""))
    if not net.endswith(".onnx"):
        backend = models[0].get("backend", "?")
        raise InputError(f"model.checkpoint={path}: the SDK model's net is {net!r} ({backend}); only ONNX SDK "
                         "models can be converted (download the onnxruntime one)")
    if not exists(net):
        raise InputError(f"model.checkpoint={path}: {DEPLOY_JSON} names {net}, which is not there")
    return SdkPackage(deploy, pipeline, detail, read(net), net)


def _transforms(pipeline_json: Mapping) -> list[dict]:
    """Every transform of every task of a pipeline.json, in order."""
    return [transform for task in pipeline_json.get("pipeline", {}).get("tasks", []) if isinstance(task, dict)
            for transform in task.get("transforms", [])]


def sdk_normalization(pipeline_json: Mapping) -> PreprocessSpec | None:
    """The preprocessing MMDeploy's SDK runs per a pipeline.json: its `Normalize` transform, or None.

    The SDK decodes images as BGR; `to_rgb` converts to RGB before (x - mean) / std.
    """
    for transform in _transforms(pipeline_json):
        if transform.get("type") == "Normalize":
            return PreprocessSpec(tuple(float(v) for v in transform["mean"]), tuple(float(v) for v in transform["std"]),
                                  bool(transform.get("to_rgb", False)))
    return None


def sdk_facts(sdk: SdkPackage, source: str) -> dict[str, Any]:
    """Input size, box padding, mean/std, colour order and split ratio from pipeline.json's transforms and decoder.

    Raises InputError when the decoder turns on a SimCCLabel setting our decode does not implement (`use_dark`).
    """
    facts: dict[str, Any] = {}
    for transform in _transforms(sdk.pipeline):
        kind = transform.get("type")
        if kind in ("TopDownAffine", "TopDownGetBboxCenterScale") and "image_size" in transform:
            facts["input_size"] = tuple(int(v) for v in transform["image_size"])
        if kind == "TopDownGetBboxCenterScale" and "padding" in transform:
            facts["bbox_padding"] = float(transform["padding"])
    normalization = sdk_normalization(sdk.pipeline)
    if normalization is not None:
        facts.update(mean=normalization.mean, std=normalization.std, bgr_to_rgb=normalization.bgr_to_rgb)
    for task in sdk.pipeline.get("pipeline", {}).get("tasks", []):
        params = task.get("params") or {}
        if task.get("component") == "SimCCLabelDecode" or params.get("type") == "SimCCLabel":
            for key, why in UNIMPLEMENTED_DECODE.items():
                if params.get(key):
                    raise InputError(f"{source}: {PIPELINE_JSON} SimCCLabel {key}={params[key]!r}: {why}; "
                                     "this project cannot reproduce this model's keypoints")
            if "simcc_split_ratio" in params:
                facts["simcc_split_ratio"] = float(params["simcc_split_ratio"])
            if "input_size" in params:
                facts.setdefault("input_size", tuple(int(v) for v in params["input_size"]))
    if "input_size" not in facts:
        raise InputError(f"{source}: {PIPELINE_JSON} states no TopDownAffine image_size; set model.input_size=[W,H]")
    return facts
