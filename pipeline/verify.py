"""Compare an artifact's outputs with the PyTorch reference, Polygraphy-style, and gate on tolerances.

Per output (by name): absolute and relative error statistics in float64, cosine similarity, and the
tolerance that would have been needed. Per image: SimCC decoded to keypoints on both sides, with
the drift in model-input pixels. Relative error divides by |reference| + EPS (EPS guards zeros).
Pass rule per element: |Δ| <= atol or |Δ|/(|r|+EPS) <= rtol. NaN or Inf always fails.

Keypoint drift is gated on the keypoints the reference model is confident about (score, mmpose's
min of the two SimCC maxima, at least `min_score`). Where the reference is unsure (a random tensor,
a photo unlike the training data) its SimCC rows are flat, the argmax of near-equal bins jumps
across the crop under any rounding, and that jump says nothing about the conversion; the elementwise
and cosine checks still cover those outputs. Drift over every keypoint is reported alongside.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pipeline.config import Tolerance
from pipeline.decode import simcc_argmax

EPS = 1e-12
# bf16 keeps fewer mantissa bits than fp16, so it counts as lower for an fp16 target.
LOWER_PRECISIONS = {"fp32": ("fp16", "bf16", "int8"), "fp16": ("bf16", "int8"), "bf16": ("int8",), "int8": ()}


def _stats(values: np.ndarray) -> dict[str, float]:
    return {"max": float(np.max(values)), "mean": float(np.mean(values)),
            "median": float(np.median(values)), "p99": float(np.percentile(values, 99))}


def compare_output(reference: np.ndarray, actual: np.ndarray, tol: Tolerance) -> dict[str, object]:
    ref, act = reference.astype(np.float64), actual.astype(np.float64)
    abs_err = np.abs(act - ref)
    rel_err = abs_err / (np.abs(ref) + EPS)
    finite = bool(np.all(np.isfinite(act)))
    elementwise_ok = (abs_err <= tol.atol) | (rel_err <= tol.rtol)
    denom = np.linalg.norm(ref) * np.linalg.norm(act)
    cosine = float(np.dot(ref.ravel(), act.ravel()) / denom) if denom > 0 and finite else float("nan")
    # The smallest single tolerance that would have passed every element on its own.
    return {
        "abs_error": _stats(abs_err), "rel_error": _stats(rel_err), "cosine": cosine, "finite": finite,
        "needs_atol": float(np.max(abs_err)), "needs_rtol": float(np.max(rel_err)),
        "elements_failing": int(np.size(elementwise_ok) - np.count_nonzero(elementwise_ok)),
        "passed_elementwise": finite and bool(np.all(elementwise_ok)),
        "passed_cosine": finite and cosine >= tol.min_cosine,
    }


def drift_stats(ref_kpts: np.ndarray, act_kpts: np.ndarray, tol: Tolerance,
                mask: np.ndarray | None = None) -> dict[str, float | int | None]:
    """Drift between decoded keypoints [N,K,2], over those selected by `mask` [N,K] (all when None)."""
    drift = np.linalg.norm(act_kpts - ref_kpts, axis=-1)
    if mask is not None:
        drift = drift[mask]
    if drift.size == 0:
        return {"count": 0, "mean_drift_px": None, "max_drift_px": None, "agreement": None}
    return {"count": int(drift.size), "mean_drift_px": float(np.mean(drift)), "max_drift_px": float(np.max(drift)),
            "agreement": float(np.mean(drift <= tol.agreement_px))}


def keypoint_metrics(reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], tol: Tolerance,
                     min_score: float) -> dict[str, object]:
    """Drift over the keypoints the reference scores at least `min_score` ("confident") and over all."""
    ref_kpts, ref_scores = simcc_argmax(reference["simcc_x"], reference["simcc_y"])
    act_kpts, _ = simcc_argmax(actual["simcc_x"], actual["simcc_y"])
    return {"min_score": min_score,
            "confident": drift_stats(ref_kpts, act_kpts, tol, ref_scores >= min_score),
            "all": drift_stats(ref_kpts, act_kpts, tol)}


def compare(reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], tol: Tolerance,
            min_score: float) -> dict[str, object]:
    """Metrics and the list of breaches; missing/extra outputs or shape mismatches are breaches too."""
    breaches: list[str] = []
    outputs: dict[str, object] = {}
    if set(reference) != set(actual):
        breaches.append(f"outputs differ: reference {sorted(reference)}, artifact {sorted(actual)}")
    for name in sorted(set(reference) & set(actual)):
        if reference[name].shape != actual[name].shape:
            breaches.append(f"{name} shape {list(actual[name].shape)} != reference {list(reference[name].shape)}")
            continue
        result = compare_output(reference[name], actual[name], tol)
        outputs[name] = result
        if not result["finite"]:
            breaches.append(f"{name} has NaN or Inf")
        elif not result["passed_elementwise"]:
            breaches.append(f"{name} max|Δ| {result['needs_atol']:.3g} > atol {tol.atol:g} "
                            f"(needs atol ≥ {result['needs_atol']:.3g} or rtol ≥ {result['needs_rtol']:.3g})")
        if result["finite"] and not result["passed_cosine"]:
            breaches.append(f"{name} cosine {result['cosine']:.6f} < min_cosine {tol.min_cosine:g} "
                            f"(needs min_cosine ≤ {result['cosine']:.6f})")
    metrics: dict[str, object] = {"outputs": outputs}
    if not breaches:
        keypoints = keypoint_metrics(reference, actual, tol, min_score)
        metrics["keypoints"] = keypoints
        gated = keypoints["confident"]
        if gated["count"] and gated["mean_drift_px"] > tol.max_mean_drift_px:
            breaches.append(f"keypoints mean drift {gated['mean_drift_px']:.3g}px > max_mean_drift_px "
                            f"{tol.max_mean_drift_px:g} (needs ≥ {gated['mean_drift_px']:.3g})")
        if gated["count"] and gated["agreement"] < tol.min_agreement:
            breaches.append(f"keypoints within {tol.agreement_px:g}px {gated['agreement']:.4f} < min_agreement "
                            f"{tol.min_agreement:g} (needs ≤ {gated['agreement']:.4f})")
    metrics["breaches"] = breaches
    metrics["passed"] = not breaches
    return metrics


def check_execution_precision(precision: str, executed: Mapping[str, int]) -> list[str]:
    """A target computes in the precision its name says: none lower (bf16 in openvino-fp32), and some
    of its own (an fp16 or int8 conversion that silently did nothing is a failure too)."""
    lower = {p: n for p, n in executed.items() if p in LOWER_PRECISIONS.get(precision, ()) and n > 0}
    breaches = [f"executes {n} operations in {p}, below the target precision {precision}" for p, n in lower.items()]
    if precision != "fp32" and executed.get(precision, 0) == 0:
        breaches.append(f"executes nothing in {precision} (measured: {dict(executed)}); the conversion did not apply")
    return breaches


def summary_lines(job: str, metrics: Mapping[str, object]) -> list[str]:
    """One line per output for humans, e.g. `PASSED simcc_x max|Δ| 2.1e-06 ≤ atol 1e-04 ...`."""
    lines = []
    for name, result in metrics.get("outputs", {}).items():  # type: ignore[union-attr]
        status = "PASSED" if result["passed_elementwise"] and result["passed_cosine"] else "FAILED"
        lines.append(f"{status} {job} {name} max|Δ| {result['needs_atol']:.2g} max rel {result['needs_rtol']:.2g} "
                     f"cosine {result['cosine']:.7f}")
    kp = metrics.get("keypoints", {}).get("confident") if isinstance(metrics.get("keypoints"), dict) else None
    if kp and kp["count"]:
        lines.append(f"{'PASSED' if metrics['passed'] else 'FAILED'} {job} {kp['count']} confident keypoints mean drift "
                     f"{kp['mean_drift_px']:.3g}px max {kp['max_drift_px']:.3g}px agreement {kp['agreement']:.4f}")
    elif kp is not None:
        lines.append(f"NOTE {job} no keypoint scored ≥ min_score {metrics['keypoints']['min_score']:g}; drift not gated")
    for breach in metrics.get("breaches", []):  # type: ignore[union-attr]
        lines.append(f"FAILED {job} {breach}")
    return lines
