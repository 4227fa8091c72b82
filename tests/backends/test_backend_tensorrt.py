"""The TensorRT backend. Without a GPU: reading the executed precision from the engine inspector's JSON, and
the module's source scanned for APIs TensorRT 11 (or 10) removed. With one (`pytest -m gpu`): engines built
from the demo for fp16 and int8, run, gated, their layer precisions read, and refused on another GPU.

The JSON layouts follow TensorRT's documentation: with ProfilingVerbosity.DETAILED each layer is an
object whose `Outputs` carry `Format/Datatype` (TensorRT 10) or `DataType` (TensorRT 11, see
"Migrating IEngineInspector Usage from TensorRT 10.x to 11.x"); without it layers are bare names.
The graphs engines are built from are checked on CPU in tests/check/test_preview.py.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.backends import tensorrt as tensorrt_backend
from pipeline.backends.tensorrt import layer_precisions
from pipeline.check.verify import check_execution_precision, verify_artifact
from pipeline.core.errors import InputError, RuntimeMissingError
from pipeline.core.hardware import gpu_fingerprint

from conftest import DEMO_CHECKPOINT
from engine_graphs import FP16, INT8, ModelGraphs


def detailed(*formats: str, key: str = "Format/Datatype") -> str:
    layers = [{"Name": f"layer{i}", "LayerType": "CaskConvolution",
               "Inputs": [{"Name": f"in{i}", key: "Row major linear FP32 format"}],
               "Outputs": [{"Name": f"out{i}", key: fmt}]} for i, fmt in enumerate(formats)]
    return json.dumps({"Layers": layers, "Bindings": ["input", "simcc_x", "simcc_y"]})


def test_tensorrt10_detailed_formats_are_counted_per_layer_output():
    info = detailed("Channel major FP16 format where channel % 8 == 0", "Half", "Int8", "Row major linear INT8 format",
                    "Row major linear FP32 format", "Float")
    assert layer_precisions(info) == {"fp16": 2, "fp32": 2, "int8": 2}


def test_tensorrt11_datatype_field_is_read():
    assert layer_precisions(detailed("Half", "Float", "BFloat16", key="DataType")) == {"bf16": 1, "fp16": 1, "fp32": 1}


def test_an_engine_without_detailed_verbosity_is_refused():
    names_only = json.dumps({"Layers": ["conv1 + relu", "gemm"], "Bindings": ["input", "simcc_x", "simcc_y"]})
    with pytest.raises(InputError, match="built without ProfilingVerbosity.DETAILED"):
        layer_precisions(names_only)


# --------------------------------------------------------------------------------------------- TensorRT 10 and 11

MODULE = Path(tensorrt_backend.__file__)
# Python APIs the module must not use, with where they went. TensorRT 11 removed them: "Removed Python APIs and
# Replacements", https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html
# (IBuilder.platform_has_fast_*, the algorithm selector: the C++ page of the same guide; the calibrator classes:
# deprecated since 10.1 "superseded by explicit quantization", gone with IBuilderConfig.int8_calibrator).
# TensorRT 10 had removed the binding-index API and the implicit-batch builder: "Removed Python APIs" of
# https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-8x-to-10x-python-api-reference.html
# Qualified names (enum members) match `Enum.MEMBER`; bare names match any attribute, name, import or string.
REMOVED = {
    **{f"BuilderFlag.{flag}": "TensorRT 11: strongly typed network (an fp16 ONNX graph, Q/DQ nodes)" for flag in
       ("FP16", "INT8", "FP8", "BF16", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
        "DIRECT_IO")},
    **{name: "TensorRT 11: explicit quantization with Q/DQ nodes" for name in
       ("int8_calibrator", "set_calibration_profile", "get_calibration_profile", "set_quantization_flag",
        "get_quantization_flag", "quantization_flags", "clear_quantization_flag", "IInt8Calibrator",
        "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator",
        "CalibrationAlgoType", "platform_has_fast_int8")},
    "platform_has_fast_fp16": "TensorRT 11: strongly typed networks",
    "device_memory_size": "TensorRT 11: ICudaEngine.device_memory_size_v2",
    "algorithm_selector": "TensorRT 11: editable timing cache",
    "IAlgorithmSelector": "TensorRT 11: editable timing cache",
    **{name: "TensorRT 10: name-based I/O tensors (get_tensor_name/shape/mode, set_input_shape)" for name in
       ("num_bindings", "get_binding_index", "get_binding_name", "get_binding_shape", "get_binding_dtype",
        "binding_is_input", "set_binding_shape", "get_binding_format", "max_batch_size")},
    **{name: "TensorRT 10: IExecutionContext.execute_async_v3" for name in ("execute_async_v2", "execute_async",
                                                                             "execute")},
    "build_engine": "TensorRT 10: Builder.build_serialized_network",
    "max_workspace_size": "TensorRT 10: IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)",
    "NetworkDefinitionCreationFlag.EXPLICIT_PRECISION": "TensorRT 10: strongly typed networks",
}


def _dotted(node: ast.AST) -> str:
    """`a.b.c` of an attribute chain ('' where it does not start at a name)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else ""


