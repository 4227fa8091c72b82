"""Compare an artifact with the reference, Polygraphy-style, with limits derived from the reference itself.

Everything is computed in float64, per output (by name), and always in full: a breach never stops
the other figures from being computed and written.

Elementwise rule (metrics `rule`; `scale` is the output's max |reference| over the golden inputs):
- "reference-error", where the precision has an `error_factor` (fp32, fp16, bf16) and the reference
  has a float64 run (every source: PyTorch's `model.double()`, or a supplied ONNX/SDK graph rewritten
  to float64 and evaluated by onnx's reference evaluator, pipeline/graph/float64.py):
  max|artifact - float64| <= error_factor x max|float32 reference - float64| + error_floor x scale.
  The float32 reference's own error measures how much this network amplifies rounding, whatever its
  depth and logit size: a correct fp32 artifact is another float32 evaluation of it (factor ~1), and
  rounding to fp16 / bf16 grows that error by at most the ratio of unit roundoffs (2^13 / 2^16).
  Where the precision also has an `rms_factor`, the same rule holds for the typical error:
  rms|artifact - float64| <= rms_factor x rms|float32 reference - float64| + error_floor x rms(reference).
  The maximum is one element's rounding and grows with the model's depth and logit size (on rtmpose-l,
  logits of several hundred, fp16's factor x max admits 0.29 x scale); the rms averages every element,
  so it is steady across models, and a layer computed wrongly (weights off, an overflow) raises it
  everywhere at once.
- "output-scale", int8 (whose error comes from calibration, not rounding), and any precision whose
  reference.npz has no float64 run (one written before supplied graphs had one):
  max|artifact - reference| <= max_error x scale.
Each output reports the tolerance it would have needed (`needs_atol`, `needs_max_error`, and for the
reference-error rule `needs_error_factor`, `needs_rms_factor`); `rms_error` and `relative_l2`
(rms|Δ| / rms(reference)) are reported under every rule. Relative errors divide by |reference| + EPS (EPS guards
zeros) and are reported, not gated. NaN or Inf always fails.

Cosine similarity (all golden inputs of an output flattened): >= min_cosine, and under the reference-error
rule, where the precision has a `cosine_factor`, the limit follows the float32 reference's own cosine
distance (1 - cosine) against its float64 run:
  1 - cosine <= max(1 - min_cosine, cosine_factor x (1 - cosine of the float32 reference against float64)).
1 - cosine is half the squared distance between the two outputs scaled to unit length, so it grows with
the square of the error: cosine_factor is in the square of rms_factor's units. A deep model with large
logits gives a correct fp32 artifact a cosine below any fixed fp32 limit that still catches one layer
computed wrongly on a small model (rtmw-x 384x288, issue 21: 0.9999982 with a max error 1.9-2.5x float32's
own); min_cosine stays the strictest the limit gets, and the whole limit without a float64 run and for the
precisions without a cosine_factor (fp16, bf16, int8: there the cosine is a figure users see).

Reduced precision is judged mainly on what users see. Keypoints: SimCC decoded on both sides
(argmax, mmpose's score = min of the two maxima); drift in model-input pixels, the share within
`agreement_px`, and the score change (x scale), gated on the keypoints of the image inputs that the
reference is *confident* about. Confidence is the peak margin of its SimCC rows (`peak_margin`),
which is scale-free: a raw-logit threshold means nothing across models (a model whose logits reach
several hundred scores every keypoint "high" even where two locations tie, and its argmax then
jumps under any rounding).

Preprocessing is checked end to end: the golden image crops are stored as uint8 RGB; the reference
ran on them normalised as the reference model expects, and the artifact runs on them normalised as
it *records* (the SDK's pipeline.json `Normalize`, the ONNX metadata `mean`/`std`/`channel_order`); each
distinct recorded preprocessing gets its own run. A swapped channel order or mean/std then shows as
error and keypoint drift. Seeded random tensors (not images) go to both sides unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.backends.runtime import ARTIFACT_META
from pipeline.config import Tolerance
from pipeline.core.errors import ConfigError
from pipeline.core.onnx_io import OUTPUT_NAMES, get_metadata, load_onnx
from pipeline.model.decode import SIMCC_SPLIT_RATIO, confident_keypoints, simcc_argmax
from pipeline.model.preprocess import normalize
from pipeline.model.spec import PreprocessSpec
from pipeline.sources.sdk import PIPELINE_JSON, sdk_normalization

EPS = 1e-12
FLOAT64 = "_float64"  # reference.npz: `simcc_x_float64` is the float64 run of `simcc_x`
# bf16 keeps fewer mantissa bits than fp16, so it counts as lower for an fp16 target.
LOWER_PRECISIONS = {"fp32": ("fp16", "bf16", "int8"), "fp16": ("bf16", "int8"), "bf16": ("int8",), "int8": ()}


# --------------------------------------------------------------------------------------------- golden set


@dataclass
class Golden:
    """The reference stage's output (reference.npz): inputs, image crops and reference outputs.

    `inputs` [N,3,H,W] float32: the first I rows are `crops` [I,H,W,3] uint8 RGB normalised by
    `normalization` (the reference model's preprocessing, from its description), the rest seeded
    random tensors. `float32`: the reference outputs by name; `float64`: the same network run in
    float64 (PyTorch `model.double()`, or a supplied graph in float64), None only in a reference.npz
    written before supplied graphs had a float64 run. `photo_count`: how many of the crops are the bundled
    photos. `split_ratio`: the SimCC split ratio that decodes the outputs to input pixels.
    """

    inputs: np.ndarray
    crops: np.ndarray
    normalization: PreprocessSpec
    float32: dict[str, np.ndarray]
    float64: dict[str, np.ndarray] | None
    photo_count: int
    split_ratio: float = SIMCC_SPLIT_RATIO

    def arrays(self) -> dict[str, np.ndarray]:
        """What reference.npz holds (no pickles: strings are numpy unicode arrays)."""
        arrays = {"input": self.inputs, "crops": self.crops, "photo_count": np.array(self.photo_count),
                  "normalization_mean": np.array(self.normalization.mean, np.float64),
                  "normalization_std": np.array(self.normalization.std, np.float64),
                  "normalization_channels": np.array(self.normalization.channel_order),
                  "simcc_split_ratio": np.array(self.split_ratio, np.float64), **self.float32}
        if self.float64 is not None:
            arrays.update({name + FLOAT64: value for name, value in self.float64.items()})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], source: str = "reference.npz") -> "Golden":
        missing = [k for k in ("input", "crops", "normalization_mean", *OUTPUT_NAMES) if k not in arrays]
        if missing:
            raise ConfigError(f"{source} has no {', '.join(missing)}: it was written by an older version; "
                              "rerun the reference stage")
        float64 = {name: arrays[name + FLOAT64] for name in OUTPUT_NAMES if name + FLOAT64 in arrays}
        normalization = PreprocessSpec(tuple(float(v) for v in arrays["normalization_mean"]),
                                       tuple(float(v) for v in arrays["normalization_std"]),
                                       str(arrays["normalization_channels"]) == "RGB")
        ratio = float(arrays["simcc_split_ratio"]) if "simcc_split_ratio" in arrays else SIMCC_SPLIT_RATIO
        return cls(arrays["input"], arrays["crops"], normalization, {name: arrays[name] for name in OUTPUT_NAMES},
                   float64 if len(float64) == len(OUTPUT_NAMES) else None, int(arrays["photo_count"]), ratio)

    def inputs_for(self, normalization: PreprocessSpec) -> np.ndarray:
        """The golden inputs with the image crops normalised by `normalization`; random rows as stored."""
        if normalization.normalization == self.normalization.normalization:
            return self.inputs
        images = normalize(self.crops, normalization)
        return np.concatenate([images, self.inputs[len(images):]])

    @property
    def reference(self) -> dict[str, np.ndarray]:
        """What artifacts are compared with: the float64 run where there is one."""
        return self.float64 if self.float64 is not None else self.float32


def torch_reference(model, inputs: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A PyTorch model's outputs on `inputs` [N,3,H,W] float32, by name: the float32 run, and the float64
    run of a copy of the model (`model.double()`, inputs widened exactly) that sets fp32's tolerance."""
    import copy

    import torch

    with torch.no_grad():
        float32 = model(torch.from_numpy(inputs))
        float64 = copy.deepcopy(model).double()(torch.from_numpy(inputs).double())
    return ({name: t.numpy() for name, t in zip(OUTPUT_NAMES, float32)},
            {name: t.numpy() for name, t in zip(OUTPUT_NAMES, float64)})


# --------------------------------------------------------------------------------------------- outputs


def _stats(values: np.ndarray) -> dict[str, float]:
    return {"max": float(np.max(values)), "mean": float(np.mean(values)),
            "median": float(np.median(values)), "p99": float(np.percentile(values, 99))}


def _ratio(value: float, unit: float) -> float:
    """value / unit, where a zero unit gives 0 for a zero value and inf otherwise (NaN stays NaN)."""
    if unit > 0 or value != value:
        return value / unit if unit > 0 else value
    return 0.0 if value == 0 else float("inf")


def output_scale(reference: np.ndarray) -> float:
    """The output's scale: max |reference| over every golden input (float64)."""
    return float(np.max(np.abs(reference.astype(np.float64))))


def output_limit(tol: Tolerance, scale: float, reference_error: float | None) -> dict[str, object]:
    """The elementwise limit of one output: its rule, `atol`, and the figures it was derived from.

    `reference_error` is max |float32 reference - float64| of the output, or None without a float64 run.
    """
    if tol.error_factor is not None and reference_error is not None:
        atol = tol.error_factor * reference_error + tol.error_floor * scale
        return {"rule": "reference-error", "atol": atol, "reference_error": reference_error,
                "error_factor": tol.error_factor, "error_floor": tol.error_floor}
    return {"rule": "output-scale", "atol": tol.max_error * scale, "max_error": tol.max_error}


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values)))) if values.size else 0.0


