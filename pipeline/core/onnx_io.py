"""The ONNX contract consumers depend on (rtmlib, MMDeploy SDK), checked and enforced on any ONNX file.

Input `input` [N,3,H,W] float32; outputs `simcc_x` [N,K,W*r] then `simcc_y` [N,K,H*r], in that order
(r the SimCC split ratio). Graphs from other exporters are brought to it: one image input and two
SimCC outputs under other names are renamed, and a symbolic keypoint dimension (MMDeploy leaves it as
`MatMulsimcc_x_dim_1`) is pinned. A graph with a fixed batch (DWPose's, many released files, our own
`export.dynamic_batch=false`) is run in chunks of its batch (`run_fp32`, `pipeline.backends.common`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from pipeline.core.errors import InputError
from pipeline.core.finite import non_finite

INPUT_NAME = "input"
OUTPUT_NAMES = ("simcc_x", "simcc_y")


def _dims(value_info) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def load_onnx(path: str | Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except FileNotFoundError:
        raise InputError(f"ONNX file {path} does not exist") from None
    except Exception as exc:  # onnx raises DecodeError or ValueError on damaged files
        raise InputError(f"{path} is not a readable ONNX model ({type(exc).__name__}); "
                         "re-export or re-download it") from None


def weight_arrays(model: onnx.ModelProto):
    """(name, array) of every initializer and Constant node value of the main graph, lazily."""
    from onnx import numpy_helper

    for init in model.graph.initializer:
        yield init.name, numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield node.output[0], numpy_helper.to_array(attr.t)


def check_finite_weights(model: onnx.ModelProto, source: str) -> None:
    """Refuse a graph whose weights hold NaN or ±Inf (every output would be NaN); InputError names them."""
    found = non_finite(weight_arrays(model))
    if found:
        raise InputError(f"{source} holds non-finite weights: {found}; the model file is damaged or its training "
                         "diverged: use an earlier or re-downloaded model")


def load_onnx_bytes(data: bytes, source: str) -> onnx.ModelProto:
    try:
        return onnx.load_from_string(data)
    except Exception as exc:
        raise InputError(f"{source} is not a readable ONNX model ({type(exc).__name__}); re-download it") from None


def graph_inputs(model: onnx.ModelProto) -> list:
    initializers = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def io_dims(model: onnx.ModelProto, source: str) -> tuple[list[int | str], dict[str, list[int | str]]]:
    """Input dims [N,3,H,W] and the two SimCC outputs' dims, keyed simcc_x/simcc_y (by name, else order).

    Raises InputError when the graph is not one image input to two rank-3 float outputs.
    """
    inputs, outputs = graph_inputs(model), list(model.graph.output)
    channels = _dims(inputs[0])[1] if len(inputs) == 1 and len(_dims(inputs[0])) == 4 else None
    if channels is None or (isinstance(channels, int) and channels != 3):
        raise InputError(f"{source}: expected one image input [N,3,H,W], got "
                         f"{[(i.name, _dims(i)) for i in inputs]}")
    if len(outputs) != 2 or any(len(_dims(o)) != 3 for o in outputs):
        raise InputError(f"{source}: expected two SimCC outputs [N,K,bins] (simcc_x, simcc_y), got "
                         f"{[(o.name, _dims(o)) for o in outputs]}")
    for value in (*inputs, *outputs):
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise InputError(f"{source}: tensor {value.name!r} is not float32")
    names = [o.name for o in outputs]
    ordered = ([outputs[names.index(n)] for n in OUTPUT_NAMES] if sorted(names) == sorted(OUTPUT_NAMES)
               else outputs)  # rtmlib's contract: x first, then y
    return _dims(inputs[0]), {name: _dims(o) for name, o in zip(OUTPUT_NAMES, ordered)}


def input_dims(model: onnx.ModelProto) -> list[int | str]:
    """The image input's dims [N,3,H,W]: the size where the graph fixes one, else the symbolic name ("?" unnamed)."""
    return _dims(graph_inputs(model)[0])


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The graph's batch size when its input fixes one, else None (dynamic)."""
    batch = input_dims(model)[0]
    return batch if isinstance(batch, int) and batch > 0 else None


def pin_keypoint_dim(model: onnx.ModelProto, input_size: tuple[int, int], batch: int | str, source: str) -> int:
    """K of a graph that leaves it symbolic: run it once on zeros and read the output shape."""
    w, h = input_size
    n = batch if isinstance(batch, int) and batch > 0 else 1
    try:
        outputs = _session(model).run(None, {graph_inputs(model)[0].name: np.zeros((n, 3, h, w), np.float32)})
    except Exception as exc:  # onnxruntime's own errors on graphs it cannot run
        raise InputError(f"{source}: onnxruntime cannot run it at input {w}x{h} "
                         f"({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]})") from None
    return int(outputs[0].shape[1])


