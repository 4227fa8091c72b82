"""The PyTorch reference model of a description: user checkpoint, demo checkpoint or synthetic weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from pipeline.config import ModelConfig
from pipeline.model.rtmpose import build_network
from pipeline.model.spec import ModelSpec
from pipeline.model.synthetic import synthetic_state_dict
from pipeline.sources.checkpoint import load_into_model
from pipeline.sources.describe import load_weights_cached, resolve_path, source_kind


@dataclass(frozen=True)
class WeightsInfo:
    source: str  # "synthetic" | "demo" | "checkpoint" | "onnx"
    form: str  # how the file was stored, e.g. "mmpose-checkpoint"
    checkpoint: str  # path as configured, "" for synthetic
    sha256: str  # of the checkpoint file, "" for synthetic

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def is_onnx_source(model_cfg: ModelConfig) -> bool:
    """Whether the model arrives as an ONNX graph (a .onnx file or an MMDeploy SDK folder/zip)."""
    if not model_cfg.checkpoint:
        return False
    path = resolve_path(model_cfg.checkpoint)
    return path.exists() and source_kind(path) in ("onnx", "sdk")


def build_reference_model(model_cfg: ModelConfig, spec: ModelSpec) -> tuple[torch.nn.Module, WeightsInfo]:
    """Eval-mode network of `spec` with the configured weights, strictly loaded.

    Raises InputError when the file's tensors do not fit the description (names the first key)."""
    model = build_network(spec)
    if not model_cfg.checkpoint:
        model.load_state_dict(synthetic_state_dict(spec, model_cfg.synthetic_seed))
        info = WeightsInfo("synthetic", f"seeded synthetic (seed {model_cfg.synthetic_seed})", "", "")
    else:
        weights = load_weights_cached(resolve_path(model_cfg.checkpoint), model_cfg.trust_pickle)
        load_into_model(model, weights, model_cfg.checkpoint)
        source = "demo" if weights.meta.get("demo_checkpoint") else "checkpoint"
        info = WeightsInfo(source, weights.form, model_cfg.checkpoint, weights.sha256)
    return model.eval(), info