def rms_limit(tol: Tolerance, reference_rms: float, reference_rms_error: float | None) -> dict[str, object]:
    """The typical-error limit of one output under the reference-error rule ({} where it does not apply).

    `reference_rms` is rms(reference); `reference_rms_error` rms|float32 reference - float64|, or None.
    """
    if tol.rms_factor is None or tol.error_factor is None or reference_rms_error is None:
        return {}
    return {"rms_atol": tol.rms_factor * reference_rms_error + tol.error_floor * reference_rms,
            "reference_rms_error": reference_rms_error, "reference_rms": reference_rms, "rms_factor": tol.rms_factor}


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cosine similarity of `a` and `b` (flattened, float64), computed as half the squared distance of the
    two scaled to unit length: exact down to 1e-16 and below, where 1 - (a·b / |a||b|) keeps only rounding.
    NaN when either is all zeros or not finite."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if not (norm_a > 0 and norm_b > 0 and np.isfinite(norm_a) and np.isfinite(norm_b)):
        return float("nan")
    return float(0.5 * np.sum(np.square(a / norm_a - b / norm_b)))


def cosine_limit(tol: Tolerance, reference_cosine_distance: float | None) -> dict[str, object]:
    """The cosine limit of one output: its rule, `cosine_limit` (the smallest cosine that passes) and the
    figures it was derived from.

    `reference_cosine_distance` is 1 - cosine of the float32 reference against its float64 run, or None
    without a float64 run (reported wherever there is one). Rule "reference-error" (the precision has
    `cosine_factor` and `error_factor`, and the reference a float64 run): 1 - cosine_factor x that distance,
    where that is below `min_cosine`; otherwise "min_cosine", the fixed limit.
    """
    if reference_cosine_distance is None:
        return {"cosine_rule": "min_cosine", "cosine_limit": tol.min_cosine}
    if tol.cosine_factor is None or tol.error_factor is None:  # bf16, int8: reported, not used
        return {"cosine_rule": "min_cosine", "cosine_limit": tol.min_cosine,
                "reference_cosine_distance": reference_cosine_distance}
    derived = {"reference_cosine_distance": reference_cosine_distance, "cosine_factor": tol.cosine_factor,
               "min_cosine": tol.min_cosine}
    if 1.0 - tol.cosine_factor * reference_cosine_distance < tol.min_cosine:
        return {"cosine_rule": "reference-error", "cosine_limit": 1.0 - tol.cosine_factor * reference_cosine_distance,
                **derived}
    return {"cosine_rule": "min_cosine", "cosine_limit": tol.min_cosine, **derived}


