"""Bring an ONNX graph down to an older opset for a converter that mis-reads newer ones, exactly, or refuse.

From opset 18 the Reduce operators (ReduceL1, ReduceL2, ReduceMax, ReduceMean, ...; ReduceSum from 13) take
their `axes` as an optional second input instead of an attribute. A converter that reads only the attribute
(pnnx 20261020, pipeline/backends/ncnn.py) then reduces over every axis: RTMPose's ScaleNorm divides by the
norm of the whole tensor and the outputs are off by up to 1e8. `lower_opset(model, opset, source)` moves
constant axes (an initializer or a Constant node) back into the attribute and declares the older opset: the
same function, the same numbers (no value is computed), the same bytes for the same graph.

Every other operator whose definition changed after `opset` is checked against a table of what changed: the
changes that only admit new element types (float8, int4, bfloat16 on more operators) keep the graph's
function; those that add a behaviour (Split's `num_outputs`, Pad's `axes` and `wrap`, Resize's `antialias`,
...) pass where the node does not use it. Anything else, and an operator the older opset lacks, raises
InputError naming the operator and the fix: export at the older opset.
Upstream: onnx's operator changelog (https://github.com/onnx/onnx/blob/main/docs/Changelog.md), read with
onnx 1.23; `onnx.version_converter` cannot do this (it has no adapter from 18 to 17 for Split).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.core.errors import InputError

STANDARD_DOMAINS = ("", "ai.onnx")
# Operators that take `axes` as their second input from the opset given, and as an attribute before it.
AXES_INPUT_SINCE = {"ReduceL1": 18, "ReduceL2": 18, "ReduceLogSum": 18, "ReduceLogSumExp": 18, "ReduceMax": 18,
                    "ReduceMean": 18, "ReduceMin": 18, "ReduceProd": 18, "ReduceSumSquare": 18, "ReduceSum": 13}
# (operator, opset) -> {attribute: the values (a tuple) a node may give it, or None: it must not be set} for the
# version before that opset to compute the same function (an unset attribute has the old default); an empty dict:
# that version only admits new element types. Reduce*: their axes input is moved back (lower_opset).
SAME_FUNCTION_WHEN = {
    # New element types only (float8, int4, float4, bfloat16, ...; Cast's `saturate` acts on float8 alone):
    **{(op, since): {} for since in (19, 21, 23, 24, 25)
       for op in ("Constant", "Identity", "Reshape", "Shape", "Size", "Cast", "CastLike", "Pad", "If", "Loop", "Scan")},
    **{("ConstantOfShape", since): {} for since in (20, 21, 23, 24, 25)},
    **{(op, since): {} for since in (21, 23, 24, 25) for op in ("Flatten", "Squeeze", "Unsqueeze", "Transpose")},
    **{(op, 22): {} for op in (
        "Conv", "ConvTranspose", "AveragePool", "MaxPool", "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid",
        "HardSwish", "Elu", "Selu", "Softplus", "Softsign", "InstanceNormalization", "LpNormalization", "Dropout",
        "Round", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
        "ThresholdedRelu", "RoiAlign")},
    ("ReduceMax", 20): {}, ("ReduceMin", 20): {},  # bool inputs
    ("Equal", 19): {},  # string inputs
    # New behaviour, which a node may leave unused:
    **{(op, since): {"noop_with_empty_axes": (0,)} for op, since in AXES_INPUT_SINCE.items()},
    ("Split", 18): {"num_outputs": None},
    ("Pad", 18): {},  # its `axes` input: checked in _same_function
    ("Pad", 19): {"mode": (b"constant", b"reflect", b"edge")},  # adds "wrap"
    ("Resize", 18): {"antialias": (0,), "keep_aspect_ratio_policy": (b"stretch",), "axes": None},
    ("Resize", 19): {"coordinate_transformation_mode": (b"half_pixel", b"pytorch_half_pixel", b"align_corners",
                                                        b"asymmetric", b"tf_crop_and_resize")},
    ("AveragePool", 19): {"dilations": None},
}
# Element types every opset from 13 has for the operators above; a graph with others cannot be lowered.
OLD_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BOOL, TensorProto.INT8,
             TensorProto.INT16, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8, TensorProto.UINT16,
             TensorProto.UINT32, TensorProto.UINT64, TensorProto.STRING}


def model_opset(model: onnx.ModelProto) -> int:
    """The graph's opset of the standard ONNX domain (1 when it imports none)."""
    return max((entry.version for entry in model.opset_import if entry.domain in STANDARD_DOMAINS), default=1)


