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
from pipeline.describe import METADATA_SPEC_KEY
from pipeline.onnx_io import INPUT_NAME, OUTPUT_NAMES, canonicalize_io, check_io, set_metadata
from pipeline.spec import ModelSpec
from pipeline.versions import tool_versions
from pipeline.weights import WeightsInfo


def onnx_metadata(spec: ModelSpec, weights: WeightsInfo, dynamic_batch: bool,
                  tools: tuple[str, ...] = ("torch", "onnx")) -> dict[str, object]:
    """`metadata_props` of every ONNX we write: the full description (`model_spec`, which
    pipeline/describe.py reads back; without its `source` notes, which name local paths) and the
    facts consumers look for, flat."""
    h, w = spec.input_hw
    pre = spec.preprocess
    return {
        "variant": spec.name,
        METADATA_SPEC_KEY: {k: v for k, v in spec.to_dict().items() if k != "source"},
        "keypoint_set": spec.keypoints.dataset_name,
        "keypoint_names": list(spec.keypoint_names),
        "input_size_hw": [h, w],
        "mean": list(pre.mean),
        "std": list(pre.std),
        "channel_order": pre.channel_order,
        "simcc_split_ratio": spec.simcc_split_ratio,
        "dynamic_batch": dynamic_batch,
        "weights_source": weights.source,
        "synthetic_weights": weights.source == "synthetic",
        "checkpoint_sha256": weights.sha256,
        "tool_versions": tool_versions(*tools),
    }


def min_ir_version(opset: int) -> int:
    """The oldest IR version that carries this opset, so older runtimes (onnxruntime 1.15) read it."""
    return min(row[1] for row in onnx.helper.VERSION_TABLE if row[2] >= opset)


def export_onnx(model: torch.nn.Module, spec: ModelSpec, weights: WeightsInfo, export_cfg: ExportConfig,
                out_path: Path) -> onnx.ModelProto:
    """Export the network of `spec` to `out_path`: the consumer contract (pipeline/onnx_io.py), the
    minimal IR version for the opset, and the description in metadata. Same inputs, same bytes."""
    h, w = spec.input_hw
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
    canonicalize_io(proto, spec)  # the exporter leaves K symbolic under dynamic batch; consumers expect it fixed
    proto.ir_version = min_ir_version(export_cfg.opset)
    proto.producer_name, proto.producer_version = "rtmpose-pipeline", ""
    set_metadata(proto, onnx_metadata(spec, weights, export_cfg.dynamic_batch))
    onnx.checker.check_model(proto)
    check_io(proto, spec, "exported model")
    onnx.save_model(proto, str(out_path))
    return proto