def compare_output(reference: np.ndarray, actual: np.ndarray, tol: Tolerance,
                   reference_error: float | None = None,
                   reference_rms_error: float | None = None,
                   reference_cosine_distance: float | None = None) -> dict[str, object]:
    """Error statistics of one output against its reference and the verdict of its limit.

    `reference` and `actual` have the same shape (any float dtype). Returns abs/rel error stats, cosine,
    `scale`, the limit (see `output_limit`) and what would have passed: `needs_atol` (max|Δ|),
    `needs_rtol` (max relative error), `needs_max_error` (max|Δ| / scale) and, under the
    reference-error rule, `needs_error_factor`; `rms_error` (rms|Δ|) and `relative_l2` (rms|Δ| /
    rms(reference)), and with `reference_rms_error` (rms|float32 reference - float64|) and the
    precision's `rms_factor` the typical-error limit `rms_atol` and `needs_rms_factor` (`rms_limit`); the cosine
    limit (`cosine_limit`), and with `reference_cosine_distance` (1 - cosine of the float32 reference against
    float64) and the precision's `cosine_factor` the figure `needs_cosine_factor` (0 within min_cosine).
    """
    ref, act = reference.astype(np.float64), actual.astype(np.float64)
    abs_err = np.abs(act - ref)
    rel_err = abs_err / (np.abs(ref) + EPS)
    finite = bool(np.all(np.isfinite(act)))
    scale = output_scale(ref)
    limit = output_limit(tol, scale, reference_error)
    needs_atol = float(np.max(abs_err))  # NaN when any element is NaN: fails every comparison below
    rms_error, reference_rms = _rms(act - ref), _rms(ref)
    typical = rms_limit(tol, reference_rms, reference_rms_error)
    denom = np.linalg.norm(ref) * np.linalg.norm(act)
    cosine = float(np.dot(ref.ravel(), act.ravel()) / denom) if denom > 0 and finite else float("nan")
    cosine_rule = cosine_limit(tol, reference_cosine_distance)
    result = {
        "abs_error": _stats(abs_err), "rel_error": _stats(rel_err), "cosine": cosine, "finite": finite,
        "scale": scale, **limit,
        "needs_atol": needs_atol, "needs_rtol": float(np.max(rel_err)),
        "needs_max_error": _ratio(needs_atol, scale),
        "elements_failing": int(np.count_nonzero(~(abs_err <= limit["atol"]))),
        "passed_elementwise": finite and bool(needs_atol <= limit["atol"]),
        "passed_cosine": finite and cosine >= cosine_rule["cosine_limit"], **cosine_rule,
        "rms_error": rms_error, "relative_l2": _ratio(rms_error, reference_rms), **typical,
    }
    if limit["rule"] == "reference-error":
        excess = max(needs_atol - tol.error_floor * scale, 0.0)
        result["needs_error_factor"] = _ratio(excess, reference_error)
    if typical:
        excess = max(rms_error - tol.error_floor * reference_rms, 0.0)
        result["needs_rms_factor"] = _ratio(excess, typical["reference_rms_error"])
        result["passed_rms"] = finite and bool(rms_error <= typical["rms_atol"])
    if "cosine_factor" in cosine_rule:
        within = cosine >= tol.min_cosine
        result["needs_cosine_factor"] = 0.0 if within else _ratio(1.0 - cosine, reference_cosine_distance)
    return result


