"""The reference stage of a supplied graph: the float32 run and the graph's float64 run, so that its targets are
judged by the reference-error rule as a checkpoint's are (pipeline/check/reference.py, pipeline/graph/float64.py)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from pipeline.check.verify import Golden
from pipeline.core.io import read_npz
from pipeline.run.configure import load_config
from pipeline.run.steps.reference import reference

from conftest import VARIANT, mmdeploy_style_export, run_stage, sdk_package


def test_an_sdk_folder_with_a_static_batch_graph_gets_a_float64_reference(t_model, t_variant, tmp_path):
    graph = mmdeploy_style_export(t_model, tmp_path / "end2end.onnx", dynamic=False)  # batch 1: run in chunks
    folder = sdk_package(t_variant, tmp_path / "end2end.onnx", tmp_path / "rtmpose-t-sdk")
    cfg = load_config([f"model.checkpoint={folder}", "verify.num_figures=1", "verify.num_random=1",
                       f"out_dir={tmp_path / 'out'}"])
    (variant,) = cfg.plan["variants"]
    golden = Golden.from_arrays(read_npz(reference(cfg, variant)))
    assert onnx.load(str(folder / "end2end.onnx")).graph.input[0] == graph.graph.input[0]
    assert golden.float64 is not None and golden.reference is golden.float64
    for name, float32 in golden.float32.items():
        float64 = golden.float64[name]
        assert float64.dtype == np.float64 and float64.shape == float32.shape
        assert float32.shape[:2] == (len(golden.inputs), 17)
        error = np.max(np.abs(float32 - float64)) / np.max(np.abs(float64))
        assert 1e-9 < error < 1e-5, (name, error)  # float32 rounding only


def test_a_graph_with_custom_operators_fails_the_reference_stage_in_one_line(t_onnx, tmp_path):
    """onnxruntime runs com.microsoft operators; there is no float64 evaluation of them. (The variant keeps
    the name our export records in the graph's metadata.)"""
    graph = onnx.load(str(t_onnx))
    relu = next(n for n in graph.graph.node if n.op_type == "Relu")
    relu.op_type, relu.domain = "Gelu", "com.microsoft"
    graph.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    path = tmp_path / "model.onnx"
    onnx.save_model(graph, str(path))
    result = run_stage("reference", VARIANT, f"model.checkpoint={path}", f"out_dir={tmp_path / 'out'}",
                       cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error: ") and "com.microsoft::Gelu" in lines[0], result.stderr
    assert lines[0].startswith(f"error: model.checkpoint={path} uses non-standard operators (com.microsoft::Gelu)")
    print(lines[0])
