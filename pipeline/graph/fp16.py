"""FP32 -> FP16 ONNX graphs (onnxruntime-fp16; TensorRT strongly typed builds take precision from it).

Upstream: `onnxruntime.transformers.float16.convert_float_to_float16` (tested with onnxruntime 1.32).
Graph inputs and outputs stay float32 (`keep_io_types`), so consumers feed the same tensors. Ops in
`keep_float_ops` stay float32: RTMPose's ScaleNorm divides by a vector norm whose square overflows
half precision on large activations (the NaNs users report from FP16 deployments).
"""

from __future__ import annotations

import onnx

from pipeline.core.onnx_io import get_metadata, set_metadata


def convert_fp16(model: onnx.ModelProto, keep_float_ops: list[str], keep_float_nodes: list[str]) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    converted = convert_float_to_float16(onnx.ModelProto.FromString(model.SerializeToString()), keep_io_types=True,
                                         op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(keep_float_ops),
                                         node_block_list=list(keep_float_nodes))
    converted.ir_version = model.ir_version
    set_metadata(converted, {**get_metadata(model), "precision": "fp16"})
    return converted