def _elementwise_breach(name: str, r: Mapping) -> str:
    if r["rule"] == "reference-error":
        return (f"{name} max|Δ| {r['needs_atol']:.3g} vs float64 > atol {r['atol']:.3g} = error_factor "
                f"{r['error_factor']:g} × the float32 reference's own {r['reference_error']:.3g} + error_floor "
                f"{r['error_floor']:g} × scale {r['scale']:.3g} "
                f"(needs error_factor ≥ {r['needs_error_factor']:.3g})")
    return (f"{name} max|Δ| {r['needs_atol']:.3g} > atol {r['atol']:.3g} = max_error {r['max_error']:g} × scale "
            f"{r['scale']:.3g} (needs max_error ≥ {r['needs_max_error']:.3g})")


def _cosine_breach(name: str, r: Mapping) -> str:
    if r["cosine_rule"] == "reference-error":
        return (f"{name} cosine {r['cosine']:.7f} < min_cosine {r['cosine_limit']:.7f} = 1 - cosine_factor "
                f"{r['cosine_factor']:g} × the float32 reference's own 1 - cosine {r['reference_cosine_distance']:.3g} "
                f"(needs cosine_factor ≥ {r['needs_cosine_factor']:.3g})")
    return (f"{name} cosine {r['cosine']:.6f} < min_cosine {r['cosine_limit']:g} "
            f"(needs min_cosine ≤ {r['cosine']:.6f})")


