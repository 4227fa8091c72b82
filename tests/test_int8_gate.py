"""INT8 on the demo checkpoint: calibrated on the demo figures it passes verification; calibrated
on blank images (a deliberately broken conversion) it fails, with one `error:` line and metrics that
say why. Runs the real stages (calibration, quantize, build, verify) as subprocesses."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import REPO_ROOT, VARIANT, run_python, run_stage

DEMO_CHECKPOINT = REPO_ROOT / "checkpoints" / f"{VARIANT}_demo.pth"
INT8_TARGETS = ("onnxruntime-int8", "openvino-int8")
SOURCES = ("coco", "blank")


@pytest.fixture(scope="module")
def int8_runs(tmp_path_factory):
    """{(source, target): (verify result, metrics)} from one reference/export shared by every run."""
    root = tmp_path_factory.mktemp("int8")
    coco = root / "demo_coco"
    data = run_python("-m", "stages.demo_data", f"demo_coco_dir={coco}", "coco_images=40", cwd=REPO_ROOT)
    assert data.returncode == 0, data.stderr
    common = (f"model.checkpoint={DEMO_CHECKPOINT}", f"targets=[{','.join(INT8_TARGETS)}]",
              f"calibration.coco_dir={coco}", "calibration.num_samples=32")
    shared = root / "shared"
    for stage in ("reference", "export", "simplify"):
        result = run_stage(stage, VARIANT, *common, f"out_dir={shared}", cwd=root)
        assert result.returncode == 0, f"{stage}: {result.stderr}"
    runs = {}
    for source in SOURCES:
        out = root / source
        shutil.copytree(shared, out)
        overrides = (*common, f"out_dir={out}", f"calibration.source={source}")
        for stage in ("calibration", "quantize"):
            result = run_stage(stage, VARIANT, *overrides, cwd=root)
            assert result.returncode == 0, f"{stage} ({source}): {result.stderr}"
        for target in INT8_TARGETS:
            job = f"{VARIANT}.{target}"
            built = run_stage("build", job, *overrides, cwd=root)
            assert built.returncode == 0, f"build {job} ({source}): {built.stderr}"
            verified = run_stage("verify", job, *overrides, cwd=root)
            metrics = json.loads((out / VARIANT / "metrics" / f"{target}.json").read_text())
            runs[source, target] = verified, metrics
    return runs


@pytest.mark.parametrize("target", INT8_TARGETS)
def test_int8_calibrated_on_the_figures_passes(int8_runs, target):
    result, metrics = int8_runs["coco", target]
    assert result.returncode == 0, result.stderr
    assert metrics["passed"] is True and metrics["breaches"] == []
    assert metrics["keypoints"]["confident"]["count"] >= 40  # most keypoints of the 4 figure crops: drift was gated


@pytest.mark.parametrize("target", INT8_TARGETS)
def test_int8_calibrated_on_blank_images_fails_verification(int8_runs, target):
    result, metrics = int8_runs["blank", target]
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "failed verification" in lines[0]
    assert metrics["passed"] is False and metrics["breaches"]
