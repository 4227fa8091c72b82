"""The comparator on hand-made arrays (Polygraphy's tests/comparator/test_compare.py style): both
elementwise rules, limits that follow the output's scale, zeros, NaN, fp16, peak margins, keypoints,
and the golden set's preprocessing records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.check.verify import (
    EPS,
    Golden,
    check_execution_precision,
    compare,
    compare_output,
    keypoint_metrics,
    onnx_metadata_normalization,
    summary_lines,
)
from pipeline.config import Tolerance
from pipeline.core.errors import ConfigError
from pipeline.model.decode import confident_keypoints, peak_margin
from pipeline.model.preprocess import normalize
from pipeline.model.presets import preset_spec
from pipeline.model.spec import PreprocessSpec
from pipeline.package.dropin import pipeline_json
from pipeline.sources.sdk import sdk_normalization

MEAN_RGB, STD_RGB = PreprocessSpec().mean, PreprocessSpec().std

TOL = Tolerance(max_error=1e-3, error_factor=10.0, error_floor=1e-7, min_cosine=0.999, max_mean_drift_px=0.5,
                agreement_px=0.5, min_agreement=0.9, max_score_change=0.01)
LOOSE = Tolerance(max_error=1e30, min_cosine=-1, max_mean_drift_px=1e9, agreement_px=1e9, min_agreement=0,
                  max_score_change=1e30)
N, K, WX, WY = 2, 3, 16, 20


def simcc(seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Peaked SimCC logits: background in [1, 2], one peak of 10 per row (x bin 8, y bin 10), times `scale`."""
    rng = np.random.default_rng(seed)
    out = {"simcc_x": 1 + rng.random((N, K, WX)), "simcc_y": 1 + rng.random((N, K, WY))}
    for name, bins in (("simcc_x", WX), ("simcc_y", WY)):
        out[name][..., bins // 2] = 10.0
    return {k: (v * scale).astype(np.float32) for k, v in out.items()}


def altered(ref: dict[str, np.ndarray], name: str, index, value) -> dict[str, np.ndarray]:
    out = {k: v.copy() for k, v in ref.items()}
    out[name][index] = value
    return out


# --------------------------------------------------------------------------------------------- rules


def test_identical_arrays_pass():
    ref = simcc()
    metrics = compare(ref, simcc(), TOL, min_peak_margin=0.5)
    assert metrics["passed"] and metrics["breaches"] == []
    assert metrics["rule"] == "output-scale"
    for result in metrics["outputs"].values():
        assert result["needs_atol"] == result["needs_rtol"] == result["needs_max_error"] == 0.0
        assert result["cosine"] == pytest.approx(1.0)
        assert result["scale"] == pytest.approx(10.0)
    expected = {"count": N * K, "mean_drift_px": 0.0, "max_drift_px": 0.0, "agreement": 1.0, "max_score_change": 0.0}
    assert metrics["keypoints"]["all"] == metrics["keypoints"]["confident"] == expected


def test_reference_error_rule_scales_with_the_float32_references_own_error():
    reference64 = {k: v.astype(np.float64) for k, v in simcc().items()}
    reference32 = {k: v + 2e-6 * np.sign(np.sin(np.arange(v.size))).reshape(v.shape) for k, v in reference64.items()}
    close = {k: v + 1.5e-5 for k, v in reference64.items()}  # 7.5x the reference's own error (float64: exact)
    far = {k: v + 5e-5 for k, v in reference64.items()}  # 25x
    passed = compare(reference64, close, TOL, 0.5, reference_float32=reference32)
    assert passed["passed"], passed["breaches"]
    assert passed["rule"] == "reference-error"
    result = passed["outputs"]["simcc_x"]
    assert result["reference_error"] == pytest.approx(2e-6, rel=1e-3)
    assert result["atol"] == pytest.approx(10 * 2e-6 + 1e-7 * 10.0, rel=1e-3)
    assert result["needs_error_factor"] == pytest.approx((1.5e-5 - 1e-6) / 2e-6, rel=1e-2)
    failed = compare(reference64, far, TOL, 0.5, reference_float32=reference32)
    assert not failed["passed"]
    breach = failed["breaches"][0]
    assert breach.startswith("simcc_x max|Δ| 5e-05 vs float64 > atol 2.1e-05 = error_factor 10 × the float32 "
                             "reference's own 2e-06 + error_floor 1e-07 × scale 10")
    assert "(needs error_factor ≥ 24.5)" in breach


def test_rms_rule_catches_a_shift_of_every_element_that_the_max_rule_admits():
    """The float32 reference's own maximum is one outlier (2e-5); its typical error is 50x smaller. A shift of
    every element by 5e-5 stays within 10x the maximum but is 25x the typical error: a layer computed wrongly."""
    tol = Tolerance(**{**vars(TOL), "rms_factor": 10.0})
    reference64 = {k: v.astype(np.float64) for k, v in simcc().items()}
    reference32 = {k: v + 1e-7 for k, v in reference64.items()}
    for v in reference32.values():
        v[0, 0, 0] += 2e-5
    shifted = {k: v + 5e-5 for k, v in reference64.items()}
    metrics = compare(reference64, shifted, tol, 0.5, reference_float32=reference32)
    result = metrics["outputs"]["simcc_x"]
    assert result["passed_elementwise"] and not result["passed_rms"]
    own_rms = np.sqrt((2.01e-5 ** 2 + 95 * 1e-7 ** 2) / 96)
    assert result["reference_rms_error"] == pytest.approx(own_rms, rel=1e-3)
    assert result["rms_error"] == pytest.approx(5e-5, rel=1e-6)
    assert result["relative_l2"] == pytest.approx(5e-5 / result["reference_rms"], rel=1e-6)
    assert result["rms_atol"] == pytest.approx(10 * own_rms + 1e-7 * result["reference_rms"], rel=1e-6)
    breach = metrics["breaches"][0]
    assert breach.startswith("simcc_x rms|Δ| 5e-05 vs float64 > 2.08e-05 = rms_factor 10 × the float32 reference's "
                             "own rms 2.05e-06 + error_floor 1e-07 × rms(reference) "), breach
    assert breach.endswith(f"(needs rms_factor ≥ {result['needs_rms_factor']:.3g})")
    assert result["needs_rms_factor"] == pytest.approx((5e-5 - 1e-7 * result["reference_rms"]) / own_rms, rel=1e-3)
    line = next(line for line in summary_lines("job", metrics) if line.startswith("FAILED job simcc_x max|Δ| "))
    assert " rms|Δ| 5e-05 > 2.1e-05 (10 × float32's own rms 2.1e-06) " in line, line
    # Without an rms_factor (int8, or an older config) only the maximum is gated; the figures are still written.
    plain = compare(reference64, shifted, TOL, 0.5, reference_float32=reference32)
    assert plain["passed"] and "rms_atol" not in plain["outputs"]["simcc_x"]
    assert plain["outputs"]["simcc_x"]["rms_error"] == pytest.approx(5e-5, rel=1e-6)


def noisy_model_outputs(own: float, artifact: float, seed: int = 0):
    """float64 outputs of a deep model with large logits (background 100-200, one peak of 500 per row; 17
    keypoints, 384 / 512 bins) and two evaluations of it: its float32 reference and an artifact, each with
    independent errors of `own` / `artifact` x rms(reference), rms."""
    rng = np.random.default_rng(seed)
    reference64 = {}
    for name, bins in (("simcc_x", 384), ("simcc_y", 512)):
        values = 100 + 100 * rng.random((2, 17, bins))
        values[..., bins // 3] = 500.0
        reference64[name] = values

    def evaluated(relative: float) -> dict[str, np.ndarray]:
        return {k: (v + relative * np.sqrt(np.mean(v ** 2)) * rng.standard_normal(v.shape)).astype(np.float32)
                for k, v in reference64.items()}

    return reference64, evaluated(own), evaluated(artifact)


FP32 = Tolerance(max_error=1e-3, error_factor=16.0, error_floor=1e-6, rms_factor=16.0, min_cosine=0.999999,
                 cosine_factor=256.0, max_mean_drift_px=0.05, agreement_px=0.5, min_agreement=0.99,
                 max_score_change=5e-4)  # conf/verify/default.yaml's fp32 (test_shipped_fp32_limits_are_these)


def test_shipped_fp32_limits_are_these():
    from pipeline.run.configure import load_config

    assert vars(load_config([]).verify.tolerances["fp32"]) == vars(FP32)


def test_cosine_limit_follows_the_float32_references_own_cosine_distance():
    """rtmw-x 384x288's case (issue 21): a correct fp32 artifact of a model whose float32 reference is itself
    off by 8.6e-4 relative (1 - cosine 3.7e-7) has 2.2x that error and a cosine of 0.9999982, under the old
    fixed 0.999999; its own numerics explain it, so it passes. 20x its own error fails, on the cosine too."""
    reference64, reference32, correct = noisy_model_outputs(own=8.6e-4, artifact=1.9e-3)
    metrics = compare(reference64, correct, FP32, 0.5, reference_float32=reference32, images=2)
    assert metrics["passed"], metrics["breaches"]
    result = metrics["outputs"]["simcc_x"]
    assert 0.999997 < result["cosine"] < 0.999999
    own = result["reference_cosine_distance"]
    assert own == pytest.approx(0.5 * 8.6e-4 ** 2, rel=0.1)
    assert own == pytest.approx(1 - np.dot(reference32["simcc_x"].ravel().astype(np.float64),
                                           reference64["simcc_x"].ravel())
                                / np.linalg.norm(reference32["simcc_x"].astype(np.float64))
                                / np.linalg.norm(reference64["simcc_x"]), rel=1e-6)
    assert result["cosine_rule"] == "reference-error" and result["cosine_limit"] == pytest.approx(1 - 256 * own)
    assert result["needs_cosine_factor"] == pytest.approx((1 - result["cosine"]) / own, rel=1e-6)
    assert 3 < result["needs_cosine_factor"] < 8 and result["needs_rms_factor"] < 3  # about 2.2² and 2.2
    line = next(line for line in summary_lines("job", metrics) if line.startswith("PASSED job simcc_x "))
    assert f"cosine {result['cosine']:.7f} ≥ {result['cosine_limit']:.7g} (256 × float32's own 1 - cosine " in line
    # The old fixed limit alone rejects it.
    fixed = compare(reference64, correct, Tolerance(**{**vars(FP32), "cosine_factor": None}), 0.5,
                    reference_float32=reference32, images=2)
    assert any(b.startswith("simcc_x cosine ") and b.endswith(f"< min_cosine 0.999999 (needs min_cosine ≤ "
                                                              f"{fixed['outputs']['simcc_x']['cosine']:.6f})")
               for b in fixed["breaches"])
    # 20x the model's own error: 1 - cosine 400x its own.
    _, _, broken = noisy_model_outputs(own=8.6e-4, artifact=20 * 8.6e-4)
    failed = compare(reference64, broken, FP32, 0.5, reference_float32=reference32, images=2)
    cosine = failed["outputs"]["simcc_x"]
    breach = next(b for b in failed["breaches"] if b.startswith("simcc_x cosine"))
    assert breach == (f"simcc_x cosine {cosine['cosine']:.7f} < min_cosine {cosine['cosine_limit']:.7f} = 1 - "
                      f"cosine_factor 256 × the float32 reference's own 1 - cosine {own:.3g} "
                      f"(needs cosine_factor ≥ {cosine['needs_cosine_factor']:.3g})")
    assert 300 < cosine["needs_cosine_factor"] < 500


def test_min_cosine_holds_where_the_models_own_numerics_are_finer_or_unknown():
    """A float32 reference within 3.9e-9 of its float64 run in 1 - cosine (every model measured but the
    largest) keeps the fixed min_cosine; so does a reference without a float64 run, and a precision without
    cosine_factor (bf16, int8)."""
    reference64, reference32, artifact = noisy_model_outputs(own=2e-5, artifact=2e-3)
    metrics = compare(reference64, artifact, FP32, 0.5, reference_float32=reference32, images=2)
    result = metrics["outputs"]["simcc_x"]
    assert result["cosine_rule"] == "min_cosine" and result["cosine_limit"] == 0.999999
    assert result["reference_cosine_distance"] == pytest.approx(2e-10, rel=0.1)
    assert any(b.startswith("simcc_x cosine ") and b.endswith(f"< min_cosine 0.999999 (needs min_cosine ≤ "
                                                              f"{result['cosine']:.6f})") for b in metrics["breaches"])
    assert result["needs_cosine_factor"] == pytest.approx(100 ** 2, rel=0.1)  # 100x its own error, squared
    within = compare(reference64, reference32, FP32, 0.5, reference_float32=reference32, images=2)
    assert within["outputs"]["simcc_x"]["needs_cosine_factor"] == 0.0  # within min_cosine
    _, noisy32, correct = noisy_model_outputs(own=8.6e-4, artifact=1.9e-3)
    for tol, float32 in ((FP32, None), (Tolerance(**{**vars(FP32), "cosine_factor": None}), noisy32)):
        result = compare(reference64, correct, tol, 0.5, reference_float32=float32, images=2)["outputs"]["simcc_x"]
        assert result["cosine_rule"] == "min_cosine" and not result["passed_cosine"]
        assert "needs_cosine_factor" not in result
        assert ("reference_cosine_distance" in result) == (float32 is not None)  # reported wherever measured


def test_reference_error_rule_needs_a_float32_reference_and_a_factor():
    reference64, reference32 = simcc(), simcc()
    assert compare(reference64, reference64, TOL, 0.5)["rule"] == "output-scale"  # no float32 run given
    no_factor = Tolerance(**{**vars(TOL), "error_factor": None})
    assert compare(reference64, reference64, no_factor, 0.5, reference_float32=reference32)["rule"] == "output-scale"


def test_error_floor_applies_when_the_reference_is_exact():
    ref = simcc()
    actual = altered(ref, "simcc_x", (0, 0, 3), float(ref["simcc_x"][0, 0, 3]) + 5e-7)
    metrics = compare(ref, actual, TOL, 0.5, reference_float32=ref)  # float32 reference equal to float64
    assert metrics["outputs"]["simcc_x"]["reference_error"] == 0.0
    assert metrics["outputs"]["simcc_x"]["atol"] == pytest.approx(1e-7 * 10.0)
    assert metrics["passed"], metrics["breaches"]
    assert metrics["outputs"]["simcc_x"]["needs_error_factor"] == 0.0  # within the floor


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_output_scale_limit_follows_the_logit_size(scale):
    """The same relative error passes at any logit size: no fixed atol fitted to one small model."""
    ref = simcc(scale=scale)
    actual = {k: v * np.float32(1 + 5e-4) for k, v in ref.items()}  # 5e-4 of the scale at the peak
    metrics = compare(ref, actual, TOL, 0.5)
    assert metrics["passed"], metrics["breaches"]
    assert metrics["outputs"]["simcc_x"]["needs_max_error"] == pytest.approx(5e-4, rel=1e-3)
    assert metrics["outputs"]["simcc_x"]["atol"] == pytest.approx(1e-3 * 10 * scale, rel=1e-6)


def test_element_over_the_limit_fails_and_says_what_it_needs():
    ref = simcc()
    actual = altered(ref, "simcc_x", (1, 1, 3), float(ref["simcc_x"][1, 1, 3]) + 0.05)
    metrics = compare(ref, actual, TOL, 0.5)
    assert not metrics["passed"]
    (breach,) = metrics["breaches"]
    assert breach == "simcc_x max|Δ| 0.05 > atol 0.01 = max_error 0.001 × scale 10 (needs max_error ≥ 0.005)"
    assert metrics["outputs"]["simcc_x"]["elements_failing"] == 1
    assert metrics["outputs"]["simcc_y"]["passed_elementwise"]
    assert any(line.startswith("FAILED job simcc_x max|Δ| 0.05 > atol 0.01") for line in summary_lines("job", metrics))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_fails_whatever_the_tolerance(value):
    ref = simcc()
    metrics = compare(ref, altered(ref, "simcc_y", (1, 2, 3), value), LOOSE, 0.5)
    assert not metrics["passed"]
    assert metrics["breaches"][0] == "simcc_y has NaN or Inf"
    assert metrics["outputs"]["simcc_y"]["finite"] is False
    assert metrics["keypoints"]["all"]["count"] == N * K  # still decoded and written


def test_zeros_in_the_reference_use_eps():
    ref = np.zeros((2, 3), np.float32)
    ref[1, 1] = 1.0  # scale 1
    actual = ref.copy()
    actual[0, 0] = 1e-6
    result = compare_output(ref, actual, TOL)
    assert result["passed_elementwise"]  # |Δ| 1e-6 <= 1e-3 x scale, whatever the relative error
    assert result["needs_rtol"] == pytest.approx(1e-6 / EPS)
    assert np.isfinite(result["needs_rtol"])
    exact = compare_output(ref, ref, TOL)
    assert exact["needs_rtol"] == 0.0 and exact["passed_elementwise"]  # 0/0 is not NaN


def test_an_all_zero_reference_passes_only_an_exact_match():
    zeros = np.zeros((2, 3), np.float32)
    assert compare_output(zeros, zeros, TOL)["needs_max_error"] == 0.0
    off = compare_output(zeros, zeros + 1e-9, TOL)
    assert off["needs_max_error"] == float("inf") and not off["passed_elementwise"]


def test_errors_are_computed_in_float64():
    ref = np.array([65504.0, -65504.0], np.float16)
    actual = ref[::-1].copy()  # in float16, the difference would overflow to inf
    result = compare_output(ref, actual, TOL)
    assert result["needs_atol"] == 131008.0
    assert result["needs_max_error"] == 2.0
    assert result["finite"]


def test_cosine_catches_a_sign_flip():
    ref = simcc()
    metrics = compare(ref, {k: -v for k, v in ref.items()}, Tolerance(**{**vars(LOOSE), "min_cosine": 0.99}), 0.5)
    assert any(b.startswith("simcc_x cosine -") and "min_cosine 0.99" in b for b in metrics["breaches"])


def test_missing_and_extra_outputs_are_breaches():
    ref = simcc()
    missing = compare(ref, {"simcc_x": ref["simcc_x"]}, TOL, 0.5)
    assert not missing["passed"]
    assert missing["breaches"][0] == "outputs differ: reference ['simcc_x', 'simcc_y'], artifact ['simcc_x']"
    assert "keypoints" not in missing  # nothing to decode without both outputs
    extra = compare(ref, {**ref, "heatmap": np.zeros(3)}, TOL, 0.5)
    assert not extra["passed"] and "heatmap" in extra["breaches"][0]


def test_shape_mismatch_is_a_breach_with_both_shapes():
    ref = simcc()
    metrics = compare(ref, {**ref, "simcc_y": ref["simcc_y"][:, :, :-1]}, TOL, 0.5)
    assert not metrics["passed"]
    assert metrics["breaches"] == [f"simcc_y shape [{N}, {K}, {WY - 1}] != reference [{N}, {K}, {WY}]"]


# --------------------------------------------------------------------------------------------- peak margin


def gaussian_row(bins: int, center: float, sigma: float, height: float = 1.0) -> np.ndarray:
    return height * np.exp(-0.5 * ((np.arange(bins) - center) / sigma) ** 2)


def test_one_peak_has_a_margin_of_at_least_one_half():
    row = gaussian_row(384, 100, 6) + 0.05 * np.random.default_rng(0).random(384)
    assert 0.5 <= peak_margin(row[None])[0] < 0.7  # the lobe's own shoulders lie just below half height
    spike = np.zeros(384)
    spike[7] = 1.0
    assert peak_margin(spike[None])[0] == 1.0  # nothing outside the lobe rises above the median


def test_a_second_location_lowers_the_margin_and_a_tie_zeroes_it():
    second = gaussian_row(384, 100, 6) + gaussian_row(384, 300, 6, height=0.8)
    assert peak_margin(second[None])[0] == pytest.approx(0.2, abs=0.01)
    tie = gaussian_row(384, 100, 6) + gaussian_row(384, 300, 6)
    assert peak_margin(tie[None])[0] == pytest.approx(0.0, abs=1e-9)


def test_peak_margin_is_unchanged_by_the_logit_scale_and_offset():
    rng = np.random.default_rng(1)
    rows = np.stack([gaussian_row(256, 40 + 10 * i, 5) + 0.3 * rng.random(256) for i in range(6)])
    assert np.allclose(peak_margin(rows * 400.0 - 123.0), peak_margin(rows), atol=1e-12)


def test_large_logits_with_a_near_tie_are_not_confident():
    """Logits of several hundred score every keypoint 'high'; the margin still sees the tie."""
    row = 500.0 + 20.0 * np.random.default_rng(2).standard_normal(384)
    row[50], row[300] = 600.0, 599.9
    assert peak_margin(row[None])[0] < 0.01
    flat = np.full((1, 384), 7.0)
    assert peak_margin(flat)[0] == 0.0


def test_confidence_needs_both_axes():
    ref = simcc()
    ref["simcc_y"][0, 1] = 1.0  # keypoint 1 of image 0: flat y row
    confident = confident_keypoints(ref, 0.5)
    assert confident.shape == (N, K)
    assert not confident[0, 1] and confident.sum() == N * K - 1


# --------------------------------------------------------------------------------------------- keypoints


def test_keypoint_drift_at_known_bins():
    ref = simcc()  # every maximum at x bin 8, y bin 10 -> (4.0, 5.0) px at split ratio 2
    actual = altered(ref, "simcc_x", (0, 0), 1.0)
    actual["simcc_x"][0, 0, 14] = 10.0  # keypoint 0 of image 0 moves 6 bins = 3 px in x
    actual["simcc_y"][1, 2] = 1.0
    actual["simcc_y"][1, 2, 18] = 10.0  # keypoint 2 of image 1 moves 8 bins = 4 px in y
    drift = keypoint_metrics(ref, actual, TOL, min_peak_margin=0.0)["all"]
    assert drift["max_drift_px"] == 4.0
    assert drift["mean_drift_px"] == pytest.approx((3.0 + 4.0) / (N * K))
    assert drift["agreement"] == pytest.approx(4 / 6)

    strict = Tolerance(**{**vars(LOOSE), "max_mean_drift_px": 0.5, "agreement_px": 0.5, "min_agreement": 0.9})
    metrics = compare(ref, actual, strict, 0.5)
    assert metrics["keypoints"]["confident"]["max_drift_px"] == 4.0
    assert ("keypoints mean drift 1.17px over 6 confident > max_mean_drift_px 0.5 (needs ≥ 1.17)"
            in metrics["breaches"])
    assert ("keypoints within 0.5px 0.6667 of 6 confident < min_agreement 0.9 (needs ≤ 0.6667)"
            in metrics["breaches"])


def test_score_change_is_relative_to_the_scale():
    ref = simcc(scale=100.0)
    actual = altered(ref, "simcc_x", (0, 0, 8), 1000.0 - 30.0)  # the peak drops 30 of scale 1000
    metrics = compare(ref, actual, Tolerance(**{**vars(LOOSE), "max_score_change": 0.01}), 0.5)
    assert metrics["keypoints"]["confident"]["max_score_change"] == pytest.approx(0.03)
    assert metrics["breaches"] == ["keypoints score change 0.03 × scale > 0.01 (max_score_change; needs ≥ 0.03)"]


def test_score_change_limit_grows_with_the_references_own_rounding():
    """Under the reference-error rule a score may move by error_factor x the float32 reference's own score
    change (a deep model with logits of hundreds), never by less than max_score_change."""
    ref64 = {k: v.astype(np.float64) for k, v in simcc(scale=100.0).items()}
    ref32 = altered(ref64, "simcc_x", (0, 0, 8), 1000.0 - 0.2)  # float32's own: 0.2 of scale 1000
    tol = Tolerance(**{**vars(LOOSE), "error_factor": 10.0, "max_score_change": 5e-4})
    within = compare(ref64, altered(ref64, "simcc_x", (0, 0, 8), 1000.0 - 1.5), tol, 0.5, reference_float32=ref32)
    assert within["passed"], within["breaches"]
    assert within["keypoints"]["score_change_limit"] == pytest.approx(10 * 2e-4, rel=1e-3)
    assert within["keypoints"]["score_change_rule"] == "error_factor 10 × the float32 reference's own 0.0002"
    beyond = compare(ref64, altered(ref64, "simcc_x", (0, 0, 8), 1000.0 - 3.0), tol, 0.5, reference_float32=ref32)
    assert beyond["breaches"][1:] == ["keypoints score change 0.003 × scale > 0.002 (error_factor 10 × the float32 "
                                  "reference's own 0.0002; needs ≥ 0.003)"]
    exact32 = compare(ref64, altered(ref64, "simcc_x", (0, 0, 8), 1000.0 - 1.5), tol, 0.5, reference_float32=ref64)
    assert exact32["keypoints"]["score_change_rule"] == "max_score_change"
    assert exact32["breaches"][1:] == ["keypoints score change 0.0015 × scale > 0.0005 (max_score_change; needs ≥ 0.0015)"]


def test_drift_is_gated_only_where_the_reference_is_confident():
    ref = simcc()
    ref["simcc_x"][1] = 1 + np.random.default_rng(5).random((K, WX))  # image 1: noisy rows, no clear peak
    actual = {k: v.copy() for k, v in ref.items()}
    actual["simcc_x"][1, :, 3] = 2.5  # its argmax jumps: says nothing about the conversion
    strict = Tolerance(**{**vars(LOOSE), "max_mean_drift_px": 0.5, "agreement_px": 0.5, "min_agreement": 0.9})
    metrics = compare(ref, actual, strict, 0.5)
    assert metrics["passed"], metrics["breaches"]
    assert metrics["keypoints"]["confident"]["count"] == K and metrics["keypoints"]["confident"]["max_drift_px"] == 0
    assert metrics["keypoints"]["all"]["max_drift_px"] > 0  # reported, not gated
    nothing_confident = compare(ref, actual, strict, min_peak_margin=1.01)
    assert nothing_confident["passed"] and nothing_confident["keypoints"]["confident"]["count"] == 0
    assert any("drift not gated" in line for line in summary_lines("job", nothing_confident))


def test_only_the_image_inputs_are_gated():
    """Input 1 stands for a random tensor: its keypoints are decoded and reported, not gated."""
    ref = simcc()
    actual = altered(ref, "simcc_x", (1, 0), 1.0)
    actual["simcc_x"][1, 0, 2] = 10.0  # a far jump on the non-image input
    strict = Tolerance(**{**vars(LOOSE), "max_mean_drift_px": 0.5, "agreement_px": 0.5, "min_agreement": 0.9})
    metrics = compare(ref, actual, strict, 0.5, images=1)
    assert metrics["passed"], metrics["breaches"]
    assert metrics["keypoints"]["images"] == 1 and metrics["keypoints"]["confident"]["count"] == K
    assert metrics["keypoints"]["all"]["max_drift_px"] == 3.0
    assert not compare(ref, actual, strict, 0.5)["passed"]  # every input gated when `images` is not given


def test_every_metric_is_computed_whatever_fails_first():
    ref = simcc()
    actual = altered(ref, "simcc_x", (0, 0), 1.0)
    actual["simcc_x"][0, 0, 2] = 10.0  # a far jump: elementwise, cosine and keypoints all fail
    metrics = compare(ref, actual, TOL, 0.5)
    kinds = [b.split()[1] if b.startswith("simcc") else b.split()[0] for b in metrics["breaches"]]
    assert kinds[:2] == ["max|Δ|", "cosine"] and "keypoints" in kinds
    assert metrics["keypoints"]["confident"]["max_drift_px"] == 3.0
    assert set(metrics["outputs"]) == {"simcc_x", "simcc_y"}


# --------------------------------------------------------------------------------------------- precision


@pytest.mark.parametrize("precision, executed, flagged", [
    ("fp32", {"fp32": 80}, []),
    ("fp32", {"fp32": 80, "bf16": 0}, []),
    ("fp32", {"fp32": 4, "bf16": 84}, ["bf16"]),
    ("fp32", {"fp16": 2, "bf16": 84, "fp32": 1}, ["fp16", "bf16"]),
    ("fp16", {"fp16": 60, "fp32": 3}, []),
    ("fp16", {"fp32": 63}, ["nothing"]),
    ("int8", {"int8": 40, "fp32": 20}, []),
])
def test_check_execution_precision_flags_lower_and_missing_precisions(precision, executed, flagged):
    breaches = check_execution_precision(precision, executed)
    assert len(breaches) == len(flagged)
    for lower in flagged:
        if lower == "nothing":
            assert breaches == [f"executes nothing in {precision} (measured: {executed}); the conversion did not apply"]
        else:
            assert any(f"in {lower}, below the target precision {precision}" in b for b in breaches)
    if "bf16" in flagged:
        assert any("84 operations in bf16" in b for b in breaches)


# --------------------------------------------------------------------------------------------- golden set


def golden(float64: bool = True) -> Golden:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (2, 4, 3, 3), dtype=np.uint8)
    randoms = rng.standard_normal((1, 3, 4, 3)).astype(np.float32)
    outputs = simcc()
    return Golden(np.concatenate([normalize(crops), randoms]), crops, PreprocessSpec(),
                  outputs, {k: v.astype(np.float64) for k, v in outputs.items()} if float64 else None, 1)


def test_golden_set_round_trips_through_its_arrays():
    original = golden()
    back = Golden.from_arrays(original.arrays())
    assert back.normalization == PreprocessSpec() and back.photo_count == 1
    assert np.array_equal(back.inputs, original.inputs) and np.array_equal(back.crops, original.crops)
    assert back.reference["simcc_x"].dtype == np.float64  # compared with the float64 run
    without = Golden.from_arrays(golden(float64=False).arrays())
    assert without.float64 is None and without.reference["simcc_x"].dtype == np.float32


def test_an_old_reference_file_says_to_rerun_the_stage():
    arrays = {k: v for k, v in golden().arrays().items() if k != "crops"}
    with pytest.raises(ConfigError, match="reference.npz has no crops: .* rerun the reference stage"):
        Golden.from_arrays(arrays)


def test_inputs_for_another_normalization_recompute_only_the_images():
    g = golden()
    assert g.inputs_for(PreprocessSpec()) is g.inputs
    bgr = g.inputs_for(PreprocessSpec(bgr_to_rgb=False))
    assert np.array_equal(bgr[2:], g.inputs[2:])  # the random tensor is not an image
    expected = (g.crops[..., ::-1].astype(np.float32) - np.float32(MEAN_RGB)) / np.float32(STD_RGB)
    assert np.allclose(bgr[:2], expected.transpose(0, 3, 1, 2))


def test_sdk_pipeline_json_records_the_normalization():
    written = pipeline_json(preset_spec("rtmpose-t_coco17_256x192"), "input", {})
    assert sdk_normalization(written) == PreprocessSpec(MEAN_RGB, STD_RGB, True)
    normalize = written["pipeline"]["tasks"][0]["transforms"][3]
    normalize["to_rgb"] = False
    assert sdk_normalization(written) == PreprocessSpec(MEAN_RGB, STD_RGB, False)
    assert sdk_normalization({"pipeline": {"tasks": []}}) is None


def test_onnx_metadata_records_the_normalization():
    meta = {"mean": json.dumps(list(MEAN_RGB)), "std": json.dumps(list(STD_RGB)), "channel_order": "RGB"}
    assert onnx_metadata_normalization(meta) == PreprocessSpec()
    assert onnx_metadata_normalization({**meta, "channel_order": "BGR"}) == PreprocessSpec(bgr_to_rgb=False)
    older = {"mean_rgb": json.dumps(list(MEAN_RGB)), "std_rgb": json.dumps(list(STD_RGB))}  # before model_spec
    assert onnx_metadata_normalization(older) == PreprocessSpec()
    assert onnx_metadata_normalization({}) is None
    with pytest.raises(ConfigError, match="ONNX metadata mean_rgb/std_rgb are unreadable"):  # older keys
        onnx_metadata_normalization({"mean_rgb": "[1, 2", "std_rgb": "[1, 2, 3]"})