def _rms_breach(name: str, r: Mapping) -> str:
    return (f"{name} rms|Δ| {r['rms_error']:.3g} vs float64 > {r['rms_atol']:.3g} = rms_factor {r['rms_factor']:g} × "
            f"the float32 reference's own rms {r['reference_rms_error']:.3g} + error_floor {r['error_floor']:g} × "
            f"rms(reference) {r['reference_rms']:.3g} "
            f"(needs rms_factor ≥ {r['needs_rms_factor']:.3g})")


# --------------------------------------------------------------------------------------------- keypoints


def drift_stats(ref_kpts: np.ndarray, act_kpts: np.ndarray, score_change: np.ndarray, tol: Tolerance,
                mask: np.ndarray | None = None) -> dict[str, float | int | None]:
    """Drift (px) between decoded keypoints [N,K,2] and score change [N,K] (x scale), over `mask` [N,K]."""
    drift = np.linalg.norm(act_kpts - ref_kpts, axis=-1)
    if mask is not None:
        drift, score_change = drift[mask], score_change[mask]
    if drift.size == 0:
        return {"count": 0, "mean_drift_px": None, "max_drift_px": None, "agreement": None,
                "max_score_change": None}
    return {"count": int(drift.size), "mean_drift_px": float(np.mean(drift)), "max_drift_px": float(np.max(drift)),
            "agreement": float(np.mean(drift <= tol.agreement_px)), "max_score_change": float(np.max(score_change))}


def keypoint_metrics(reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], tol: Tolerance,
                     min_peak_margin: float, images: int | None = None,
                     split_ratio: float = SIMCC_SPLIT_RATIO) -> dict[str, object]:
    """Drift and score change over the confident keypoints of the first `images` inputs (all when None)
    and over every keypoint of every input.

    Only images are gated: keypoints decoded from a random tensor are not a pose anyone sees (and an
    INT8 model calibrated on images saturates on them); their logits are still checked elementwise.
    Score changes are divided by the larger of the two outputs' scales (`output_scale`).
    """
    ref_kpts, ref_scores = simcc_argmax(reference["simcc_x"], reference["simcc_y"], split_ratio)
    act_kpts, act_scores = simcc_argmax(actual["simcc_x"], actual["simcc_y"], split_ratio)
    scale = max(output_scale(reference[name]) for name in OUTPUT_NAMES)
    score_change = np.abs(act_scores.astype(np.float64) - ref_scores) / (scale if scale > 0 else 1.0)
    gated = confident_keypoints(reference, min_peak_margin)
    if images is not None:
        gated[images:] = False
    return {"min_peak_margin": min_peak_margin, "images": len(gated) if images is None else images,
            "confident": drift_stats(ref_kpts, act_kpts, score_change, tol, gated),
            "all": drift_stats(ref_kpts, act_kpts, score_change, tol)}