def removed_apis_used(source: str) -> list[str]:
    """`line N: name (replacement)` for every use of a REMOVED API in Python `source`, by its AST."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Attribute):
            names = [node.attr, ".".join(_dotted(node).split(".")[-2:])]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.alias):
            names = [node.name.split(".")[-1]]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        for name in dict.fromkeys(names):
            if name in REMOVED:
                found.append((node.lineno, f"line {node.lineno}: {name} ({REMOVED[name]})"))
    return [text for _, text in sorted(set(found))]


def test_the_backend_uses_no_api_tensorrt_11_or_10_removed():
    assert removed_apis_used(MODULE.read_text(encoding="utf-8")) == []


def test_the_scan_finds_a_tensorrt_8_style_build():
    old = '''
import tensorrt as trt
from tensorrt import IInt8EntropyCalibrator2
def build(builder, network, calibrator):
    config = builder.create_builder_config()
    config.max_workspace_size = 1 << 30
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.INT8)
    config.int8_calibrator = calibrator
    engine = builder.build_engine(network, config)
    context = engine.create_execution_context()
    shape = engine.get_binding_shape(0)
    context.execute_async_v2(bindings=[], stream_handle=0)
'''
    found = removed_apis_used(old)
    assert [line.split(" (")[0] for line in found] == [
        "line 3: IInt8EntropyCalibrator2", "line 6: max_workspace_size", "line 7: BuilderFlag.FP16",
        "line 8: BuilderFlag.INT8", "line 9: int8_calibrator", "line 10: build_engine", "line 12: get_binding_shape",
        "line 13: execute_async_v2"], found


class FakeFlags:
    """Stands in for `tensorrt.NetworkDefinitionCreationFlag` of TensorRT 10/11 (the flag, value 0) and of a
    release without it: `network_flags` only reads the attribute."""

    def __init__(self, **members) -> None:
        self.NetworkDefinitionCreationFlag = type("NetworkDefinitionCreationFlag", (), members)


def test_network_flags_ask_for_strong_typing_where_the_flag_exists():
    assert tensorrt_backend.network_flags(FakeFlags(STRONGLY_TYPED=0)) == 1  # 10.x: required; 11.x: accepted, ignored
    assert tensorrt_backend.network_flags(FakeFlags()) == 0  # a release without the flag: strongly typed by default


# --------------------------------------------------------------------------------------------- GPU contract
# `pytest -m gpu` (the GPU workflow's step): skipped with the reason where there is no GPU, TensorRT or CUDA torch
# (tests/conftest.py), failed instead where PIPELINE_REQUIRE_GPU=1.


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> ModelGraphs:
    return ModelGraphs(DEMO_CHECKPOINT, tmp_path_factory.mktemp("tensorrt-demo"))


@pytest.fixture(scope="module")
def engines(demo, tmp_path_factory) -> dict[str, Path]:
    """tensorrt-fp16 and tensorrt-int8 engines of the demo, built once by the backend's `build`."""
    built = {}
    for target in (FP16, INT8):
        out = tmp_path_factory.mktemp(target.name)
        engine = tensorrt_backend.build(demo.source(target), target, demo.settings, out)
        assert engine == out / tensorrt_backend.ENGINE_FILE and engine.stat().st_size > 0
        built[target.name] = out
    return built


@pytest.mark.gpu
@pytest.mark.parametrize("target", [FP16, INT8], ids=lambda t: t.name)
def test_an_engine_builds_runs_passes_the_gate_and_executes_its_precision(target, demo, engines):
    folder = engines[target.name]
    info = json.loads((folder / tensorrt_backend.INFO_FILE).read_text())
    assert info["precision"] == target.precision and info["strongly_typed"] is True
    assert info["fingerprint"] == gpu_fingerprint() and (folder / tensorrt_backend.CACHE_FILE).stat().st_size > 0
    runner = tensorrt_backend.Runner(folder, target, demo.settings)
    executed = runner.settings["execution_precision"]
    assert check_execution_precision(target.precision, executed) == [], executed
    outputs = runner({"input": demo.golden.inputs})  # 11 inputs: chunks of the profile's max batch (8)
    for name, (keypoints, bins) in demo.spec.simcc_shapes.items():
        assert outputs[name].shape == (len(demo.golden.inputs), keypoints, bins), name
        assert outputs[name].dtype == np.float32
    tol = demo.tolerance(target)
    metrics = verify_artifact(lambda inputs: runner({"input": inputs}), demo.golden, tol,
                              demo.cfg.verify.min_peak_margin, {})
    preview = demo.preview(target)
    print(f"{target.name} on {info['fingerprint']['gpu']} (TensorRT {info['tensorrt']}): layers {executed}; engine "
          f"max|Δ| {max(o['needs_max_error'] for o in metrics['outputs'].values()):.3g} x scale vs CPU preview "
          f"{max(o['needs_max_error'] for o in preview['outputs'].values()):.3g} x scale")
    assert metrics["passed"] is True, metrics["breaches"]


@pytest.mark.gpu
def test_an_engine_refuses_another_gpu(demo, engines, tmp_path):
    folder = tmp_path / "moved"
    shutil.copytree(engines[FP16.name], folder)
    info = json.loads((folder / tensorrt_backend.INFO_FILE).read_text())
    info["fingerprint"] = {**info["fingerprint"], "gpu": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"}
    (folder / tensorrt_backend.INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(RuntimeMissingError, match="engine was built for .*A100.*rebuild it here"):
        tensorrt_backend.Runner(folder, FP16, demo.settings)
