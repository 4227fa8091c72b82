"""Runtime settings that belong to an artifact (pipeline/backends/runtime.py): every backend's Runner honours
them, reads the recorded ones from artifact.json, and computes the same outputs, in order, whatever
the threads, streams or static batch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.backends import get_target
from pipeline.backends.runtime import recorded_runtime
from pipeline.core.errors import ConfigError

from conftest import max_abs_diff

ORT, OV = get_target("onnxruntime-fp32"), get_target("openvino-fp32")


@pytest.fixture(scope="module")
def ov_dir(t_onnx, tmp_path_factory) -> Path:
    import openvino as ov

    folder = tmp_path_factory.mktemp("ov")
    ov.save_model(ov.convert_model(str(t_onnx)), str(folder / "model.xml"), compress_to_fp16=False)
    return folder


@pytest.fixture(scope="module")
def reference(ort_dir, t_cfg, golden):
    from pipeline.backends import onnxruntime as backend

    return backend.Runner(ort_dir, ORT, t_cfg.backends.onnxruntime, {})({"input": golden})


ORT_SETTINGS = [
    ({"intra_op_num_threads": 1, "static_batch": 1}, "latency"),
    ({"graph_optimization_level": "extended", "allow_spinning": False}, "latency"),
    ({"intra_op_num_threads": 1, "sessions": 2, "static_batch": 1}, "throughput"),
    ({"sessions": 2}, "throughput"),
]


@pytest.mark.parametrize("runtime,mode", ORT_SETTINGS)
def test_onnxruntime_settings_compute_the_same_outputs_in_order(runtime, mode, ort_dir, t_cfg, golden, reference):
    from pipeline.backends import onnxruntime as backend

    runner = backend.Runner(ort_dir, ORT, t_cfg.backends.onnxruntime, runtime, mode)
    assert runner.settings["runtime"] == runtime and runner.settings["mode"] == mode
    assert runner.settings["static_batch"] == runtime.get("static_batch")
    assert len(runner.sessions) == (runtime.get("sessions", 1) if mode == "throughput" else 1)
    assert max_abs_diff(runner({"input": golden}), reference) < 1e-4


OV_SETTINGS = [
    ({"performance_hint": "LATENCY", "inference_num_threads": 1, "static_batch": 1}, "latency"),
    ({"inference_precision_hint": None}, "latency"),
    ({"performance_hint": "THROUGHPUT", "static_batch": 1}, "throughput"),
    ({"performance_hint": "THROUGHPUT", "requests": 2}, "throughput"),
]


@pytest.mark.parametrize("runtime,mode", OV_SETTINGS)
def test_openvino_settings_compute_the_same_outputs_in_order(runtime, mode, ov_dir, t_cfg, golden, reference):
    from pipeline.backends import openvino as backend

    runner = backend.Runner(ov_dir, OV, t_cfg.backends.openvino, runtime, mode)
    assert runner.settings["runtime"] == runtime
    assert runner.settings["static_batch"] == runtime.get("static_batch")
    assert runner.settings["performance_hint"] == runtime.get("performance_hint", "LATENCY")  # LATENCY: the default
    if "inference_num_threads" in runtime:
        assert runner.settings["inference_num_threads"] == runtime["inference_num_threads"]
    assert (runner.queue is not None) == (mode == "throughput")
    # With the hint unset OpenVINO computes in its default for the CPU: bf16 where the CPU has it (AVX512_BF16,
    # AMX), whose rounding (8-bit mantissa) moves logits by up to ~1% of their scale; f32 elsewhere.
    bf16_default = runtime.get("inference_precision_hint", "") is None and "BF16" in backend.cpu_capabilities()
    scale = max(float(np.max(np.abs(r))) for r in reference.values())
    assert max_abs_diff(runner({"input": golden}), reference) < (0.02 * scale if bf16_default else 1e-3)


def test_a_static_batch_is_fixed_in_the_compiled_model(ov_dir, ort_dir, t_cfg):
    from pipeline.backends import onnxruntime, openvino

    assert openvino.Runner(ov_dir, OV, t_cfg.backends.openvino, {"static_batch": 1}).inputs["input"] == [1, 3, 256, 192]
    assert openvino.Runner(ov_dir, OV, t_cfg.backends.openvino, {}).inputs["input"][0] == -1
    session = onnxruntime.Runner(ort_dir, ORT, t_cfg.backends.onnxruntime, {"static_batch": 1}).session
    assert session.get_inputs()[0].shape == [1, 3, 256, 192]


def test_runner_reads_the_recorded_settings(ort_dir, t_cfg, tmp_path):
    from pipeline.backends import onnxruntime as backend

    folder = tmp_path / "artifact"
    shutil.copytree(ort_dir, folder)
    recorded = {"latency": {"intra_op_num_threads": 1, "static_batch": 1},
                "throughput": {"intra_op_num_threads": 1, "sessions": 2, "static_batch": 1}}
    (folder / "artifact.json").write_text(json.dumps({"runtime": recorded}))
    assert recorded_runtime(folder, "latency") == recorded["latency"]
    assert backend.Runner(folder, ORT, t_cfg.backends.onnxruntime).settings["runtime"] == recorded["latency"]
    assert len(backend.Runner(folder, ORT, t_cfg.backends.onnxruntime, mode="throughput").sessions) == 2


def test_without_recorded_settings_the_backend_config_applies(ort_dir, t_cfg):
    from pipeline.backends import onnxruntime as backend

    assert recorded_runtime(ort_dir, "latency") is None
    settings = backend.Runner(ort_dir, ORT, t_cfg.backends.onnxruntime).settings
    assert settings["runtime"] == backend.default_runtime(t_cfg.backends.onnxruntime)
    assert settings["intra_op_num_threads"] == t_cfg.backends.onnxruntime.num_threads


@pytest.mark.parametrize("backend_name,runtime", [("onnxruntime", {"threads": 2}), ("openvino", {"streams": 2}),
                                                  ("ncnn", {"intra_op_num_threads": 1})])
def test_an_unknown_setting_is_a_config_error_naming_it(backend_name, runtime, ort_dir, ov_dir, t_cfg):
    from pipeline import backends

    folder = {"onnxruntime": ort_dir, "openvino": ov_dir, "ncnn": ort_dir}[backend_name]
    target = get_target(f"{backend_name}-fp32")
    with pytest.raises(ConfigError, match=next(iter(runtime))):
        backends.open_runner(folder, target, t_cfg.backends, runtime)


def test_an_unknown_mode_is_a_config_error(ort_dir, t_cfg):
    from pipeline.backends import onnxruntime as backend

    with pytest.raises(ConfigError, match="batch-1"):
        backend.Runner(ort_dir, ORT, t_cfg.backends.onnxruntime, {}, "batch-1")


@pytest.mark.parametrize("backend_name", ["onnxruntime", "openvino"])
def test_a_static_batch_runs_any_count_of_images_in_padded_chunks(backend_name, ort_dir, ov_dir, t_cfg, golden,
                                                                  reference):
    """Static batch 2 on 5 images, not a multiple of it: chunks of 2, 2 and 1 padded to 2 (pipeline/core/onnx_io.py).
    Every image's outputs equal those of an unpadded run: the same backend with a dynamic batch, and the reference."""
    from pipeline import backends

    folder = {"onnxruntime": ort_dir, "openvino": ov_dir}[backend_name]
    target = get_target(f"{backend_name}-fp32")
    assert len(golden) == 5
    unpadded = backends.open_runner(folder, target, t_cfg.backends, {}, "latency")
    assert unpadded.fixed_batch is None
    dynamic = unpadded({"input": golden})
    assert max_abs_diff(dynamic, reference) < 1e-3
    for mode in ("latency", "throughput"):
        runner = backends.open_runner(folder, target, t_cfg.backends, {"static_batch": 2}, mode)
        assert runner.fixed_batch == 2 and len(golden) % runner.fixed_batch == 1
        outputs = runner({"input": golden})
        assert {k: v.shape for k, v in outputs.items()} == {k: v.shape for k, v in dynamic.items()}
        assert max_abs_diff(outputs, dynamic) < 1e-4, mode
