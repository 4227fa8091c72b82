"""INT8 post-training quantization to a Q/DQ ONNX, shared by onnxruntime-int8 and tensorrt-int8.

Upstream: `onnxruntime.quantization.quantize_static` (QDQ format, tested with onnxruntime 1.32).
Weights and activations are signed int8 with symmetric ranges (zero point 0), which is what
TensorRT's explicit-quantization path accepts; weights per output channel by default. Nodes whose
names start with a `quantize.keep_float` prefix get no Q/DQ and stay float.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from pipeline.config import QuantizeConfig
from pipeline.errors import ConfigError
from pipeline.export import min_ir_version
from pipeline.onnx_io import INPUT_NAME, get_metadata, set_metadata

METHODS = ("minmax", "entropy", "percentile")


def float_nodes(model: onnx.ModelProto, prefixes: list[str]) -> list[str]:
    """Names of the nodes that `keep_float` prefixes select."""
    return [n.name for n in model.graph.node if any(n.name.startswith(p) for p in prefixes)]


def quantize_qdq(source: Path, calibration: np.ndarray, cfg: QuantizeConfig, out_path: Path) -> dict[str, object]:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    if cfg.calibrate_method not in METHODS:
        raise ConfigError(f"quantize.calibrate_method={cfg.calibrate_method!r}; choose one of {', '.join(METHODS)}")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.calibrate_method]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{INPUT_NAME: calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.batches, None)

    model = onnx.load(str(source))
    excluded = float_nodes(model, list(cfg.keep_float))
    with tempfile.TemporaryDirectory() as tmp:
        quantize_static(str(source), str(Path(tmp) / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=cfg.per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=excluded, calibrate_method=method,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        quantized = onnx.load(str(Path(tmp) / "q.onnx"))
    opset = max(o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx"))
    quantized.ir_version = max(model.ir_version, min_ir_version(opset))  # readable by older runtimes
    set_metadata(quantized, {**get_metadata(model), "quantization": "int8 qdq symmetric",
                             "calibration_samples": int(len(calibration))})
    onnx.save_model(quantized, str(out_path))
    q_nodes = sum(1 for n in quantized.graph.node if n.op_type == "QuantizeLinear")
    return {"quantize_linear_nodes": q_nodes, "float_nodes": len(excluded), "calibration_samples": len(calibration),
            "method": cfg.calibrate_method, "per_channel": cfg.per_channel}
