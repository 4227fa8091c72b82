"""Step `export@<variant>`: the ONNX export, or the supplied ONNX brought to the contract."""

from __future__ import annotations

from pathlib import Path

from pipeline.check.reference import sha256_of_source, supplied_onnx
from pipeline.config import RunConfig
from pipeline.core.io import atomic_path
from pipeline.core.onnx_io import fixed_batch, get_metadata, save_onnx, set_metadata
from pipeline.graph.export import export_onnx, onnx_metadata
from pipeline.planning.plan import model_config, spec_of
from pipeline.planning.plan import variant_entry as _variant_entry
from pipeline.sources.weights import WeightsInfo, build_reference_model


def export(cfg: RunConfig, variant_name: str) -> Path:
    """PyTorch -> ONNX, or the supplied ONNX brought to the contract and labelled with its description."""
    paths = _variant_entry(cfg, variant_name)
    spec = spec_of(cfg, variant_name)
    model_cfg = model_config(cfg, variant_name)
    with atomic_path(paths["export"]) as tmp:
        if paths["from_onnx"]:
            proto = supplied_onnx(model_cfg, spec)
            info = WeightsInfo("onnx", "onnx", model_cfg.checkpoint, sha256_of_source(model_cfg))
            metadata = {**get_metadata(proto), **onnx_metadata(spec, info, fixed_batch(proto) is None, ("onnx",))}
            set_metadata(proto, metadata)
            save_onnx(proto, tmp)
        else:
            model, info = build_reference_model(model_cfg, spec)
            export_onnx(model, spec, info, cfg.export, tmp)
    return Path(paths["export"])
