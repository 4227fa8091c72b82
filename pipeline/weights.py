"""The PyTorch reference model for a config: user checkpoint, demo checkpoint or synthetic weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.checkpoint import load_into_model, load_weights
from pipeline.synthetic import synthetic_state_dict
from pipeline.config import REPO_ROOT, ModelConfig
from pipeline.variants import Variant, parse_variant


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


def is_onnx(model_cfg: ModelConfig) -> bool:
    return bool(model_cfg.checkpoint) and model_cfg.checkpoint.lower().endswith(".onnx")


def build_reference_model(model_cfg: ModelConfig) -> tuple[torch.nn.Module, Variant, WeightsInfo]:
    """Eval-mode RTMPose with the configured weights, strictly loaded."""
    variant = parse_variant(model_cfg.name)
    model = variant.build_model()
    if not model_cfg.checkpoint:
        model.load_state_dict(synthetic_state_dict(variant, model_cfg.synthetic_seed))
        info = WeightsInfo("synthetic", f"seeded synthetic (seed {model_cfg.synthetic_seed})", "", "")
    else:
        path = resolve_path(model_cfg.checkpoint)
        weights = load_weights(path, trust_pickle=model_cfg.trust_pickle)
        load_into_model(model, weights, variant, model_cfg.checkpoint)
        source = "demo" if weights.meta.get("demo_checkpoint") else "checkpoint"
        info = WeightsInfo(source, weights.form, model_cfg.checkpoint, weights.sha256)
    return model.eval(), variant, info
