"""The shared Q/DQ ONNX (signed, symmetric: what TensorRT takes) and onnxruntime's uint8 rewrite of it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from pipeline.config import QuantizeConfig
from pipeline.graph.quantize import activations_to_uint8, quantize_qdq

from conftest import run_onnx


@pytest.fixture(scope="module")
def qdq(t_onnx, golden, tmp_path_factory) -> onnx.ModelProto:
    out = tmp_path_factory.mktemp("qdq") / "q.onnx"
    quantize_qdq(t_onnx, golden[:3], QuantizeConfig(), out)
    return onnx.load(str(out))


def _zero_points(model: onnx.ModelProto, op_type: str) -> list[np.ndarray]:
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[2]] for n in model.graph.node if n.op_type == op_type]


def test_shared_qdq_is_signed_and_symmetric(qdq):
    zero_points = _zero_points(qdq, "QuantizeLinear")
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)


def test_uint8_rewrite_keeps_int8_weights_and_accuracy(qdq, golden, torch_outputs):
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(qdq)
    count = activations_to_uint8(rewritten)
    assert count == sum(1 for n in qdq.graph.node if n.op_type == "QuantizeLinear")
    assert all(z.dtype == np.uint8 and (z == 128).all() for z in _zero_points(rewritten, "QuantizeLinear"))
    weights = [i for i in rewritten.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert weights  # conv weights stay int8 (U8S8)
    onnx.checker.check_model(rewritten)
    signed, unsigned = run_onnx(qdq, golden), run_onnx(rewritten, golden)
    for name in signed:
        # Same quantized values; onnxruntime runs them through its fused U8S8 kernels, whose requantization
        # rounds differently from the int8-activation path, so compare both with the float model instead.
        error_signed = np.mean(np.abs(signed[name] - torch_outputs[name]))
        error_unsigned = np.mean(np.abs(unsigned[name] - torch_outputs[name]))
        assert error_unsigned <= 1.1 * error_signed + 1e-3, (name, error_unsigned, error_signed)


def test_a_float_model_has_nothing_to_rewrite(t_onnx):
    assert activations_to_uint8(onnx.load(str(t_onnx))) == 0
