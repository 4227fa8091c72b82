"""The PyTorch reference model of a description: user checkpoint, demo checkpoint or synthetic weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.checkpoint import load_into_model
from pipeline.config import REPO_ROOT, ModelConfig
from pipeline.spec import ModelSpec
from pipeline.synthetic import synthetic_state_dict


@dataclass(frozen=True)
class WeightsInfo:
    source: str  # "synthetic" | "demo" | "checkpoint" | "onnx"
    form: str  # how the file was stored, e.g. "mmpose-checkpoint"
    checkpoint: str  # path as configured, "" for synthetic
    sha256: str  # of the checkpoint file, "" for synthetic

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def resolve_path(path: str) -> Path:
    """Relative to the working directory, falling back to the repository (where DVC runs stages)."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return REPO_ROOT / candidate


def is_onnx_source(model_cfg: ModelConfig) -> bool:
    """Whether the model arrives as an ONNX graph (a .onnx file or an MMDeploy SDK folder/zip)."""
    from pipeline.describe import source_kind

    if not model_cfg.checkpoint:
        return False
    path = resolve_path(model_cfg.checkpoint)
    return path.exists() and source_kind(path) in ("onnx", "sdk")


def build_reference_model(model_cfg: ModelConfig, spec: ModelSpec) -> tuple[torch.nn.Module, WeightsInfo]:
    """Eval-mode network of `spec` with the configured weights, strictly loaded.

    Raises InputError when the file's tensors do not fit the description (names the first key)."""
    from pipeline.describe import load_weights_cached

    model = spec.build_model()
    if not model_cfg.checkpoint:
        model.load_state_dict(synthetic_state_dict(spec, model_cfg.synthetic_seed))
        info = WeightsInfo("synthetic", f"seeded synthetic (seed {model_cfg.synthetic_seed})", "", "")
    else:
        weights = load_weights_cached(resolve_path(model_cfg.checkpoint), model_cfg.trust_pickle)
        load_into_model(model, weights, model_cfg.checkpoint)
        source = "demo" if weights.meta.get("demo_checkpoint") else "checkpoint"
        info = WeightsInfo(source, weights.form, model_cfg.checkpoint, weights.sha256)
    return model.eval(), info