def _constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Tensors whose value the graph fixes: initializers (not also graph inputs) and Constant nodes' `value`."""
    inputs = {value.name for value in graph.input}
    found = {init.name: init for init in graph.initializer if init.name not in inputs}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS:
            for attr in node.attribute:
                if attr.name == "value":
                    found[node.output[0]] = attr.t
    return found


def _attribute(node: onnx.NodeProto, name: str):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def _same_function(node: onnx.NodeProto, version: int, opset: int, source: str) -> None:
    """Raise InputError unless every change of `node`'s operator after `opset`, up to `version`, keeps its function
    for this node (SAME_FUNCTION_WHEN)."""
    changes = [since for since in range(opset + 1, version + 1)
               if onnx.defs.get_schema(node.op_type, since).since_version == since]
    for since in changes:
        rule = SAME_FUNCTION_WHEN.get((node.op_type, since))
        if rule is None:
            raise InputError(f"{source}: operator {node.op_type} (node {node.name or node.output[0]!r}) changed in "
                             f"opset {since} and has no opset-{opset} form here; export the model at opset {opset} "
                             f"(export.opset={opset} for ours)")
        for key, allowed in rule.items():
            value = _attribute(node, key)
            if value is not None and (allowed is None or value not in allowed):
                value = value.decode() if isinstance(value, bytes) else value
                raise InputError(f"{source}: {node.op_type} node {node.name or node.output[0]!r} sets {key}={value!r}, "
                                 f"which opset {opset} does not have; export the model at opset {opset}")
    if node.op_type == "Pad" and len(node.input) > 3 and node.input[3]:
        raise InputError(f"{source}: Pad node {node.name or node.output[0]!r} pads only some axes (opset 18's `axes` "
                         f"input), which opset {opset} does not have; export the model at opset {opset}")


def lower_opset(model: onnx.ModelProto, opset: int, source: str) -> onnx.ModelProto:
    """A copy of `model` declared at `opset` (module docstring), or `model` itself when it is at `opset` or below.

    Reduce operators with constant axes get them back as an attribute; the Constant nodes and initializers that
    only held those axes are dropped. Raises InputError naming the operator when the graph has no exact form at
    `opset`: axes computed at run time, an operator or behaviour the older opset lacks, newer element types."""
    version = model_opset(model)
    if version <= opset:
        return model
    lowered = onnx.ModelProto.FromString(model.SerializeToString())
    graph = lowered.graph
    constants = _constants(graph)
    moved: set[str] = set()
    for node in graph.node:
        if node.domain not in STANDARD_DOMAINS:
            continue
        try:
            onnx.defs.get_schema(node.op_type, opset)
        except onnx.defs.SchemaError:
            raise InputError(f"{source}: operator {node.op_type} does not exist in opset {opset}; export the model "
                             f"at opset {opset} or below") from None
        since = AXES_INPUT_SINCE.get(node.op_type, version + 1)
        if since <= version and opset < since and len(node.input) > 1 and node.input[1]:
            if node.input[1] not in constants:
                raise InputError(f"{source}: {node.op_type} node {node.name or node.output[0]!r} takes its axes from "
                                 f"a computed tensor, which opset {opset} cannot express; export the model at opset "
                                 f"{opset}")
            axes = [int(v) for v in numpy_helper.to_array(constants[node.input[1]]).reshape(-1)]
            moved.add(node.input[1])
            del node.input[1:]
            if axes:  # empty axes (noop_with_empty_axes unset): every axis, the attribute's default
                node.attribute.append(helper.make_attribute("axes", axes))
        if onnx.defs.get_schema(node.op_type, version).since_version > opset:
            _same_function(node, version, opset, source)
    _drop_unused(graph, moved)
    types = {init.data_type for init in graph.initializer} | {
        value.type.tensor_type.elem_type for value in (*graph.input, *graph.output, *graph.value_info)
        if value.type.HasField("tensor_type")}
    newer = sorted(TensorProto.DataType.Name(t) for t in types - OLD_TYPES - {TensorProto.UNDEFINED})
    if newer:
        raise InputError(f"{source}: tensors of type {', '.join(newer)} have no opset-{opset} form; export the model "
                         f"in float32 at opset {opset}")
    for entry in lowered.opset_import:
        if entry.domain in STANDARD_DOMAINS:
            entry.version = opset
    return lowered


def _drop_unused(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove the Constant nodes and initializers among `names` that no node reads any more."""
    read = {name for node in graph.node for name in node.input} | {value.name for value in graph.output}
    unused = names - read
    kept = [node for node in graph.node if not (node.op_type == "Constant" and node.output[0] in unused)]
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [init for init in graph.initializer if init.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
