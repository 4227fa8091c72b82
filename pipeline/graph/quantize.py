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
from pipeline.core.onnx_io import INPUT_NAME, get_metadata, set_metadata
from pipeline.graph.export import min_ir_version


def float_nodes(model: onnx.ModelProto, prefixes: list[str]) -> list[str]:
    """Names of the nodes that `keep_float` prefixes select."""
    return [n.name for n in model.graph.node if any(n.name.startswith(p) for p in prefixes)]


def quantize_qdq(source: Path, calibration: np.ndarray, cfg: QuantizeConfig, out_path: Path) -> dict[str, object]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    # pipeline/config.py: CALIBRATE_METHODS, checked on load
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


def activations_to_uint8(model: onnx.ModelProto) -> int:
    """Re-express symmetric int8 activation Q/DQ pairs as uint8 with zero point 128, in place.

    The same quantized values: round(x/s) + 128 clamped to [0, 255] is round(x/s) clamped to
    [-128, 127], shifted. onnxruntime's x86 kernels are built for uint8 activations with int8
    weights (U8S8, VNNI) and fuse them into integer convolutions; with int8 activations they took
    41.7 ms for rtmpose-m against 13.3 ms rewritten (and 18.2 ms in fp32), with the same error
    against the float model. TensorRT needs the signed form, so the shared Q/DQ ONNX keeps it and
    only the onnxruntime artifact is rewritten.
    Weights (DequantizeLinear of an int8 initializer) stay int8. Returns the number of rewritten pairs.
    """
    inits = {init.name: init for init in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    rewritten = 0
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        zero_point = onnx.numpy_helper.to_array(inits[node.input[2]])
        if zero_point.dtype != np.int8 or np.any(zero_point != 0):
            continue
        name = f"{node.input[2]}_uint8"
        if name not in inits:
            inits[name] = onnx.numpy_helper.from_array(np.full(zero_point.shape, 128, np.uint8), name)
            model.graph.initializer.append(inits[name])
        dequantizers = [c for c in consumers.get(node.output[0], []) if c.op_type == "DequantizeLinear"]
        for dq in dequantizers:
            dq.input[2] = name
        node.input[2] = name
        rewritten += 1
    used = {name for node in model.graph.node for name in node.input}
    unused = [init for init in model.graph.initializer if init.name not in used]
    for init in unused:
        model.graph.initializer.remove(init)
    return rewritten
