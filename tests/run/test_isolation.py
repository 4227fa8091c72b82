"""Any exception a runtime or tool raises stays with its job: the others still verify and ship.

`run_chain` used to catch only the project's own errors, so a runtime's own exception (OpenVINO refusing a
damaged IR, onnxruntime a damaged graph) ended the whole run with a traceback. Here one target's artifact is
damaged the way it happens in reality, inside a chain of three, by the real runtimes.
"""

from __future__ import annotations

import json

import pytest

import pipeline.backends.openvino as openvino_backend
from pipeline.run.chain import FAILED, PASSED, run_chain
from pipeline.run.configure import load_config

from conftest import REPO_ROOT, VARIANT, run_python, run_stage

TARGETS = ("onnxruntime-fp32", "openvino-fp32", "ncnn-fp32")
OVERRIDES = (f"model={VARIANT}", "model.checkpoint=null", "simplify=none", "tune.enabled=false",
             f"targets=[{','.join(TARGETS)}]")


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
def test_a_runtime_error_in_the_middle_of_the_chain_fails_only_its_job(tmp_path, monkeypatch):
    real_build = openvino_backend.build

    def build_then_damage(onnx_path, target, settings, out_dir, calibration=None):
        """The real build, then its IR cut short, as a full disk or an interrupted copy leaves it."""
        built = real_build(onnx_path, target, settings, out_dir, calibration)
        truncate(out_dir / "model.xml")
        return built

    monkeypatch.setattr(openvino_backend, "build", build_then_damage)
    cfg = load_config([*OVERRIDES, f"out_dir={tmp_path / 'out'}"])
    results = dict(run_chain(cfg))

    damaged = results[f"{VARIANT}.openvino-fp32"]
    assert damaged.startswith(f"{FAILED}: verify: "), damaged
    # OpenVINO's own words, on one line: where it failed, then the cause (its IR frontend's XML parser).
    assert "\n" not in damaged and "src/frontends/ir" in damaged and "offset" in damaged, damaged
    assert damaged.startswith(f"{FAILED}: verify: openvino cannot open the artifact "), damaged
    assert results[f"{VARIANT}.onnxruntime-fp32"] == PASSED and results[f"{VARIANT}.ncnn-fp32"] == PASSED
    metrics = json.loads((tmp_path / "out" / VARIANT / "metrics" / "openvino-fp32.json").read_text())
    assert (metrics["passed"], metrics["failed_stage"]) == (False, "verify")
    manifest = json.loads((tmp_path / "out" / "release" / VARIANT / "manifest.json").read_text())
    assert sorted(manifest["targets"]) == ["ncnn-fp32", "onnxruntime-fp32"]
    assert manifest["withheld"]["openvino-fp32"] == metrics["breaches"][0]


@pytest.mark.slow
def test_a_stage_process_reports_a_runtime_error_in_one_line(tmp_path):
    """What `dvc repro` runs: verify@<job> of a damaged artifact exits 1 with one line, no traceback."""
    out = tmp_path / "out"
    overrides = (*OVERRIDES[:-1], "targets=[onnxruntime-fp32]", f"out_dir={out}")
    chain = run_python("-m", "pipeline", *overrides, "hydra.run.dir=hydra", cwd=tmp_path,
                       env={"PYTHONPATH": str(REPO_ROOT)})
    assert chain.returncode == 0, chain.stderr
    truncate(out / VARIANT / "onnxruntime-fp32" / "model.onnx")
    result = run_stage("verify", f"{VARIANT}.onnxruntime-fp32", *overrides, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: onnxruntime cannot open the artifact ") and "onnxruntime-fp32 (" in lines[0]
    assert "rebuild it" in lines[0], lines[0]
