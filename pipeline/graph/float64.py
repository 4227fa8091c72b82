"""A supplied float32 ONNX graph evaluated in float64: the float64 reference of a model we have no PyTorch for.

`to_float64` rewrites the graph's float32 to float64 everywhere a type is stated: initializers, tensors
held by attributes (Constant's `value`, ConstantOfShape's `value`; also in subgraphs), Constant's
`value_float(s)`, `Cast`/`CastLike` targets, and the types of inputs, outputs and value_info. Float
attributes (alpha, epsilon, ...) are read as Python floats and stay exact.

`run_float64` evaluates the rewritten graph with onnx's reference evaluator (numpy, float64 all the way):
onnxruntime has no float64 Conv on CPU. Three of its operators are replaced by exact, faster ones: Conv
(a Python im2col there) by one BLAS float64 matrix product per kernel tap, MaxPool (a Python loop per
output element) by a maximum over the kernel taps, Sigmoid by one exponential instead of two. It equals
PyTorch's `model.double()` of the same function to 1.5e-15 x scale (tests/graph/test_float64.py); the
golden set takes seconds to a minute (figures in conf/verify/default.yaml). Only operators of the
standard ONNX domain are evaluated; a graph with others (MMDeploy's or onnxruntime's custom operators)
raises InputError naming them, rather than falling back to a float32-only reference: without float64
the fp32 gate is the output-scale rule, which cannot tell one layer's weights off by 1% from rounding
(conf/verify/default.yaml), and the other backends cannot build custom operators either.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops._op import OpRunUnaryNum
from onnx.reference.ops.op_max_pool import MaxPool as ReferenceMaxPool

from pipeline.core.errors import InputError
from pipeline.core.onnx_io import fixed_batch, graph_inputs, run_in_chunks

STANDARD_DOMAINS = ("", "ai.onnx")
# Inputs per evaluation of a dynamic-batch graph: the evaluator keeps every intermediate tensor of a run, so
# memory grows with the batch. rtmpose-l 256x192, 11 inputs: peak RSS 3.2 GB at once, 1.6 GB in chunks of 4
# (42 s and 49 s on the shared 2-core Xeon at load 8: within its noise).
CHUNK = 4


def _tensor64(tensor: TensorProto) -> TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name)


def _graph_to_float64(graph: onnx.GraphProto) -> None:
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            graph.initializer[i].CopyFrom(_tensor64(init))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(_tensor64(attr.t))
            elif attr.type == AttributeProto.TENSORS:
                for tensor in attr.tensors:
                    if tensor.data_type == TensorProto.FLOAT:
                        tensor.CopyFrom(_tensor64(tensor))
            elif attr.type == AttributeProto.GRAPH:
                _graph_to_float64(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _graph_to_float64(sub)
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.DOUBLE
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name in ("value_float", "value_floats"):
            attr = node.attribute[0]
            value = np.array(attr.f if attr.name == "value_float" else list(attr.floats), np.float32)
            del node.attribute[:]
            tensor = numpy_helper.from_array(value.astype(np.float64))
            node.attribute.append(onnx.helper.make_attribute("value", tensor))
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.DOUBLE


def to_float64(model: onnx.ModelProto, source: str = "the supplied ONNX") -> onnx.ModelProto:
    """A copy of `model` computing in float64 wherever it computes in float32 (see the module docstring).

    Float32 values widen exactly, so the copy is the same function evaluated without float32 rounding.
    Raises InputError naming `source` and the operators outside the standard ONNX domain.
    """
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in STANDARD_DOMAINS})
    if custom:
        raise InputError(f"{source} uses non-standard operators ({', '.join(custom)}), which have no "
                         "float64 reference evaluation; export it with standard ONNX operators only (MMDeploy: "
                         "an onnxruntime deploy config without custom ops, or torch.onnx.export)")
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    _graph_to_float64(copy.graph)
    return copy


def _windows(padded: np.ndarray, kernel, dilations, strides, out_dims):
    """For each kernel tap: (tap, padded[:, :, windows of that tap]) shaped [N, C, *out_dims] (views)."""
    for tap in np.ndindex(*kernel):
        window = (slice(None), slice(None)) + tuple(
            slice(tap[i] * dilations[i], tap[i] * dilations[i] + strides[i] * (out_dims[i] - 1) + 1, strides[i])
            for i in range(len(kernel)))
        yield tap, padded[window]


def _geometry(x: np.ndarray, kernel, dilations, pads, strides, fill: float):
    """`x` padded with `fill`, and the dilations, strides and output dims of a window op (explicit pads)."""
    spatial = x.ndim - 2
    dilations = list(dilations or [1] * spatial)
    strides = list(strides or [1] * spatial)
    pads = list(pads or [0] * (2 * spatial))
    padded = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)],
                    constant_values=fill)
    out_dims = [(padded.shape[2 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(spatial)]
    return padded, dilations, strides, out_dims


class Conv(OpRun):
    """ONNX Conv (any group count, stride, dilation, explicit pads; 1-D to 3-D) in the input's dtype by BLAS
    products: out[:, group] += W[group, :, tap] @ X[:, group, tap-shifted window], one per kernel tap."""

    op_domain = ""

    def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None, pads=None,
             strides=None):
        if auto_pad not in (None, "NOTSET", b"NOTSET"):
            raise InputError(f"Conv with auto_pad={auto_pad!r} has no float64 evaluation here; re-export the "
                             "model with explicit pads (torch.onnx.export writes them)")
        group, spatial = group or 1, X.ndim - 2
        padded, dilations, strides, out_dims = _geometry(X, W.shape[2:], dilations, pads, strides, 0.0)
        c_out, c_in_group = W.shape[0], W.shape[1]
        c_out_group = c_out // group
        depthwise = c_in_group == 1 and group == X.shape[1]
        # depthwise: accumulated as [N, C_out, ...]; otherwise as [C_out, N, ...], tensordot's own layout
        out = np.zeros((X.shape[0], c_out, *out_dims) if depthwise else (c_out, X.shape[0], *out_dims),
                       np.result_type(X, W))
        for tap, shifted in _windows(padded, W.shape[2:], dilations, strides, out_dims):
            taps = W[(slice(None), slice(None), *tap)]  # [C_out, C_in / group]
            if depthwise:  # channel multiplier c_out_group
                source = shifted if c_out_group == 1 else np.repeat(shifted, c_out_group, axis=1)
                out += source * taps[:, 0].reshape(c_out, *([1] * spatial))
                continue
            for g in range(group):
                out[g * c_out_group:(g + 1) * c_out_group] += np.tensordot(
                    taps[g * c_out_group:(g + 1) * c_out_group], shifted[:, g * c_in_group:(g + 1) * c_in_group],
                    axes=([1], [1]))
        if not depthwise:
            out = np.ascontiguousarray(np.swapaxes(out, 0, 1))
        if B is not None:
            out += B.reshape(c_out, *([1] * spatial))
        return (out,)


class MaxPool(ReferenceMaxPool):
    """ONNX MaxPool as an elementwise maximum over the kernel taps (explicit pads, floor mode, no Indices
    output); anything else goes to onnx's own implementation (a Python loop per output element)."""

    def _run(self, x, auto_pad=None, ceil_mode=None, dilations=None, kernel_shape=None, pads=None,
             storage_order=None, strides=None):
        if auto_pad not in (None, "NOTSET", b"NOTSET") or ceil_mode or len(self.onnx_node.output) > 1:
            return super()._run(x, auto_pad=auto_pad, ceil_mode=ceil_mode, dilations=dilations,
                                kernel_shape=kernel_shape, pads=pads, storage_order=storage_order, strides=strides)
        padded, dilations, strides, out_dims = _geometry(x, kernel_shape, dilations, pads, strides, -np.inf)
        out = np.full((*x.shape[:2], *out_dims), -np.inf, x.dtype)
        for _, shifted in _windows(padded, kernel_shape, dilations, strides, out_dims):
            np.maximum(out, shifted, out=out)
        return (out,)


