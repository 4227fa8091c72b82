"""`execution_precision` is what the runtime executes, read from the runtime itself (onnxruntime's profile of a
run, OpenVINO's runtime graph), never from the weights the build wrote: a build whose nodes all run in float32
is reported as float32, and verification then refuses it as an fp16 target."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from pipeline.backends import get_target
from pipeline.check.verify import check_execution_precision
from pipeline.config import OnnxRuntimeConfig, OpenVINOConfig

ORT_FP16, OV_FP16 = get_target("onnxruntime-fp16"), get_target("openvino-fp16")
# onnxruntime's names for the element types a node reads, as `execution_precision` names them
ORT_TYPES = {"float": "fp32", "float16": "fp16", "int8": "int8", "uint8": "int8"}


def _ort_profile(path: Path, tmp_path: Path) -> list[dict]:
    """The node events of one run of `path` on zeros in a plain profiled session (onnxruntime's own report)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, {"input": np.zeros((1, 3, 256, 192), np.float32)})
    events = json.loads(Path(session.end_profiling()).read_text())
    return [e["args"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]


def _ort_fp16(t_onnx: Path, folder: Path, keep_float_nodes: list[str]) -> Path:
    from pipeline.backends import onnxruntime as backend

    folder.mkdir()
    backend.build(t_onnx, ORT_FP16, OnnxRuntimeConfig(fp16_keep_float_nodes=keep_float_nodes), folder)
    return folder


def test_onnxruntime_fp16_reports_the_nodes_the_session_runs_in_fp16(t_onnx, tmp_path):
    from pipeline.backends import onnxruntime as backend

    folder = _ort_fp16(t_onnx, tmp_path / "fp16", [])
    executed = backend.Runner(folder, ORT_FP16, OnnxRuntimeConfig(), {}).settings["execution_precision"]
    nodes = _ort_profile(folder / "model.onnx", tmp_path)
    reads = [{next(iter(t)) for t in node["input_type_shape"]} for node in nodes if node["op_name"] != "Cast"]
    assert executed.get("fp16", 0) == sum("float16" in types for types in reads) > 0
    assert executed.get("fp32", 0) == sum("float" in types and "float16" not in types for types in reads)
    # Every weight of the file is float16, yet the session runs only the nodes above on float16 tensors: the CPU
    # provider casts what it has no float16 kernel for (on x86: Conv, MatMul) to float32 when the session is made.
    initializers = Counter(i.data_type for i in onnx.load(str(folder / "model.onnx")).graph.initializer)
    assert set(initializers) == {onnx.TensorProto.FLOAT16}
    fp16_ops = {node["op_name"] for node in nodes if any("float16" in t for t in node["input_type_shape"])}
    if "Conv" not in fp16_ops:
        assert executed["fp16"] < initializers[onnx.TensorProto.FLOAT16] and executed["fp32"] > executed["fp16"]


def test_an_onnxruntime_fp16_build_that_runs_in_float32_is_reported_fp32(t_onnx, tmp_path):
    """Every node kept in float: the file is an "fp16" build whose graph computes nothing in float16 (the converter
    still puts a Cast pair around each node); the runtime's report says fp32 and verification refuses it."""
    from pipeline.backends import onnxruntime as backend

    every_node = [node.name for node in onnx.load(str(t_onnx)).graph.node]
    assert all(every_node)
    folder = _ort_fp16(t_onnx, tmp_path / "float", every_node)
    executed = backend.Runner(folder, ORT_FP16, OnnxRuntimeConfig(), {}).settings["execution_precision"]
    assert set(executed) == {"fp32"}, executed
    assert check_execution_precision("fp16", executed) == [
        f"executes nothing in fp16 (measured: {executed}); the conversion did not apply"]


def _ov_counts(runner) -> dict[str, int]:
    """OpenVINO's own per-layer report: the runtime graph's `runtimePrecision`, constants and I/O left out."""
    counts: Counter[str] = Counter()
    names = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "i8": "int8", "u8": "int8"}
    for op in runner.compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) not in ("Const", "Input", "Output"):
            precision = names.get(info["runtimePrecision"].astype(str))
            if precision:
                counts[precision] += 1
    return dict(counts)


@pytest.mark.parametrize("hint", ["", "f32"])
def test_openvino_fp16_reports_its_runtime_graph(t_onnx, tmp_path, hint):
    """With f16 weights the CPU plugin reports f16 layers under either hint (under f32 compute: the layers reading
    f16 weights); the count is the plugin's, not the number of f16 constants in model.bin."""
    from pipeline.backends import openvino as backend

    backend.build(t_onnx, OV_FP16, OpenVINOConfig(), tmp_path)
    runner = backend.Runner(tmp_path, OV_FP16, OpenVINOConfig(inference_precision_hint=hint), {})
    executed = runner.settings["execution_precision"]
    assert executed == _ov_counts(runner) and executed["fp16"] > 0
    assert check_execution_precision("fp16", executed) == []
    if hint == "f32":
        assert executed["fp32"] > executed["fp16"]  # only the layers reading f16 weights


def test_an_openvino_fp16_target_computing_in_float32_is_reported_fp32(t_onnx, tmp_path):
    """float32 weights compiled for openvino-fp16 with the f32 hint: nothing runs in f16, whatever the target says."""
    import openvino as ov

    from pipeline.backends import openvino as backend

    ov.save_model(ov.convert_model(str(t_onnx)), str(tmp_path / "model.xml"), compress_to_fp16=False)
    runner = backend.Runner(tmp_path, OV_FP16, OpenVINOConfig(inference_precision_hint="f32"), {})
    executed = runner.settings["execution_precision"]
    assert set(executed) == {"fp32"} and executed == _ov_counts(runner)
    assert check_execution_precision("fp16", executed) == [
        f"executes nothing in fp16 (measured: {executed}); the conversion did not apply"]
