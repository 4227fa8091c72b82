"""PyTorch -> ONNX export with the consumer contract and self-describing metadata.

Uses the TorchScript-based exporter (`dynamo=False`): it honours any opset from 11, writes the same
bytes for the same model and inputs, and its graphs are what MMDeploy, rtmlib and pnnx consume.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch

from pipeline.config import ExportConfig
from pipeline.onnx_io import INPUT_NAME, OUTPUT_NAMES, check_io, set_metadata
from pipeline.variants import MEAN_RGB, SIMCC_SPLIT_RATIO, STD_RGB, Variant
from pipeline.versions import tool_versions
from pipeline.weights import WeightsInfo


def onnx_metadata(variant: Variant, weights: WeightsInfo, export_cfg: ExportConfig) -> dict[str, object]:
    h, w = variant.input_hw
    return {
        "variant": variant.name,
        "keypoint_set": variant.keypoints,
        "keypoint_names": list(variant.keypoint_names),
        "input_size_hw": [h, w],
        "mean_rgb": list(MEAN_RGB),
        "std_rgb": list(STD_RGB),
        "simcc_split_ratio": SIMCC_SPLIT_RATIO,
        "dynamic_batch": export_cfg.dynamic_batch,
        "weights_source": weights.source,
        "synthetic_weights": weights.source == "synthetic",
        "checkpoint_sha256": weights.sha256,
        "tool_versions": tool_versions("torch", "onnx"),
    }


def min_ir_version(opset: int) -> int:
    """The oldest IR version that carries this opset, so older runtimes (onnxruntime 1.15) read it."""
    return min(row[1] for row in onnx.helper.VERSION_TABLE if row[2] >= opset)


def _pin_output_dims(proto: onnx.ModelProto, variant: Variant) -> None:
    """The exporter leaves K symbolic under dynamic batch; consumers expect it fixed."""
    shapes = variant.simcc_shapes
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        for dim, size in zip(list(dims)[1:], shapes[output.name]):
            dim.Clear()
            dim.dim_value = size


def export_onnx(model: torch.nn.Module, variant: Variant, weights: WeightsInfo, export_cfg: ExportConfig,
                out_path: Path) -> onnx.ModelProto:
    h, w = variant.input_hw
    batch = 1 if export_cfg.dynamic_batch else export_cfg.static_batch
    dummy = torch.zeros(batch, 3, h, w)
    dynamic_axes = ({name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
                    if export_cfg.dynamic_batch else None)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model.eval(), (dummy,), buffer, dynamo=False, opset_version=export_cfg.opset,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic_axes,
                          do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    _pin_output_dims(proto, variant)
    proto.ir_version = min_ir_version(export_cfg.opset)
    proto.producer_name, proto.producer_version = "rtmpose-pipeline", ""
    set_metadata(proto, onnx_metadata(variant, weights, export_cfg))
    onnx.checker.check_model(proto)
    check_io(proto, variant, "exported model")
    onnx.save_model(proto, str(out_path))
    return proto
