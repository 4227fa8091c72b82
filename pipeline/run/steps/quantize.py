"""Step `quantize@<variant>`: the shared Q/DQ INT8 ONNX."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import RunConfig
from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_path, read_npz, write_json
from pipeline.graph.quantize import quantize_qdq
from pipeline.run.steps.common import _require


def quantize(cfg: RunConfig, variant_name: str) -> Path:
    """The shared INT8 Q/DQ ONNX (onnxruntime-int8, tensorrt-int8) from the simplified model."""
    if variant_name not in cfg.plan["quantizations"]:
        raise ConfigError(f"variant {variant_name!r} has no Q/DQ INT8 target in the plan; nothing to quantize")
    paths = cfg.plan["quantizations"][variant_name]
    inputs = read_npz(_require(paths["calibration"], "calibration", variant_name))["input"]
    _require(paths["simplified_onnx"], "simplify", variant_name)
    with atomic_path(paths["quantized"], is_dir=True) as tmp:
        report = quantize_qdq(Path(paths["simplified_onnx"]), inputs, cfg.quantize, tmp / "model.onnx")
        write_json(tmp / "quantize.json", report)
    return Path(paths["quantized_onnx"])