def score_change_limit(reference: Mapping[str, np.ndarray], reference_float32: Mapping[str, np.ndarray] | None,
                       tol: Tolerance, min_peak_margin: float, images: int | None,
                       split_ratio: float) -> tuple[float, str]:
    """The largest score change (x scale) a target may show, and the rule that set it.

    `max_score_change` fixed; under the reference-error rule (a float64 run and `error_factor` set) at
    least `error_factor` times the float32 reference's own score change against float64, as for the
    logits: a deep model with logits of several hundred moves its scores by rounding alone.
    """
    if reference_float32 is None or tol.error_factor is None:
        return tol.max_score_change, "max_score_change"
    own = keypoint_metrics(reference, reference_float32, tol, min_peak_margin, images, split_ratio)
    own_change = own["confident"]["max_score_change"] or 0.0
    if tol.error_factor * own_change <= tol.max_score_change:
        return tol.max_score_change, "max_score_change"
    return tol.error_factor * own_change, (f"error_factor {tol.error_factor:g} × the float32 reference's own "
                                           f"{own_change:.3g}")


def _keypoint_breaches(gated: Mapping, tol: Tolerance, score_limit: float, score_rule: str) -> list[str]:
    if not gated["count"]:
        return []
    breaches = []
    if not gated["mean_drift_px"] <= tol.max_mean_drift_px:
        breaches.append(f"keypoints mean drift {gated['mean_drift_px']:.3g}px over {gated['count']} confident > "
                        f"max_mean_drift_px {tol.max_mean_drift_px:g} (needs ≥ {gated['mean_drift_px']:.3g})")
    if not gated["agreement"] >= tol.min_agreement:
        breaches.append(f"keypoints within {tol.agreement_px:g}px {gated['agreement']:.4f} of {gated['count']} "
                        f"confident < min_agreement {tol.min_agreement:g} (needs ≤ {gated['agreement']:.4f})")
    if not gated["max_score_change"] <= score_limit:
        breaches.append(f"keypoints score change {gated['max_score_change']:.3g} × scale > {score_limit:.3g} "
                        f"({score_rule}; needs ≥ {gated['max_score_change']:.3g})")
    return breaches


# --------------------------------------------------------------------------------------------- comparison


def compare(reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], tol: Tolerance,
            min_peak_margin: float, reference_float32: Mapping[str, np.ndarray] | None = None,
            images: int | None = None, split_ratio: float = SIMCC_SPLIT_RATIO) -> dict[str, object]:
    """Every metric and the list of breaches, for outputs keyed by name.

    `reference`: the outputs to compare with (a float64 run where there is one). `reference_float32`:
    the float32 reference when `reference` is its float64 run; it enables the reference-error rule.
    `images`: how many leading inputs are images, whose confident keypoints are gated (all when None).
    Missing or extra outputs and shape mismatches are breaches, with both sides printed.
    """
    breaches: list[str] = []
    outputs: dict[str, object] = {}
    if set(reference) != set(actual):
        breaches.append(f"outputs differ: reference {sorted(reference)}, artifact {sorted(actual)}")
    for name in sorted(set(reference) & set(actual)):
        if reference[name].shape != actual[name].shape:
            breaches.append(f"{name} shape {list(actual[name].shape)} != reference {list(reference[name].shape)}")
            continue
        reference_error = reference_rms_error = reference_cosine_distance = None
        if reference_float32 is not None:
            own = np.abs(reference_float32[name].astype(np.float64) - reference[name])
            reference_error, reference_rms_error = float(np.max(own)), _rms(own)
            reference_cosine_distance = cosine_distance(reference_float32[name], reference[name])
        result = compare_output(reference[name], actual[name], tol, reference_error, reference_rms_error,
                                reference_cosine_distance)
        outputs[name] = result
        if not result["finite"]:
            breaches.append(f"{name} has NaN or Inf")
        if not result["passed_elementwise"] and result["finite"]:
            breaches.append(_elementwise_breach(name, result))
        if not result.get("passed_rms", True) and result["finite"]:
            breaches.append(_rms_breach(name, result))
        if result["finite"] and not result["passed_cosine"]:
            breaches.append(_cosine_breach(name, result))
    rules = sorted({r["rule"] for r in outputs.values()})
    metrics: dict[str, object] = {"rule": rules[0] if len(rules) == 1 else rules, "outputs": outputs}
    if all(name in outputs for name in OUTPUT_NAMES):
        metrics["keypoints"] = keypoint_metrics(reference, actual, tol, min_peak_margin, images, split_ratio)
        limit, rule = score_change_limit(reference, reference_float32, tol, min_peak_margin, images, split_ratio)
        metrics["keypoints"].update(score_change_limit=limit, score_change_rule=rule)
        breaches += _keypoint_breaches(metrics["keypoints"]["confident"], tol, limit, rule)
    metrics["breaches"] = breaches
    metrics["passed"] = not breaches
    return metrics