class Sigmoid(OpRunUnaryNum):
    """ONNX Sigmoid in one exponential: 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below (no overflow)."""

    def _run(self, x):
        e = np.exp(-np.abs(x))
        return (np.where(x >= 0, 1.0, e) / (1.0 + e)).astype(x.dtype, copy=False),


FAST_OPS = [Conv, MaxPool, Sigmoid]


def run_float64(model64: onnx.ModelProto, inputs: np.ndarray,
                source: str = "the supplied ONNX") -> dict[str, np.ndarray]:
    """`model64` (from `to_float64`) on `inputs` [N,C,H,W] (widened to float64 exactly), by output name,
    each float64; in chunks of `CHUNK` inputs, or of its batch where the graph fixes one. Raises InputError
    naming `source` when the evaluator cannot run the graph (with its error) or an output comes back in
    another dtype."""
    try:
        evaluator = ReferenceEvaluator(model64, new_ops=FAST_OPS)
    except Exception as exc:  # an operator or opset the reference evaluator lacks
        raise InputError(f"{source} has no float64 reference evaluation ({_first_line(exc)}); export it "
                         "with standard ONNX operators") from None
    names = [o.name for o in model64.graph.output]

    def call(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = evaluator.run(names, feeds)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"the float64 evaluation of {source} failed ({_first_line(exc)})") from None
        wrong = [f"{name} {value.dtype}" for name, value in zip(names, outputs) if value.dtype != np.float64]
        if wrong:
            raise InputError(f"the float64 evaluation of {source} returned {', '.join(wrong)}: an operator "
                             "computes in another precision; export it with float32 operators only")
        return dict(zip(names, outputs))

    feeds = {graph_inputs(model64)[0].name: inputs.astype(np.float64)}
    batch = fixed_batch(model64)
    if batch is not None:
        return run_in_chunks(call, feeds, batch)
    parts = [call({k: v[start:start + CHUNK] for k, v in feeds.items()}) for start in range(0, len(inputs), CHUNK)]
    return {name: np.concatenate([part[name] for part in parts]) for name in names}


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
