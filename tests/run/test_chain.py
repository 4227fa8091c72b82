"""`python -m pipeline`: one target's failure stays with that target, and the exit code says so.

Run as users run it (a subprocess, from a scratch working directory), on synthetic rtmpose-t.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO_ROOT, VARIANT, one_line_error, run_python, sha256

# tune.enabled=false: these tests are about the chain's failures and outputs, not tuning (tests/measure/test_tune.py)
PRESET = ["model=rtmpose-t_coco17_256x192", "model.checkpoint=null", "simplify=none", "tune.enabled=false"]


def run_pipeline(cwd: Path, *overrides: str, timeout: float = 900):
    return run_python("-m", "pipeline", *overrides, "hydra.run.dir=hydra", cwd=cwd, timeout=timeout,
                      env={"PYTHONPATH": str(REPO_ROOT)})


def metrics(cwd: Path, target: str) -> dict:
    return json.loads((cwd / "artifacts" / VARIANT / "metrics" / f"{target}.json").read_text())


@pytest.mark.slow
def test_a_failed_build_and_a_missing_calibration_set_fail_only_their_jobs(tmp_path):
    result = run_pipeline(tmp_path, *PRESET, "targets=[onnxruntime-fp32,ncnn-fp16,openvino-int8]",
                          "backends.ncnn.fp16_keep_float_layers=[NoSuchLayer]",
                          f"calibration.coco_dir={tmp_path / 'no-such-set'}")
    assert result.returncode == 1, result.stderr
    table = {line.split()[0]: line.split(None, 1)[1] for line in result.stdout.splitlines()
             if line.startswith(f"{VARIANT}.")}
    assert table[f"{VARIANT}.onnxruntime-fp32"] == "passed"
    assert table[f"{VARIANT}.ncnn-fp16"].startswith("FAILED: build: backends.ncnn.fp16_keep_float_layers")
    assert table[f"{VARIANT}.openvino-int8"].startswith("FAILED: calibration: calibration.coco_dir=")
    failed = metrics(tmp_path, "openvino-int8")
    assert (failed["passed"], failed["failed_stage"]) == (False, "calibration")
    assert "no annotations.json" in failed["breaches"][0]
    report = (tmp_path / "artifacts" / "report" / "report.md").read_text()
    assert "no annotations.json" in report and "NoSuchLayer" in report  # the reasons reach the report
    assert metrics(tmp_path, "onnxruntime-fp32")["passed"] is True
    # Only the verified artifact ships.
    release = tmp_path / "artifacts" / "release" / VARIANT
    assert sorted(p.name for p in release.iterdir()) == ["manifest.json", "onnxruntime-fp32"]
    manifest = json.loads((release / "manifest.json").read_text())
    assert list(manifest["targets"]) == ["onnxruntime-fp32"]
    shipped = manifest["targets"]["onnxruntime-fp32"]
    assert {"model.onnx", "rtmlib.zip", "deploy.json", "pipeline.json", "artifact.json"} <= set(shipped["files"])
    assert shipped["files"]["model.onnx"] == sha256(release / "onnxruntime-fp32" / "model.onnx")
    assert shipped["verification"]["outputs"]["simcc_x"]["cosine"] > 0.999
    assert set(manifest["withheld"]) == {"ncnn-fp16", "openvino-int8"}
    assert "NoSuchLayer" in manifest["withheld"]["ncnn-fp16"]


@pytest.mark.slow
def test_the_default_calibration_set_is_made_on_demand(tmp_path):
    result = run_pipeline(tmp_path, *PRESET, "targets=[onnxruntime-int8]", "calibration.num_samples=8")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "writing the demo's COCO-format set" in result.stdout
    assert (tmp_path / "artifacts" / "demo" / "coco" / "annotations.json").is_file()
    assert metrics(tmp_path, "onnxruntime-int8")["passed"] is True


def test_a_plan_with_every_target_left_out_builds_nothing_and_fails(tmp_path):
    from pipeline.core.hardware import nvidia_gpu_present

    if nvidia_gpu_present():
        pytest.skip("this host has an NVIDIA GPU: TensorRT jobs are planned here")
    result = run_pipeline(tmp_path, *PRESET, "targets=[tensorrt-fp16]")
    error = one_line_error(result)
    assert error.startswith("error: nothing was built: every requested target was left out (TensorRT needs")
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.slow
def test_a_sweep_whose_job_failed_exits_non_zero(tmp_path):
    result = run_python("-m", "pipeline", "-m", *PRESET, "targets=[onnxruntime-fp32]",
                        "export.opset=17,6", "hydra/launcher=basic", "hydra.sweep.dir=sweep",
                        cwd=tmp_path, timeout=900, env={"PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 1, result.stdout
    assert "sweep: 2 jobs, 1 passed or left out, 1 failed" in result.stdout
