"""SimCC decoding as mmpose does it (`mmpose/codecs/utils/post_processing.py`, get_simcc_maximum).

Location = argmax per axis / split ratio; score = the smaller of the two maxima (rtmlib uses their
mean); `decode_simcc` marks locations with score <= 0 as -1 like mmpose.
"""

from __future__ import annotations

import numpy as np

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
    from pipeline.preprocess import to_image_coords

    keypoints, scores = decode_simcc(outputs["simcc_x"], outputs["simcc_y"], split_ratio)
    image_points = np.stack([to_image_coords(k.astype(np.float64), m) for k, m in zip(keypoints, matrices)])
    return image_points, scores
