"""Supplied fp16 ONNX files, as fp16 conversion tools write them, brought back to their float32 form.

onnxconverter-common's `float16.convert_float_to_float16` (and its copy in onnxruntime.transformers, which
pipeline/graph/fp16.py uses) stores every float weight in fp16 and either keeps the graph's I/O float32 behind
Casts (`keep_io_types=True`, e.g. rknn-toolkit2#236) or makes it fp16 too. Such a file is an fp16 model of a
float32 network: every target would start from it, and the fp16 pass would run on it a second time (which
fails: "two nodes with same node name (graph_input_cast0)").

`float32_form(model)` is that network in float32, with the file's own weights: fp16 initializers and Constant
values widened to float32 (exact: every fp16 value is a float32 value), Cast/CastLike/ConstantOfShape targets
fp16 -> float32, fp16 I/O and value_info float32, and the Casts that then go from float32 to float32 removed,
so the I/O keeps the graph's own names (`input` -> `simcc_x`, `simcc_y` where the file has them). It is the
reference every target is verified against (pipeline/check/reference.py); weights the converter clamped (by
default magnitudes below 1e-7 to 1e-7, above 1e4 to 1e4) stay as the file holds them. Same graph, same bytes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

from pipeline.core.errors import InputError

FP16, FP32 = TensorProto.FLOAT16, TensorProto.FLOAT


def _tensors(graph: onnx.GraphProto):
    """Every tensor the graph stores: initializers and tensor attributes (Constant, ConstantOfShape)."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield attr.t


def _values(graph: onnx.GraphProto):
    return (*graph.input, *graph.output, *graph.value_info)


def fp16_parts(model: onnx.ModelProto) -> list[str]:
    """What in the graph is fp16: '<n> fp16 weights', 'fp16 inputs', 'fp16 outputs' ([] for none)."""
    graph = model.graph
    parts = []
    weights = sum(1 for tensor in _tensors(graph) if tensor.data_type == FP16)
    if weights:
        parts.append(f"{weights} fp16 weights")
    initializers = {init.name for init in graph.initializer}
    if any(v.type.tensor_type.elem_type == FP16 for v in graph.input if v.name not in initializers):
        parts.append("fp16 inputs")
    if any(v.type.tensor_type.elem_type == FP16 for v in graph.output):
        parts.append("fp16 outputs")
    return parts


def describe_fp16(model: onnx.ModelProto) -> str:
    """'' for a float32 graph, else one phrase saying what the file is, for the record and for errors."""
    parts = fp16_parts(model)
    if not parts:
        return ""
    weights = next((part for part in parts if part.endswith("weights")), "float32 weights")
    io = "fp16 I/O" if "fp16 inputs" in parts or "fp16 outputs" in parts else "float32 I/O"
    return f"an fp16 ONNX ({weights}, {io})"


def float32_form(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """The float32 form of an fp16 graph (module docstring); `model` itself when nothing in it is fp16.

    Raises InputError when the graph holds subgraphs (If/Loop/Scan), which this does not rewrite."""
    if not fp16_parts(model):
        return model
    if any(attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for node in model.graph.node
           for attr in node.attribute):
        raise InputError(f"{source} is {describe_fp16(model)} with control flow (If/Loop/Scan), which cannot be "
                         "brought back to float32 here; supply the float32 model it was converted from")
    restored = onnx.ModelProto.FromString(model.SerializeToString())
    graph = restored.graph
    for tensor in _tensors(graph):
        if tensor.data_type == FP16:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.INT and attr.name in ("to", "dtype") and attr.i == FP16:
                attr.i = FP32
    for value in _values(graph):
        if value.type.tensor_type.elem_type == FP16:
            value.type.tensor_type.elem_type = FP32
    _drop_float32_casts(restored)
    # pipeline/graph/fp16.py records "precision": "fp16" in the graphs it writes; this one is float32 again.
    props = [prop for prop in restored.metadata_props if (prop.key, prop.value) != ("precision", "fp16")]
    del restored.metadata_props[:]
    restored.metadata_props.extend(props)
    return restored


def _drop_float32_casts(model: onnx.ModelProto) -> None:
    """Remove the Casts to float32 of float32 tensors (the widened graph's former fp16 <-> float32 Casts); a Cast
    that makes a graph output hands its name to the tensor it casts, so the outputs keep their names."""
    graph = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # onnx's own errors on graphs it cannot type; their Casts then stay, which is still exact
        inferred = graph
    types = {v.name: v.type.tensor_type.elem_type for v in _values(inferred)}
    types.update({init.name: init.data_type for init in graph.initializer})
    outputs = {value.name for value in graph.output}
    inputs = {value.name for value in graph.input}
    kept = []
    for node in graph.node:
        to_float32 = node.op_type == "Cast" and any(a.name == "to" and a.i == FP32 for a in node.attribute)
        source, target = node.input[0] if node.input else "", node.output[0]
        if not to_float32 or types.get(source) != FP32 or (source in inputs and target in outputs):
            kept.append(node)
            continue
        old, new = (source, target) if target in outputs else (target, source)
        for other in graph.node:
            other.input[:] = [new if name == old else name for name in other.input]
            other.output[:] = [new if name == old else name for name in other.output]
        stale = [value for value in graph.value_info if value.name == old]
        for value in stale:
            graph.value_info.remove(value)
    del graph.node[:]
    graph.node.extend(kept)
