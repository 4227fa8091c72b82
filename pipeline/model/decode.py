"""SimCC decoding as mmpose does it (`mmpose/codecs/utils/post_processing.py`, get_simcc_maximum).

Location = argmax per axis / split ratio; score = the smaller of the two maxima (rtmlib uses their
mean); `decode_simcc` marks locations with score <= 0 as -1 like mmpose.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pipeline.core.errors import InputError
from pipeline.core.onnx_io import OUTPUT_NAMES
from pipeline.model.preprocess import to_image_coords
from pipeline.model.spec import ModelSpec

SIMCC_SPLIT_RATIO = 2.0  # every released RTMPose-family codec; descriptions carry their own


def simcc_argmax(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = SIMCC_SPLIT_RATIO):
    """[N,K,Wx], [N,K,Wy] logits -> keypoints [N,K,2] in crop pixels, scores [N,K] (nothing masked)."""
    keypoints = np.stack([np.argmax(simcc_x, axis=-1), np.argmax(simcc_y, axis=-1)], axis=-1)
    scores = np.minimum(np.max(simcc_x, axis=-1), np.max(simcc_y, axis=-1))
    return keypoints.astype(np.float32) / split_ratio, scores.astype(np.float32)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = SIMCC_SPLIT_RATIO):
    """mmpose's decode: like `simcc_argmax`, with keypoints of score <= 0 set to -1."""
    keypoints, scores = simcc_argmax(simcc_x, simcc_y, split_ratio)
    keypoints[scores <= 0] = -1
    return keypoints, scores


def decode_to_image(outputs, matrices, split_ratio: float = SIMCC_SPLIT_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """SimCC logits of crops -> keypoints [N,K,2] in original-image pixels (via each crop's 2x3
    image->crop matrix) and scores [N,K], with mmpose's decode."""

    keypoints, scores = decode_simcc(outputs["simcc_x"], outputs["simcc_y"], split_ratio)
    image_points = np.stack([to_image_coords(k.astype(np.float64), m) for k, m in zip(keypoints, matrices)])
    return image_points, scores


def peak_margin(simcc: np.ndarray) -> np.ndarray:
    """[..., bins] SimCC logits -> [...] peak margin in [0, 1], the confidence of each row's argmax.

    The peak's lobe is the run of bins around the argmax that stay above half the peak's height over
    the row's median (its full width at half maximum); the margin is (peak - highest bin outside the
    lobe) / (peak - median). It does not change when the logits are scaled or shifted, so it means
    the same on any model. A row with one peak has margin >= 0.5 (every bin outside its lobe is below
    half height; 1 where nothing outside rises above the median); a second location rising above half
    height brings it below 0.5, in proportion (a rival at 80% of the peak's height: 0.2), a tie to 0;
    a noisy row (an unsure model, a random input) sits near 0. Under an elementwise change δ the
    argmax can leave the lobe only where margin x (peak - median) < 2δ.
    """
    rows = np.asarray(simcc, np.float64).reshape(-1, simcc.shape[-1])
    bins = np.arange(rows.shape[1])
    peak_at = np.argmax(rows, axis=1)[:, None]
    peak = np.take_along_axis(rows, peak_at, axis=1)
    median = np.median(rows, axis=1, keepdims=True)
    below = rows < (peak + median) / 2
    left = np.max(np.where(below & (bins < peak_at), bins, -1), axis=1, keepdims=True)
    right = np.min(np.where(below & (bins > peak_at), bins, rows.shape[1]), axis=1, keepdims=True)
    outside = (bins <= left) | (bins >= right)
    rival = np.max(np.where(outside, rows, -np.inf), axis=1, keepdims=True)
    spread = peak - median
    with np.errstate(invalid="ignore", divide="ignore"):
        margin = np.where(spread > 0, (peak - np.maximum(rival, median)) / spread, 0.0)
    return np.nan_to_num(margin[:, 0], nan=0.0).reshape(simcc.shape[:-1])


def confident_keypoints(reference: Mapping[str, np.ndarray], min_peak_margin: float) -> np.ndarray:
    """[N,K] bool: both SimCC rows of the reference have a peak margin of at least `min_peak_margin`."""
    return np.minimum(peak_margin(reference["simcc_x"]), peak_margin(reference["simcc_y"])) >= min_peak_margin


def check_outputs(outputs: Mapping[str, np.ndarray], spec: ModelSpec, source: str) -> None:
    """Both SimCC outputs, with the description's keypoint count and bin counts."""
    missing = [name for name in OUTPUT_NAMES if name not in outputs]
    if missing:
        raise InputError(f"{source} has outputs {sorted(outputs)}, not {list(OUTPUT_NAMES)}; "
                         "it is not an RTMPose artifact from this pipeline")
    for name, shape in spec.simcc_shapes.items():
        if tuple(outputs[name].shape[1:]) != shape:
            raise InputError(f"{source}: output {name!r} has shape {list(outputs[name].shape)}, but {spec.name} "
                             f"gives [N, {shape[0]}, {shape[1]}]; pass the artifact's --model")
