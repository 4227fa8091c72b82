"""Lowering a graph to an older opset (pipeline/graph/opset.py): exact where it can be, one-line refusals where not."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.config import ExportConfig
from pipeline.core.errors import InputError
from pipeline.core.onnx_io import run_fp32
from pipeline.graph.export import export_onnx
from pipeline.graph.opset import lower_opset, model_opset
from pipeline.sources.weights import WeightsInfo


@pytest.fixture(scope="module")
def opset18(t_model, t_variant, tmp_path_factory) -> onnx.ModelProto:
    path = tmp_path_factory.mktemp("opset18") / "model.onnx"
    export_onnx(t_model, t_variant, WeightsInfo("synthetic", "test", "", ""), ExportConfig(opset=18), path)
    return onnx.load(str(path))


def test_rtmpose_at_opset18_lowers_to_17_exactly_and_deterministically(opset18, golden):
    reduces = [node for node in opset18.graph.node if node.op_type == "ReduceL2"]
    assert reduces and all(len(node.input) == 2 for node in reduces)  # ScaleNorm's axes come as an input
    lowered = lower_opset(opset18, 17, "test")
    onnx.checker.check_model(lowered, full_check=True)
    assert model_opset(lowered) == 17 and model_opset(opset18) == 18  # the given graph is not changed
    for node in (n for n in lowered.graph.node if n.op_type == "ReduceL2"):
        assert len(node.input) == 1 and [list(a.ints) for a in node.attribute if a.name == "axes"] == [[-1]]
    assert len(lowered.graph.node) == len(opset18.graph.node) - len(reduces)  # their Constant nodes are gone
    before, after = run_fp32(opset18, golden), run_fp32(lowered, golden)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # same function: the same float32 outputs
    assert lowered.SerializeToString() == lower_opset(opset18, 17, "test").SerializeToString()


def test_a_graph_at_or_below_the_opset_is_returned_as_it_is(opset18):
    assert lower_opset(opset18, 18, "test") is opset18


def _graph(nodes, initializers=(), opset=18, out_shape=(2, 1)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
                              initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def test_axes_from_an_initializer_and_empty_axes():
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    model = _graph([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)], [axes])
    lowered = lower_opset(model, 17, "test")
    assert not lowered.graph.initializer and list(lowered.graph.node[0].attribute[-1].ints) == [1]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert np.array_equal(run_fp32(model, x)["y"], run_fp32(lowered, x)["y"])

    empty = numpy_helper.from_array(np.array([], np.int64), "axes")
    model = _graph([helper.make_node("ReduceMax", ["x", "axes"], ["y"], keepdims=1)], [empty], out_shape=(1, 1))
    lowered = lower_opset(model, 17, "test")
    assert not [a for a in lowered.graph.node[0].attribute if a.name == "axes"]  # every axis, the default
    assert np.array_equal(run_fp32(model, x)["y"], run_fp32(lowered, x)["y"])


@pytest.mark.parametrize("nodes, initializers, message", [
    ([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Slice", ["s", "one", "two"], ["axes"]),
      helper.make_node("ReduceL2", ["x", "axes"], ["y"], name="norm")],
     [numpy_helper.from_array(np.array([1], np.int64), "one"), numpy_helper.from_array(np.array([2], np.int64), "two")],
     "test: ReduceL2 node 'norm' takes its axes from a computed tensor, which opset 17 cannot express; export the "
     "model at opset 17"),
    ([helper.make_node("Split", ["x"], ["y", "z"], axis=1, num_outputs=2, name="split")], [],
     "Split node 'split' sets num_outputs=2, which opset 17 does not have"),
    ([helper.make_node("Mish", ["x"], ["y"])], [], "operator Mish does not exist in opset 17"),
    ([helper.make_node("ReduceL2", ["x"], ["y"], noop_with_empty_axes=1, name="norm")], [],
     "ReduceL2 node 'norm' sets noop_with_empty_axes=1"),
])
def test_what_opset17_cannot_express_is_refused_naming_the_operator(nodes, initializers, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        lower_opset(_graph(nodes, initializers), 17, "test")


def test_a_newer_behaviour_is_refused_only_where_a_node_uses_it():
    pads = numpy_helper.from_array(np.array([0, 1, 0, 1], np.int64), "pads")
    for mode, refused in (("reflect", False), ("wrap", True)):
        model = _graph([helper.make_node("Pad", ["x", "pads"], ["y"], mode=mode, name="pad")], [pads], opset=19,
                       out_shape=(2, 6))
        if refused:
            with pytest.raises(InputError, match="Pad node 'pad' sets mode='wrap', which opset 17 does not have"):
                lower_opset(model, 17, "test")
        else:
            x = np.arange(8, dtype=np.float32).reshape(2, 4)
            assert np.array_equal(run_fp32(model, x)["y"], run_fp32(lower_opset(model, 17, "test"), x)["y"])
