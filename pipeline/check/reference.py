"""The reference model of a planned variant, as one forward function shared by every step that needs it.

PyTorch with the variant's weights (a checkpoint, the demo checkpoint or seeded synthetic weights),
or, for a supplied ONNX (a file or an MMDeploy SDK folder/zip), that graph brought to the consumer
contract and run in plain onnxruntime with graph optimisations off, in chunks of its batch where the
graph fixes one. The `reference` stage stores its outputs on the golden inputs, with the float64 run
of the same network that sets the fp32/fp16/bf16 tolerances: `model.double()` in PyTorch, or the
supplied graph rewritten to float64 and evaluated by onnx's reference evaluator
(pipeline/graph/float64.py). `evaluate` runs the float32 forward on a dataset's crops.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import onnx

from pipeline.check.verify import torch_reference
from pipeline.config import ModelConfig
from pipeline.core.digest import sha256_file
from pipeline.core.onnx_io import (
    OUTPUT_NAMES,
    canonicalize_io,
    check_finite_weights,
    check_io,
    load_onnx,
    load_onnx_bytes,
    run_fp32,
)
from pipeline.graph.float64 import run_float64, to_float64
from pipeline.model.spec import ModelSpec
from pipeline.planning.plan import model_config, spec_of, variant_entry
from pipeline.sources.describe import resolve_path, source_kind
from pipeline.sources.fp16_onnx import float32_form
from pipeline.sources.sdk import read_sdk
from pipeline.sources.weights import WeightsInfo, build_reference_model

Forward = Callable[[np.ndarray], dict[str, np.ndarray]]


def supplied_onnx(model_cfg: ModelConfig, spec: ModelSpec) -> onnx.ModelProto:
    """The supplied graph (an .onnx file or an SDK folder/zip's net) brought to the consumer contract:
    `input` -> `simcc_x`, `simcc_y` with K and the bins fixed (pipeline/core/onnx_io.py); an fp16 graph in its
    float32 form (pipeline/sources/fp16_onnx.py)."""

    path = resolve_path(model_cfg.checkpoint)
    if source_kind(path) == "sdk":
        sdk = read_sdk(path)
        proto = load_onnx_bytes(sdk.onnx_bytes, f"{model_cfg.checkpoint}:{sdk.net}")
    else:
        proto = load_onnx(path)
    check_finite_weights(proto, f"model.checkpoint={model_cfg.checkpoint}")
    proto = float32_form(proto, f"model.checkpoint={model_cfg.checkpoint}")
    canonicalize_io(proto, spec)
    check_io(proto, spec, f"model.checkpoint={model_cfg.checkpoint}")
    return proto


def sha256_of_source(model_cfg: ModelConfig) -> str:
    """sha256 of the model file; for an SDK folder, of its files' relative names and bytes, sorted."""
    path = resolve_path(model_cfg.checkpoint)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(child.relative_to(path)).encode() + b"\0" + child.read_bytes())
    return digest.hexdigest()


def reference_runs(cfg, variant_name: str, inputs: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The reference outputs on `inputs` [N,3,H,W] float32, by name: the float32 run (float32), and the
    float64 run of the same network (float64) that sets the fp32/fp16/bf16 tolerances: `model.double()`,
    or for a supplied ONNX its graph in float64 (`run_float64`; InputError for a graph with non-standard
    operators, which has no float64 evaluation)."""
    if variant_entry(cfg, variant_name)["from_onnx"]:
        model_cfg = model_config(cfg, variant_name)
        proto, source = supplied_onnx(model_cfg, spec_of(cfg, variant_name)), f"model.checkpoint={model_cfg.checkpoint}"
        return run_fp32(proto, inputs), run_float64(to_float64(proto, source), inputs, source)

    model, _ = build_reference_model(model_config(cfg, variant_name), spec_of(cfg, variant_name))
    return torch_reference(model, inputs)


def reference_forward(cfg, variant_name: str) -> tuple[Forward, WeightsInfo]:
    """`forward(batch [N,3,H,W] float32) -> {simcc_x, simcc_y}` of the variant's reference, and its weights."""
    spec, model_cfg = spec_of(cfg, variant_name), model_config(cfg, variant_name)
    if variant_entry(cfg, variant_name)["from_onnx"]:
        proto = supplied_onnx(model_cfg, spec)
        info = WeightsInfo("onnx", "onnx", model_cfg.checkpoint, sha256_of_source(model_cfg))
        return (lambda batch: run_fp32(proto, batch)), info

    import torch

    model, info = build_reference_model(model_cfg, spec)

    def run_torch(batch: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outputs = model(torch.from_numpy(batch))
        return {name: tensor.numpy() for name, tensor in zip(OUTPUT_NAMES, outputs)}

    return run_torch, info