# --------------------------------------------------------------------------------------------- preprocessing


def onnx_metadata_normalization(metadata: Mapping[str, str]) -> PreprocessSpec | None:
    """The preprocessing an ONNX records in `metadata_props` (`mean`, `std`, `channel_order`; older
    exports: `mean_rgb`, `std_rgb`, RGB input), or None."""
    keys = ("mean", "std") if "mean" in metadata else ("mean_rgb", "std_rgb")
    if keys[0] not in metadata or keys[1] not in metadata:
        return None
    try:
        return PreprocessSpec(tuple(json.loads(metadata[keys[0]])), tuple(json.loads(metadata[keys[1]])),
                              metadata.get("channel_order", "RGB") == "RGB")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"ONNX metadata {'/'.join(keys)} are unreadable ({exc}); re-export the model") from None


def recorded_normalizations(artifact_dir: Path) -> dict[str, PreprocessSpec]:
    """The preprocessing an artifact directory records, by where: `pipeline.json` (MMDeploy SDK) and
    `ONNX metadata` (the model file's own for an ONNX artifact, else the source's in artifact.json)."""
    artifact_dir = Path(artifact_dir)
    recorded: dict[str, PreprocessSpec] = {}
    sdk = artifact_dir / PIPELINE_JSON
    if sdk.is_file():
        found = sdk_normalization(json.loads(sdk.read_text(encoding="utf-8")))
        if found:
            recorded[PIPELINE_JSON] = found
    metadata: Mapping[str, str] = {}
    if (artifact_dir / "model.onnx").is_file():
        metadata = get_metadata(load_onnx(artifact_dir / "model.onnx"))  # a damaged file: InputError naming it
    elif (artifact_dir / ARTIFACT_META).is_file():
        metadata = json.loads((artifact_dir / ARTIFACT_META).read_text(encoding="utf-8")).get("onnx_metadata", {})
    found = onnx_metadata_normalization(metadata)
    if found:
        recorded["ONNX metadata"] = found
    return recorded


def verify_artifact(run: Callable[[np.ndarray], Mapping[str, np.ndarray]], golden: Golden, tol: Tolerance,
                    min_peak_margin: float, recorded: Mapping[str, PreprocessSpec]) -> dict[str, object]:
    """Run the artifact (`run`: inputs [N,3,H,W] -> outputs by name) on the golden set once per distinct
    recorded preprocessing and compare each run with the reference (`compare`).

    The first run's figures are the metrics' `outputs`/`keypoints`; further runs (records that disagree)
    go to `other_runs`. Breaches of a run whose preprocessing differs from the reference's say so.
    """
    groups: dict[tuple, list[str]] = {}  # keyed by (mean, std, bgr_to_rgb): what reaches the network
    specs: dict[tuple, PreprocessSpec] = {}
    for source, normalization in recorded.items():
        groups.setdefault(normalization.normalization, []).append(source)
        specs[normalization.normalization] = normalization
    if not groups:
        groups[golden.normalization.normalization] = ["none recorded: the reference's"]
        specs[golden.normalization.normalization] = golden.normalization
    reference_float32 = golden.float32 if golden.float64 is not None else None
    metrics: dict[str, object] = {}
    runs = []
    breaches: list[str] = []
    for key, sources in groups.items():
        normalization = specs[key]
        result = compare(golden.reference, run(golden.inputs_for(normalization)), tol, min_peak_margin,
                         reference_float32, images=len(golden.crops), split_ratio=golden.split_ratio)
        same = key == golden.normalization.normalization
        if not same:
            note = (f"[images preprocessed as {' and '.join(sources)} records: {normalization.describe()}; "
                    f"the reference model expects {golden.normalization.describe()}] ")
            result["breaches"] = [note + b for b in result["breaches"]]
        breaches += result["breaches"]
        runs.append({"sources": sources, "normalization": normalization.normalization_dict(),
                     "same_as_reference": same, **result})
    first = runs[0]
    metrics.update({key: first[key] for key in ("rule", "outputs", "keypoints") if key in first})
    metrics["preprocessing"] = {"reference": golden.normalization.normalization_dict(),
                                "recorded": {s: n.normalization_dict() for s, n in recorded.items()},
                                "runs": [{k: r[k] for k in ("sources", "normalization", "same_as_reference")}
                                         for r in runs]}
    if len(runs) > 1:
        metrics["other_runs"] = runs[1:]
    metrics["breaches"] = breaches
    metrics["passed"] = not breaches
    return metrics


