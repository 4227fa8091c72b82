"""Deliberate faults made in a built artifact's model.onnx, the way they happen in real conversions: one layer's
weights off (a bad weight transfer or a miscompiled kernel), ScaleNorm's norm computed in fp16 where its sum of
squares overflows, one activation's INT8 quantization scale off (a bad calibration of one tensor). Each edits
the ONNX in memory; tests/check/test_big_model_faults.py and test_int8_gate.py verify the result."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

FP16_MAX = 65504.0  # the largest finite fp16 value


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def weighted_layers(model: onnx.ModelProto, dtype: int = onnx.TensorProto.FLOAT) -> list[tuple[onnx.NodeProto, int]]:
    """(node, group) of every Conv / MatMul / Gemm whose weights are an initializer of `dtype`, in graph order."""
    inits = _initializers(model)
    return [(node, next((a.i for a in node.attribute if a.name == "group"), 1)) for node in model.graph.node
            if node.op_type in ("Conv", "MatMul", "Gemm") and len(node.input) > 1
            and node.input[1] in inits and inits[node.input[1]].data_type == dtype]


def middle_depthwise_conv(model: onnx.ModelProto, dtype: int = onnx.TensorProto.FLOAT) -> onnx.NodeProto:
    """The middle one of the depthwise convolutions (group > 1): a small layer (C x 1 x 5 x 5 in CSPNeXt)."""
    depthwise = [node for node, group in weighted_layers(model, dtype) if group > 1]
    return depthwise[len(depthwise) // 2]


def gau_projection(model: onnx.ModelProto, dtype: int = onnx.TensorProto.FLOAT) -> onnx.NodeProto:
    """The first MatMul of the head's gated attention unit (its uv projection)."""
    return next(node for node, _ in weighted_layers(model, dtype) if node.name.startswith("/head/gau/")
                and node.op_type == "MatMul")


def perturb_layer(model: onnx.ModelProto, node: onnx.NodeProto, relative: float = 0.0, factor: float = 1.0,
                  seed: int = 0) -> int:
    """Multiply `node`'s weights (its second input, any float dtype, kept) by `factor` x (1 + N(0, relative));
    returns how many weights changed."""
    init = _initializers(model)[node.input[1]]
    weights = numpy_helper.to_array(init)
    noise = 1 + relative * np.random.default_rng(seed).standard_normal(weights.shape)
    changed = (weights.astype(np.float64) * factor * noise).astype(weights.dtype)
    init.CopyFrom(numpy_helper.from_array(changed, init.name))
    return int(np.count_nonzero(changed != weights))


def overflowing_scale_norm(model: onnx.ModelProto, prefix: str = "/head/mlp/") -> int:
    """Replace each ReduceL2 under `prefix` (the head's ScaleNorm) by sqrt(sum(x * x)) whose sum becomes inf above
    fp16's largest value: what an engine computing the norm in fp16 gives (ONNX Runtime's CPU provider computes fp16
    reductions in float32, so the overflow is written out). Returns how many norms were replaced."""
    graph, nodes, count = model.graph, [], 0
    dtype = np.float16 if any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer) else np.float32
    for node in graph.node:
        if node.op_type != "ReduceL2" or not node.name.startswith(prefix):
            nodes.append(node)
            continue
        name, x = node.name, node.input[0]
        axes = next(list(a.ints) for a in node.attribute if a.name == "axes")
        keepdims = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        graph.initializer.extend([numpy_helper.from_array(np.array(axes, np.int64), f"{name}/axes"),
                                  numpy_helper.from_array(np.array(FP16_MAX, dtype), f"{name}/fp16_max"),
                                  numpy_helper.from_array(np.array(np.inf, dtype), f"{name}/inf")])
        nodes += [helper.make_node("Mul", [x, x], [f"{name}/squares"], name=f"{name}/square"),
                  helper.make_node("ReduceSum", [f"{name}/squares", f"{name}/axes"], [f"{name}/sum"],
                                   name=f"{name}/sum", keepdims=keepdims),
                  helper.make_node("Greater", [f"{name}/sum", f"{name}/fp16_max"], [f"{name}/overflows"],
                                   name=f"{name}/overflows"),
                  helper.make_node("Where", [f"{name}/overflows", f"{name}/inf", f"{name}/sum"], [f"{name}/sum_fp16"],
                                   name=f"{name}/overflow"),
                  helper.make_node("Sqrt", [f"{name}/sum_fp16"], list(node.output), name=f"{name}/sqrt")]
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def activation_quantizers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The QuantizeLinear nodes of activations (not of initializers), in graph order."""
    inits = _initializers(model)
    return [node for node in model.graph.node if node.op_type == "QuantizeLinear" and node.input[0] not in inits]


def scale_activation_quantization(model: onnx.ModelProto, quantizer: onnx.NodeProto, factor: float) -> list[str]:
    """Multiply the scale of one activation's QuantizeLinear and of the DequantizeLinear nodes reading it by
    `factor` (a consistent but `factor` x coarser quantization: log2(factor) bits lost); the scales' names."""
    inits = _initializers(model)
    names = {quantizer.input[1]} | {node.input[1] for node in model.graph.node
                                    if node.op_type == "DequantizeLinear" and node.input[0] == quantizer.output[0]}
    for name in sorted(names):
        scale = numpy_helper.to_array(inits[name])
        inits[name].CopyFrom(numpy_helper.from_array((scale * factor).astype(scale.dtype), name))
    return sorted(names)
