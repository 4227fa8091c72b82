"""INT8 calibrated on blank images (a deliberately broken conversion) fails verification with one
`error:` line naming the breached figure, and metrics that say why. Runs the real stages (calibration,
quantize, build, verify) as subprocesses on a copy of the demo checkpoint's build; the same targets
calibrated on the demo figures pass (tests/backends/test_backends.py).

Mid-size faults: one activation's quantization scale in the Q/DQ graph far off, or every backbone activation's
one bit coarser. One activation's scale x4 (even x16) stays within what calibration alone changes between CPUs
and calibration sets (conf/verify/default.yaml, int8): no gate on the outputs can tell it from a correct build."""

from __future__ import annotations

import re

import onnx
import pytest

from conftest import VARIANT, run_stage
from onnx_faults import activation_quantizers, scale_activation_quantization
from test_faults import one_line_error, verify

INT8_TARGETS = ("onnxruntime-int8", "openvino-int8", "ncnn-int8")


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


def middle_activation(model: onnx.ModelProto) -> onnx.NodeProto:
    """The middle activation quantizer of the graph (the demo: stage 2's last CSP block output)."""
    quantizers = activation_quantizers(model)
    return quantizers[len(quantizers) // 2]


def backbone_activations(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [q for q in activation_quantizers(model) if q.name.startswith("/backbone/")]


INT8_FAULTS = {  # name: (fault, the figure its line names)
    "one mid-network activation's scale x64": (
        lambda m: [scale_activation_quantization(m, middle_activation(m), 64.0)], "cosine"),
    "every backbone activation's scale x2": (
        lambda m: [scale_activation_quantization(m, q, 2.0) for q in backbone_activations(m)], "keypoints within"),
}


@pytest.mark.parametrize("fault", list(INT8_FAULTS))
def test_a_mid_size_int8_fault_fails_with_one_line(demo_chain, fault, tmp_path):
    edit, figure = INT8_FAULTS[fault]
    chain = demo_chain.copy(tmp_path)
    path = chain.variant_dir / "onnxruntime-int8" / "model.onnx"
    model = onnx.load(str(path))
    assert edit(model)
    onnx.save_model(model, str(path))
    result, metrics = verify(chain, "onnxruntime-int8")
    line = one_line_error(result)
    assert line.startswith(f"error: {VARIANT}.onnxruntime-int8 failed verification: ")
    assert any(figure in b for b in metrics["breaches"]), metrics["breaches"]
    assert metrics["passed"] is False