def canonicalize_io(model: onnx.ModelProto, spec: Any) -> list[str]:
    """Rename the image input to `input` and the outputs to simcc_x/simcc_y (by name where they have
    them, else by position: rtmlib's order is x, y), put the outputs in that order, and fix K and the
    bins in the output shapes; in place. Returns what was changed (for the record)."""
    changes = []
    io_dims(model, "model")
    renames = {graph_inputs(model)[0].name: INPUT_NAME}
    names = [o.name for o in model.graph.output]
    if sorted(names) != sorted(OUTPUT_NAMES):
        renames.update(dict(zip(names, OUTPUT_NAMES)))
    elif names != list(OUTPUT_NAMES):
        ordered = sorted(model.graph.output, key=lambda o: OUTPUT_NAMES.index(o.name))
        copies = [onnx.ValueInfoProto.FromString(o.SerializeToString()) for o in ordered]
        del model.graph.output[:]
        model.graph.output.extend(copies)
        changes.append("put the outputs in the order simcc_x, simcc_y")
    renames = {old: new for old, new in renames.items() if old != new}
    if renames:
        for node in model.graph.node:
            for i, name in enumerate(node.input):
                node.input[i] = renames.get(name, name)
            for i, name in enumerate(node.output):
                node.output[i] = renames.get(name, name)
        for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
            value.name = renames.get(value.name, value.name)
        changes.append("renamed " + ", ".join(f"{a} -> {b}" for a, b in sorted(renames.items())))
    shapes = spec.simcc_shapes
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        for dim, size in zip(list(dims)[1:], shapes[output.name]):
            if not dim.HasField("dim_value"):
                changes.append(f"pinned {output.name} dim {dim.dim_param or '?'} = {size}")
            dim.Clear()
            dim.dim_value = size
    return changes


def check_io(model: onnx.ModelProto, spec: Any, source: str) -> None:
    """Fail with both sides printed when names, order, dtypes or static dims differ from the description."""
    h, w = spec.input_hw
    expected_in = [(INPUT_NAME, ["N", 3, h, w])]
    expected_out = [(name, ["N", *shape]) for name, shape in spec.simcc_shapes.items()]
    actual_in = [(i.name, _dims(i)) for i in graph_inputs(model)]
    actual_out = [(o.name, _dims(o)) for o in model.graph.output]

    def matches(actual, expected) -> bool:
        if [n for n, _ in actual] != [n for n, _ in expected]:
            return False
        for (_, a_dims), (_, e_dims) in zip(actual, expected):
            if len(a_dims) != len(e_dims):
                return False
            # batch may be symbolic or fixed; every other dim must equal the description's
            if any(isinstance(e, int) and a != e for a, e in zip(a_dims[1:], e_dims[1:])):
                return False
        return True

    if not matches(actual_in, expected_in) or not matches(actual_out, expected_out):
        raise InputError(f"{source} does not have the I/O of {spec.name}: inputs {actual_in} -> outputs "
                         f"{actual_out}; expected {expected_in} -> {expected_out}")
    for value in list(graph_inputs(model)) + list(model.graph.output):
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise InputError(f"{source}: tensor {value.name!r} is not float32")


def set_metadata(model: onnx.ModelProto, props: dict[str, object]) -> None:
    """Replace metadata_props with sorted key/values; non-strings are stored as JSON."""
    del model.metadata_props[:]
    for key in sorted(props):
        value = props[key]
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def get_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Serialise deterministically (onnx.save_model writes the same bytes for the same proto)."""
    onnx.save_model(model, str(path))


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_in_chunks(call, feeds: dict[str, np.ndarray], batch: int | None) -> dict[str, np.ndarray]:
    """`call(feeds)` for a model whose batch is fixed at `batch` (None: dynamic, one call): the feeds
    [N,...] go in chunks of `batch`, a short last chunk padded with zeros and the padding dropped."""
    total = len(next(iter(feeds.values())))
    if batch is None or total == batch:
        return call(feeds)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, total, batch):
        chunk = {k: v[start:start + batch] for k, v in feeds.items()}
        size = len(next(iter(chunk.values())))
        padded = {k: np.concatenate([v, np.zeros((batch - size, *v.shape[1:]), v.dtype)]) for k, v in chunk.items()}
        parts.append({k: v[:size] for k, v in call(padded).items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def run_fp32(model: onnx.ModelProto, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Plain onnxruntime CPU run with graph optimisations off: the closest thing to the graph's math.

    Outputs are keyed by the graph's output names; a fixed-batch graph runs in chunks of its batch."""
    session = _session(model)
    names = [o.name for o in session.get_outputs()]
    feeds = {session.get_inputs()[0].name: inputs}
    return run_in_chunks(lambda f: dict(zip(names, session.run(names, f))), feeds, fixed_batch(model))
