"""The ONNX contract consumers depend on (rtmlib, MMDeploy SDK), checked on any ONNX file.

Input `input` [N,3,H,W] float32; outputs `simcc_x` [N,K,2W] then `simcc_y` [N,K,2H], in that order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from pipeline.errors import InputError
from pipeline.variants import Variant

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


def check_io(model: onnx.ModelProto, variant: Variant, source: str) -> None:
    """Fail with both sides printed when names, order, dtypes or static dims differ."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    h, w = variant.input_hw
    expected_in = [(INPUT_NAME, ["N", 3, h, w])]
    expected_out = [(name, ["N", *shape]) for name, shape in variant.simcc_shapes.items()]
    actual_in = [(i.name, _dims(i)) for i in inputs]
    actual_out = [(o.name, _dims(o)) for o in model.graph.output]

    def matches(actual, expected) -> bool:
        if [n for n, _ in actual] != [n for n, _ in expected]:
            return False
        for (_, a_dims), (_, e_dims) in zip(actual, expected):
            if len(a_dims) != len(e_dims):
                return False
            # batch may be symbolic or fixed; every other dim must equal the variant's
            if any(isinstance(e, int) and a != e for a, e in zip(a_dims[1:], e_dims[1:])):
                return False
        return True

    if not matches(actual_in, expected_in) or not matches(actual_out, expected_out):
        raise InputError(f"{source} does not have the I/O of {variant.name}: inputs {actual_in} -> outputs "
                         f"{actual_out}; expected {expected_in} -> {expected_out}")
    for value in list(inputs) + list(model.graph.output):
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise InputError(f"{source}: tensor {value.name!r} is not float32")


def stem_channels(model: onnx.ModelProto) -> int | None:
    """Output channels of the first convolution fed by the image input: int(64 * widen // 2) in CSPNeXt."""
    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[0] == INPUT_NAME and node.input[1] in initializers:
            return int(initializers[node.input[1]].dims[0])
    return None


def check_variant(model: onnx.ModelProto, variant: Variant, source: str) -> None:
    """I/O contract plus what the I/O cannot show: the scale (stem width) and recorded variant name."""
    check_io(model, variant, source)
    from pipeline.variants import SCALES

    recorded = get_metadata(model).get("variant")
    if recorded and recorded != variant.name:
        raise InputError(f"{source} was exported as {recorded}, not model.name={variant.name}; set model={recorded}")
    channels = stem_channels(model)
    fits = [s for s, (_, widen) in SCALES.items() if int(64 * widen // 2) == channels]
    if channels is not None and variant.scale not in fits:
        h, w = variant.input_hw
        names = ", ".join(f"rtmpose-{s}_{variant.keypoints}_{h}x{w}" for s in fits) or "no released scale"
        raise InputError(f"{source} has a {channels}-channel stem, which fits {names}, not model.name={variant.name}")


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


def run_fp32(model: onnx.ModelProto, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Plain onnxruntime CPU run with graph optimisations off: the closest thing to the graph's math."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {INPUT_NAME: inputs})))
