"""A supplied graph evaluated in float64 (pipeline/graph/float64.py): exactly the graph's function, in float64.

The graphs are ours (export_onnx, opset 17) and MMDeploy-style exports of the same network (torch2onnx's
form: opset 11, no metadata, K left symbolic; or a fixed batch of 1), as ../shared/cases/mmdeploy-onnx holds.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from pipeline.core.errors import InputError
from pipeline.core.onnx_io import canonicalize_io, fixed_batch, run_fp32
from pipeline.graph.export import fold_batchnorm
from pipeline.graph.float64 import run_float64, to_float64
from pipeline.model import rtmpose

from conftest import mmdeploy_style_export, torch_forward


def float32_constants(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with the Python-float constants an ONNX export stores as float32 (ScaleNorm's scale and
    eps, GAU's sqrt(s)) rounded to float32, so that `.double()` computes the exported graph's function."""
    for module in model.modules():
        if isinstance(module, rtmpose.ScaleNorm):
            module.scale, module.eps = float(np.float32(module.scale)), float(np.float32(module.eps))
        if hasattr(module, "sqrt_s"):
            module.sqrt_s = float(np.float32(module.sqrt_s))
    return model


def scaled_error(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """max over outputs of max|a - b| / max|b|."""
    return max(float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(b[k]))) for k in b)


def test_the_float64_run_is_pytorch_double_of_the_same_function(t_model, t_onnx, golden, monkeypatch):
    """Our export of rtmpose-t in float64 equals PyTorch's `model.double()` to float64 rounding, once the
    graph's float32 constants (folded BatchNorm, 1/6 of HardSigmoid, ScaleNorm, GAU) are PyTorch's too."""
    graph = onnx.load(str(t_onnx))
    float64 = run_float64(to_float64(graph), golden)
    float32 = run_fp32(graph, golden)
    assert {k: (v.dtype, v.shape) for k, v in float64.items()} == {k: (np.float64, v.shape) for k, v in float32.items()}

    same = float32_constants(fold_batchnorm(t_model)).double()
    sixth = float(np.float32(1 / 6))  # HardSigmoid's alpha attribute is a float32
    monkeypatch.setattr(F, "hardsigmoid", lambda x: torch.clamp(x * sixth + 0.5, 0.0, 1.0))
    with torch.no_grad():
        outputs = same(torch.from_numpy(golden).double())
    torch_double = {name: t.numpy() for name, t in zip(("simcc_x", "simcc_y"), outputs)}
    assert scaled_error(float64, torch_double) < 1e-13  # measured 1.1e-15 - 1.5e-15

    # The float32 run differs from it by the float32 reference's own error (PyTorch float32 vs double).
    monkeypatch.undo()
    own = scaled_error(torch_forward(t_model, golden), torch_double)
    assert 0.2 < scaled_error(float32, float64) / own < 5, (scaled_error(float32, float64), own)


@pytest.mark.parametrize("dynamic", [True, False], ids=["mmdeploy-symbolic-keypoints", "static-batch-1"])
def test_an_mmdeploy_style_graph_gets_a_float64_run(dynamic, t_model, t_variant, golden, tmp_path):
    graph = mmdeploy_style_export(t_model, tmp_path / "end2end.onnx", dynamic)
    assert graph.opset_import[0].version == 11 and fixed_batch(graph) == (None if dynamic else 1)
    canonicalize_io(graph, t_variant)
    float64 = run_float64(to_float64(graph), golden)  # a static graph in chunks of 1
    float32 = run_fp32(graph, golden)
    assert all(v.dtype == np.float64 and v.shape == float32[k].shape for k, v in float64.items())
    assert 1e-9 < scaled_error(float32, float64) < 1e-5  # float32 rounding, nothing else
    if not dynamic:  # the same function as the dynamic graph's
        dynamic_run = run_float64(to_float64(mmdeploy_style_export(t_model, tmp_path / "d.onnx", True)), golden)
        assert scaled_error({"simcc_x": float64["simcc_x"]}, {"simcc_x": dynamic_run["simcc_x"]}) < 1e-13


def test_a_graph_with_custom_operators_is_refused_with_the_operator_named(t_onnx):
    graph = onnx.load(str(t_onnx))
    next(n for n in graph.graph.node if n.op_type == "Sigmoid").domain = "mmdeploy"
    with pytest.raises(InputError, match=r"non-standard operators \(mmdeploy::Sigmoid\)"):
        to_float64(graph)


def single_node(op: str, inputs: dict[str, np.ndarray], weights: dict[str, np.ndarray], **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, [*inputs, *weights], ["y"], **attrs)
    graph = helper.make_graph(
        [node], op, [helper.make_tensor_value_info(n, TensorProto.FLOAT, v.shape) for n, v in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, n) for n, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("groups, c_out, stride, dilation, pads", [
    (1, 6, 1, 1, [1, 1, 1, 1]), (2, 6, 2, 2, [0, 1, 2, 1]), (4, 8, 1, 1, [2, 2, 2, 2]), (4, 4, 2, 1, [1, 0, 1, 0])],
    ids=["dense", "grouped-strided-dilated-asymmetric", "depthwise-multiplier-2", "depthwise-strided"])
def test_conv_in_float64_equals_pytorch_double(groups, c_out, stride, dilation, pads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 11, 9)).astype(np.float32)
    w = rng.standard_normal((c_out, 4 // groups, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    graph = single_node("Conv", {"x": x}, {"w": w, "b": b}, group=groups, strides=[stride] * 2,
                        dilations=[dilation] * 2, pads=pads)
    ours = run_float64(to_float64(graph), x)["y"]
    padded = F.pad(torch.from_numpy(x).double(), (pads[1], pads[3], pads[0], pads[2]))
    expected = F.conv2d(padded, torch.from_numpy(w).double(), torch.from_numpy(b).double(), stride, 0, dilation, groups)
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, expected.numpy(), rtol=0, atol=1e-13)


def test_maxpool_in_float64_equals_pytorch():
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 7)).astype(np.float32)
    graph = single_node("MaxPool", {"x": x}, {}, kernel_shape=[5, 5], strides=[2, 2], pads=[2, 2, 2, 2])
    ours = run_float64(to_float64(graph), x)["y"]
    expected = F.max_pool2d(torch.from_numpy(x).double(), 5, 2, 2)
    assert ours.dtype == np.float64
    np.testing.assert_array_equal(ours, expected.numpy())
