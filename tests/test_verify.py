"""The comparator on hand-made arrays (Polygraphy's tests/comparator/test_compare.py style)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import Tolerance
from pipeline.verify import (EPS, check_execution_precision, compare, compare_output, keypoint_metrics,
                             summary_lines)

TOL = Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.999, max_mean_drift_px=0.5, agreement_px=0.5, min_agreement=0.9)
N, K, WX, WY = 2, 3, 16, 20


def simcc(seed: int = 0) -> dict[str, np.ndarray]:
    """Peaked SimCC logits, values in [1, 2] plus a clear maximum per row."""
    rng = np.random.default_rng(seed)
    out = {"simcc_x": 1 + rng.random((N, K, WX), dtype=np.float32),
           "simcc_y": 1 + rng.random((N, K, WY), dtype=np.float32)}
    for name, bins in (("simcc_x", WX), ("simcc_y", WY)):
        out[name][..., bins // 2] = 10.0
    return out


def altered(ref: dict[str, np.ndarray], name: str, index, value) -> dict[str, np.ndarray]:
    out = {k: v.copy() for k, v in ref.items()}
    out[name][index] = value
    return out


def test_identical_arrays_pass():
    ref = simcc()
    metrics = compare(ref, simcc(), TOL, min_score=0.5)
    assert metrics["passed"] and metrics["breaches"] == []
    for result in metrics["outputs"].values():
        assert result["needs_atol"] == result["needs_rtol"] == 0.0
        assert result["cosine"] == pytest.approx(1.0)
    expected = {"count": N * K, "mean_drift_px": 0.0, "max_drift_px": 0.0, "agreement": 1.0}
    assert metrics["keypoints"]["all"] == metrics["keypoints"]["confident"] == expected


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_fails_whatever_the_tolerance(value):
    ref = simcc()
    loose = Tolerance(atol=1e30, rtol=1e30, min_cosine=-1, max_mean_drift_px=1e9, agreement_px=1e9, min_agreement=0)
    metrics = compare(ref, altered(ref, "simcc_y", (1, 2, 3), value), loose, min_score=0.5)
    assert not metrics["passed"]
    assert metrics["breaches"] == ["simcc_y has NaN or Inf"]
    assert metrics["outputs"]["simcc_y"]["finite"] is False


def test_element_over_atol_but_within_rtol_passes():
    ref = simcc()
    actual = altered(ref, "simcc_x", (0, 0, 8), 10.005)  # |Δ| 5e-3 > atol, |Δ|/10 = 5e-4 <= rtol
    metrics = compare(ref, actual, TOL, min_score=0.5)
    assert metrics["passed"], metrics["breaches"]
    result = metrics["outputs"]["simcc_x"]
    assert result["needs_atol"] == pytest.approx(5e-3, rel=1e-3)
    assert result["needs_rtol"] == pytest.approx(5e-4, rel=1e-3)
    assert result["elements_failing"] == 0


def test_element_over_both_fails_and_says_what_it_needs():
    ref = simcc()
    actual = altered(ref, "simcc_x", (1, 1, 3), float(ref["simcc_x"][1, 1, 3]) + 0.05)
    metrics = compare(ref, actual, TOL, min_score=0.5)
    assert not metrics["passed"]
    (breach,) = metrics["breaches"]
    assert breach.startswith("simcc_x max|Δ| 0.05 > atol 0.0001")
    assert "needs atol ≥ 0.05 or rtol ≥ 0.0" in breach
    assert metrics["outputs"]["simcc_x"]["elements_failing"] == 1
    assert metrics["outputs"]["simcc_y"]["passed_elementwise"]
    assert any(line.startswith("FAILED") and "needs atol" in line for line in summary_lines("job", metrics))


def test_zeros_in_the_reference_use_eps():
    ref = np.zeros((2, 3), np.float32)
    actual = ref.copy()
    actual[0, 0] = 1e-6
    result = compare_output(ref, actual, TOL)
    assert result["passed_elementwise"]  # |Δ| 1e-6 <= atol, whatever the relative error
    assert result["needs_rtol"] == pytest.approx(1e-6 / EPS)
    assert np.isfinite(result["needs_rtol"])
    exact = compare_output(ref, ref, TOL)
    assert exact["needs_rtol"] == 0.0 and exact["passed_elementwise"]  # 0/0 is not NaN


def test_errors_are_computed_in_float64():
    ref = np.array([65504.0, -65504.0], np.float16)
    actual = ref[::-1].copy()  # in float16, the difference would overflow to inf
    result = compare_output(ref, actual, TOL)
    assert result["needs_atol"] == 131008.0
    assert result["finite"]


def test_cosine_catches_a_sign_flip_within_rtol_of_nothing():
    ref = simcc()
    actual = {k: -v for k, v in ref.items()}
    metrics = compare(ref, actual, Tolerance(atol=100, rtol=0, min_cosine=0.99, max_mean_drift_px=1e9,
                                            agreement_px=1e9, min_agreement=0), min_score=0.5)
    assert any("cosine" in b and "min_cosine" in b for b in metrics["breaches"])


def test_missing_and_extra_outputs_are_breaches():
    ref = simcc()
    missing = compare(ref, {"simcc_x": ref["simcc_x"]}, TOL, min_score=0.5)
    assert not missing["passed"]
    assert "outputs differ" in missing["breaches"][0] and "simcc_y" in missing["breaches"][0]
    extra = compare(ref, {**ref, "heatmap": np.zeros(3)}, TOL, min_score=0.5)
    assert not extra["passed"] and "heatmap" in extra["breaches"][0]


def test_shape_mismatch_is_a_breach_with_both_shapes():
    ref = simcc()
    metrics = compare(ref, {**ref, "simcc_y": ref["simcc_y"][:, :, :-1]}, TOL, min_score=0.5)
    assert not metrics["passed"]
    assert metrics["breaches"] == [f"simcc_y shape [{N}, {K}, {WY - 1}] != reference [{N}, {K}, {WY}]"]


def test_keypoint_drift_at_known_bins():
    ref = simcc()  # every maximum at x bin 8, y bin 10 -> (4.0, 5.0) px at split ratio 2
    actual = altered(ref, "simcc_x", (0, 0), 1.0)
    actual["simcc_x"][0, 0, 14] = 10.0  # keypoint 0 of image 0 moves 6 bins = 3 px in x
    actual["simcc_y"][1, 2] = 1.0
    actual["simcc_y"][1, 2, 18] = 10.0  # keypoint 2 of image 1 moves 8 bins = 4 px in y
    drift = keypoint_metrics(ref, actual, TOL, min_score=0.0)["all"]
    assert drift["max_drift_px"] == 4.0
    assert drift["mean_drift_px"] == pytest.approx((3.0 + 4.0) / (N * K))
    assert drift["agreement"] == pytest.approx(4 / 6)

    strict = Tolerance(atol=100, rtol=0, min_cosine=0, max_mean_drift_px=0.5, agreement_px=0.5, min_agreement=0.9)
    metrics = compare(ref, actual, strict, min_score=0.5)
    assert metrics["keypoints"]["confident"]["max_drift_px"] == 4.0
    assert any("mean drift" in b for b in metrics["breaches"])
    assert any("min_agreement" in b for b in metrics["breaches"])


def test_drift_is_gated_only_where_the_reference_is_confident():
    ref = simcc()
    ref["simcc_x"][1] *= 0.01  # image 1: every keypoint scores about 0.01, the flat rows of an unsure model
    actual = {k: v.copy() for k, v in ref.items()}
    actual["simcc_x"][1, :, 3] = 0.2  # its argmax jumps 5 bins: says nothing about the conversion
    strict = Tolerance(atol=100, rtol=0, min_cosine=0, max_mean_drift_px=0.5, agreement_px=0.5, min_agreement=0.9)
    metrics = compare(ref, actual, strict, min_score=0.5)
    assert metrics["passed"], metrics["breaches"]
    assert metrics["keypoints"]["confident"] == {"count": K, "mean_drift_px": 0.0, "max_drift_px": 0.0,
                                                 "agreement": 1.0}
    assert metrics["keypoints"]["all"]["max_drift_px"] == 2.5  # reported, not gated
    nothing_confident = compare(ref, actual, strict, min_score=100.0)
    assert nothing_confident["passed"] and nothing_confident["keypoints"]["confident"]["count"] == 0
    assert any("drift not gated" in line for line in summary_lines("job", nothing_confident))


@pytest.mark.parametrize("precision, executed, flagged", [
    ("fp32", {"fp32": 80}, []),
    ("fp32", {"fp32": 80, "bf16": 0}, []),
    ("fp32", {"fp32": 4, "bf16": 84}, ["bf16"]),
    ("fp32", {"fp16": 2, "bf16": 84, "fp32": 1}, ["fp16", "bf16"]),
])
def test_check_execution_precision_flags_lower_precisions(precision, executed, flagged):
    breaches = check_execution_precision(precision, executed)
    assert len(breaches) == len(flagged)
    for lower in flagged:
        assert any(f"in {lower}, below the target precision {precision}" in b for b in breaches)
    if "bf16" in flagged:
        assert any("84 operations in bf16" in b for b in breaches)