# --------------------------------------------------------------------------------------------- precision


def check_execution_precision(precision: str, executed: Mapping[str, int]) -> list[str]:
    """A target computes in the precision its name says: none lower (bf16 in openvino-fp32), and some
    of its own (an fp16 or int8 conversion that silently did nothing is a failure too)."""
    lower = {p: n for p, n in executed.items() if p in LOWER_PRECISIONS.get(precision, ()) and n > 0}
    breaches = [f"executes {n} operations in {p}, below the target precision {precision}" for p, n in lower.items()]
    if precision != "fp32" and executed.get(precision, 0) == 0:
        breaches.append(f"executes nothing in {precision} (measured: {dict(executed)}); the conversion did not apply")
    return breaches


# --------------------------------------------------------------------------------------------- reporting


def summary_lines(job: str, metrics: Mapping[str, object]) -> list[str]:
    """Lines for humans: one per output, one for the confident keypoints, one per breach."""
    lines = []
    for name, r in metrics.get("outputs", {}).items():  # type: ignore[union-attr]
        passed_rms = r.get("passed_rms", True)
        status = "PASSED" if r["passed_elementwise"] and passed_rms and r["passed_cosine"] else "FAILED"
        derived = (f"{r['error_factor']:g} × float32's own {r['reference_error']:.2g} + {r['error_floor']:g} × scale"
                   if r["rule"] == "reference-error" else f"{r['max_error']:g} × scale")
        typical = (f" rms|Δ| {r['rms_error']:.2g} {'≤' if passed_rms else '>'} {r['rms_atol']:.2g} "
                   f"({r['rms_factor']:g} × float32's own rms {r['reference_rms_error']:.2g})" if "rms_atol" in r else "")
        own_cosine = (f" ({r['cosine_factor']:g} × float32's own 1 - cosine {r['reference_cosine_distance']:.2g})"
                      if r.get("cosine_rule") == "reference-error" else "")
        lines.append(f"{status} {job} {name} max|Δ| {r['needs_atol']:.2g} {'≤' if r['passed_elementwise'] else '>'} "
                     f"atol {r['atol']:.2g} ({r['rule']}: {derived} {r['scale']:.3g}){typical} "
                     f"cosine {r['cosine']:.7f} {'≥' if r['passed_cosine'] else '<'} "
                     f"{r['cosine_limit']:.7g}{own_cosine}")
    keypoints = metrics.get("keypoints")
    if isinstance(keypoints, dict):
        kp = keypoints["confident"]
        if kp["count"]:
            status = "PASSED" if not any(b.startswith("keypoints") for b in metrics.get("breaches", [])) else "FAILED"
            lines.append(f"{status} {job} {kp['count']} confident keypoints mean drift {kp['mean_drift_px']:.3g}px "
                         f"max {kp['max_drift_px']:.3g}px agreement {kp['agreement']:.4f} "
                         f"score change ≤ {kp['max_score_change']:.2g} × scale")
        else:
            lines.append(f"NOTE {job} no keypoint of the {keypoints['images']} images has a peak margin ≥ "
                         f"{keypoints['min_peak_margin']:g}; drift not gated")
    for breach in metrics.get("breaches", []):  # type: ignore[union-attr]
        lines.append(f"FAILED {job} {breach}")
    return lines
