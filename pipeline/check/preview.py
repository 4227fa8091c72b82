"""A CPU preview of a TensorRT engine: the graph the engine is built from, run in onnxruntime and judged
by the same gate as every artifact (pipeline/check/verify.py), reported as a preview, never as a verified engine.

TensorRT builds strongly typed networks (pipeline/backends/tensorrt.py): every tensor's type comes from
`tensorrt.engine_graph`, the float16 graph (fp16) or the Q/DQ graph (int8). Both are plain ONNX, so a
host without a GPU can check them before any engine exists. What the preview computes is not what the
engine computes, and the metrics say so (`preview`):
- fp16: onnxruntime's CPU provider has float16 kernels for data movement only (Reshape, Transpose,
  Squeeze, Split, Shape on onnxruntime 1.32); for every arithmetic op (Conv, MatMul, Mul, Add, Sigmoid,
  ...) it inserts Casts and computes in float32, and it drops the Cast pairs between two such ops
  (`InsertedPrecisionFreeCast_*` nodes in its session graph). The preview therefore measures the float16
  rounding of the weights and of the few tensors that stay float16, not float16 arithmetic; which ops ran
  in which type is measured from onnxruntime's own session graph and recorded (`onnxruntime_cpu`).
- int8: with graph optimisations off, each QuantizeLinear/DequantizeLinear pair rounds and clips to the
  int8 grid and the layer then computes in float32 (simulated quantization): TensorRT's int8 kernels
  compute the same quantized values up to accumulation order and requantization rounding.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from pipeline.backends import Target
from pipeline.backends.tensorrt import engine_graph
from pipeline.check.verify import Golden, onnx_metadata_normalization, verify_artifact
from pipeline.config import TensorRTConfig, Tolerance
from pipeline.core.onnx_io import get_metadata, run_fp32

# Ops that compute nothing (types pass through or only move): not counted by `onnxruntime_cpu_types`.
_NOT_ARITHMETIC = {"Cast", "Constant", "QuantizeLinear", "DequantizeLinear"}
_TYPE_NAMES = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16",
               onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "int8"}
PREVIEW_NOTE = ("preview: TensorRT's engine graph run in onnxruntime on CPU, not a TensorRT engine; "
                "the engine is verified on an NVIDIA GPU")


def onnxruntime_cpu_types(model: onnx.ModelProto) -> dict[str, dict[str, int]]:
    """Nodes by the element type onnxruntime's CPU provider computes them in, {type: {op_type: count}}.

    Read from the graph onnxruntime itself runs (SessionOptions.optimized_model_filepath, optimisations
    off), after it inserted its float32 fallback Casts for ops without a kernel of the graph's type. A
    node counts under the lowest precision among its inputs (int8, then fp16, bf16, fp32); Cast,
    Constant, QuantizeLinear and DequantizeLinear are not counted.
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "session.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session_graph = onnx.shape_inference.infer_shapes(onnx.load(options.optimized_model_filepath))
    graph = session_graph.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)}
    types.update({init.name: init.data_type for init in graph.initializer})
    counts: dict[str, dict[str, int]] = {}
    for node in graph.node:
        if node.op_type in _NOT_ARITHMETIC:
            continue
        found = {_TYPE_NAMES.get(types.get(name, 0)) for name in node.input if name}
        kind = next((t for t in ("int8", "fp16", "bf16", "fp32") if t in found), None)
        if kind:
            ops = counts.setdefault(kind, {})
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {kind: dict(sorted(ops.items())) for kind, ops in sorted(counts.items())}


def preview_graph(model: onnx.ModelProto, golden: Golden, tol: Tolerance, min_peak_margin: float) -> dict[str, object]:
    """`verify_artifact` of an ONNX graph run in plain onnxruntime CPU (optimisations off), as a preview.

    `model`: a graph with input `input` [N,3,H,W] float32 and outputs simcc_x/simcc_y float32; its ONNX
    metadata's preprocessing (mean/std/channel order) is the recorded one. Returns the gate's metrics
    (`passed`, `breaches`, per-output errors, keypoints) plus `preview` (what this is) and
    `onnxruntime_cpu` (`onnxruntime_cpu_types`: which ops onnxruntime computed in which type).
    """
    recorded = onnx_metadata_normalization(get_metadata(model))
    metrics = verify_artifact(lambda inputs: run_fp32(model, inputs), golden, tol, min_peak_margin,
                              {"ONNX metadata": recorded} if recorded else {})
    metrics["preview"] = PREVIEW_NOTE
    metrics["onnxruntime_cpu"] = onnxruntime_cpu_types(model)
    return metrics


def preview_engine(onnx_path: Path, target: Target, settings: TensorRTConfig, golden: Golden, tol: Tolerance,
                   min_peak_margin: float) -> dict[str, object]:
    """The preview (`preview_graph`) of the graph TensorRT builds `target` from (`tensorrt.engine_graph`).

    `onnx_path`: the simplified ONNX (tensorrt-fp16) or the quantize stage's Q/DQ ONNX (tensorrt-int8);
    `tol`: the target precision's Tolerance (`cfg.verify.tolerances[target.precision]`). Raises
    ConfigError where `engine_graph` does (an int8 target given a graph without Q/DQ).
    """
    metrics = preview_graph(engine_graph(onnx_path, target, settings), golden, tol, min_peak_margin)
    metrics.update({"target": target.name, "precision": target.precision, "tolerance": vars(tol),
                    "num_inputs": int(np.asarray(golden.inputs).shape[0])})
    return metrics
