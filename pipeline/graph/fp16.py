"""FP32 -> FP16 ONNX graphs (onnxruntime-fp16; TensorRT strongly typed builds take precision from it).

Upstream: `onnxruntime.transformers.float16.convert_float_to_float16` (tested with onnxruntime 1.32).
Graph inputs and outputs stay float32 (`keep_io_types`), so consumers feed the same tensors. Ops in
`keep_float_ops` stay float32: RTMPose's ScaleNorm divides by a vector norm whose square overflows
half precision on large activations (the NaNs users report from FP16 deployments).
The pass runs once, on a float32 graph: a graph that already holds fp16 weights or I/O is refused (a second
run fails inside the converter: "two nodes with same node name (graph_input_cast0)"); supplied fp16 files
are brought to their float32 form where they are read (pipeline/sources/fp16_onnx.py).
"""

from __future__ import annotations

import onnx

from pipeline.core.errors import InputError
from pipeline.core.onnx_io import get_metadata, set_metadata
from pipeline.sources.fp16_onnx import describe_fp16


def convert_fp16(model: onnx.ModelProto, keep_float_ops: list[str], keep_float_nodes: list[str]) -> onnx.ModelProto:
    """The fp16 graph of the float32 `model` (module docstring); InputError when `model` is fp16 already."""
    already = describe_fp16(model)
    if already:
        raise InputError(f"the graph to convert to fp16 is already {already}; the fp16 pass takes a float32 graph "
                         "(build from the float32 model)")
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    converted = convert_float_to_float16(onnx.ModelProto.FromString(model.SerializeToString()), keep_io_types=True,
                                         op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(keep_float_ops),
                                         node_block_list=list(keep_float_nodes))
    converted.ir_version = model.ir_version
    set_metadata(converted, {**get_metadata(model), "precision": "fp16"})
    return converted
