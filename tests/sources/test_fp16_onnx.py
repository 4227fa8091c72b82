"""Supplied fp16 ONNX files (pipeline/sources/fp16_onnx.py): made with onnxconverter-common from the seeded
rtmpose-t export, with float32 I/O (`keep_io_types=True`) and fp16 I/O, and brought back to float32."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pipeline.config import ModelConfig
from pipeline.core.errors import InputError
from pipeline.core.onnx_io import run_fp32, weight_arrays
from pipeline.graph.fp16 import convert_fp16
from pipeline.sources.describe import describe
from pipeline.sources.fp16_onnx import describe_fp16, float32_form

float16 = pytest.importorskip("onnxconverter_common.float16", reason="onnxconverter-common (dev extra) is absent")

KEEP_IO = [True, False]


def fp16_file(t_onnx, keep_io_types: bool) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes on weights below fp16's range, which it clamps to 1e-7
        return float16.convert_float_to_float16(onnx.load(str(t_onnx)), keep_io_types=keep_io_types)


@pytest.mark.parametrize("keep_io_types", KEEP_IO)
def test_the_float32_form_is_the_exported_graph_with_the_files_weights(t_onnx, golden, keep_io_types):
    source = onnx.load(str(t_onnx))
    fp16 = fp16_file(t_onnx, keep_io_types)
    io = "float32 I/O" if keep_io_types else "fp16 I/O"
    assert describe_fp16(fp16) == f"an fp16 ONNX (90 fp16 weights, {io})"
    restored = float32_form(fp16, "test")
    onnx.checker.check_model(restored, full_check=True)
    assert describe_fp16(restored) == ""
    assert restored.graph.input == source.graph.input and restored.graph.output == source.graph.output
    # Every node of the export, under its own name, and no other (the converter's Casts are gone); the weights
    # are the file's, widened: the export with those weights computes the same float32 outputs, bit for bit.
    nodes = {node.name: node for node in source.graph.node}
    assert sorted(nodes) == sorted(node.name for node in restored.graph.node)
    file_weights = dict(weight_arrays(fp16))
    for node in restored.graph.node:
        if node.op_type != "Constant":
            assert node == nodes[node.name], node.name
    same = onnx.ModelProto.FromString(source.SerializeToString())
    for name, tensor in [(init.name, init) for init in same.graph.initializer] + [
            (node.output[0], node.attribute[0].t) for node in same.graph.node if node.op_type == "Constant"]:
        dtype = numpy_helper.to_array(tensor).dtype
        tensor.CopyFrom(numpy_helper.from_array(file_weights[name].astype(dtype), tensor.name))
    expected, outputs = run_fp32(same, golden), run_fp32(restored, golden)
    assert all(np.array_equal(expected[k], outputs[k]) for k in expected)
    assert float32_form(fp16, "test").SerializeToString() == restored.SerializeToString()


def test_a_float32_graph_is_returned_as_it_is(t_onnx):
    model = onnx.load(str(t_onnx))
    assert describe_fp16(model) == "" and float32_form(model, "test") is model


def test_the_fp16_pass_refuses_a_graph_that_is_fp16_already(t_onnx):
    once = convert_fp16(onnx.load(str(t_onnx)), [], [])
    with pytest.raises(InputError, match=r"already an fp16 ONNX \(\d+ fp16 weights, float32 I/O\); the fp16 pass "
                                         "takes a float32 graph"):
        convert_fp16(once, [], [])


@pytest.mark.parametrize("keep_io_types", KEEP_IO)
def test_an_fp16_file_describes_itself_as_such(t_onnx, tmp_path, keep_io_types):
    path = tmp_path / "model.onnx"
    fp16 = fp16_file(t_onnx, keep_io_types)
    del fp16.metadata_props[:]  # as another exporter's file: the I/O dims describe it
    onnx.save(fp16, str(path))
    spec = describe(ModelConfig(checkpoint=str(path)))
    assert spec.num_keypoints == 17 and tuple(spec.codec.input_size) == (192, 256)
    assert spec.source["file"].startswith("an fp16 ONNX (90 fp16 weights, ")


def test_our_own_fp16_artifact_comes_back_as_the_export(t_onnx):
    """The onnxruntime-fp16 artifact keeps ScaleNorm's ReduceL2 in float32 behind Casts; its float32 form has the
    export's nodes, no Cast, and no `precision: fp16` record."""
    source = onnx.load(str(t_onnx))
    fp16 = convert_fp16(source, ["ReduceL2"], [])
    assert sum(node.op_type == "Cast" for node in fp16.graph.node) == 7
    restored = float32_form(fp16, "test")
    assert sorted(node.name for node in restored.graph.node) == sorted(node.name for node in source.graph.node)
    assert not [node for node in restored.graph.node if node.op_type == "Cast"]
    assert "precision" not in {prop.key for prop in restored.metadata_props}
