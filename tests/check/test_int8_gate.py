"""INT8 calibrated on blank images (a deliberately broken conversion) fails verification with one
`error:` line naming the breached figure, and metrics that say why. Runs the real stages (calibration,
quantize, build, verify) as subprocesses on a copy of the demo checkpoint's build; the same targets
calibrated on the demo figures pass (tests/backends/test_backends.py)."""

from __future__ import annotations

import re

import pytest

from conftest import VARIANT, run_stage

INT8_TARGETS = ("onnxruntime-int8", "openvino-int8")


@pytest.fixture(scope="module")
def blank_runs(demo_chain, tmp_path_factory):
    """{target: (verify result, metrics)} after calibrating on blank images."""
    chain = demo_chain.copy(tmp_path_factory.mktemp("int8_blank"))
    overrides = (*chain.overrides, "calibration.source=blank")
    cwd = chain.out_dir.parent
    for stage in ("calibration", "quantize"):
        result = run_stage(stage, VARIANT, *overrides, cwd=cwd)
        assert result.returncode == 0, f"{stage}: {result.stderr}"
    runs = {}
    for target in INT8_TARGETS:
        job = f"{VARIANT}.{target}"
        built = run_stage("build", job, *overrides, cwd=cwd)
        assert built.returncode == 0, f"build {job}: {built.stderr}"
        runs[target] = run_stage("verify", job, *overrides, cwd=cwd), chain.metrics(target)
    return runs


@pytest.mark.parametrize("target", INT8_TARGETS)
def test_int8_calibrated_on_blank_images_fails_verification(blank_runs, target):
    result, metrics = blank_runs[target]
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    print(lines[0])  # shown with `pytest -rP`
    # The first breach: an output's error beyond its limit, or its cosine, each with the figure it needed.
    assert re.match(rf"error: {VARIANT}\.{target} failed verification: simcc_[xy] "
                    r"(max\|Δ\| \S+ > atol \S+ = max_error \S+ × scale \S+ \(needs max_error ≥ \S+\)"
                    r"|cosine \S+ < min_cosine \S+ \(needs min_cosine ≤ \S+\))", lines[0]), lines[0]
    assert metrics["passed"] is False
    gated = metrics["keypoints"]["confident"]
    assert gated["count"] >= 40 and gated["agreement"] < metrics["tolerance"]["min_agreement"]  # the poses moved
    assert any(b.startswith("keypoints mean drift") for b in metrics["breaches"])
