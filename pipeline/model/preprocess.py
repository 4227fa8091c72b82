"""mmpose's top-down preprocessing: person box -> padded, aspect-fixed affine crop -> normalised tensor.

Upstream: mmpose `mmpose/structures/bbox/transforms.py` (bbox_xyxy2cs, get_warp_matrix) and
`mmpose/datasets/transforms/topdown_transforms.py` (TopdownAffine, no rotation at inference).
For rotation 0 the warp is a uniform scale plus a shift, which we write out directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from pipeline.model.spec import ModelSpec, PreprocessSpec

BBOX_PADDING = 1.25  # mmpose's GetBBoxCenterScale default padding


def box_to_center_scale(box_xyxy, input_hw: tuple[int, int], padding: float = BBOX_PADDING):
    """Centre and (w, h) of the padded box, widened or heightened to the input aspect W/H."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    center = np.array([(x1 + x2) * 0.5, (y1 + y2) * 0.5])
    w, h = (x2 - x1) * padding, (y2 - y1) * padding
    aspect = input_hw[1] / input_hw[0]
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([w, h])


def warp_matrix(center, scale, input_hw: tuple[int, int]) -> np.ndarray:
    """2x3 affine mapping image pixels to crop pixels."""
    out_h, out_w = input_hw
    s = out_w / scale[0]
    return np.array([[s, 0.0, out_w * 0.5 - s * center[0]],
                     [0.0, s, out_h * 0.5 - s * center[1]]], dtype=np.float64)


def crop(image_rgb: np.ndarray, box_xyxy, input_hw: tuple[int, int],
         padding: float = BBOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Affine crop (bilinear, zero border) and the matrix that made it."""
    center, scale = box_to_center_scale(box_xyxy, input_hw, padding)
    matrix = warp_matrix(center, scale, input_hw)
    out = cv2.warpAffine(image_rgb, matrix, (input_hw[1], input_hw[0]), flags=cv2.INTER_LINEAR)
    return out, matrix


def normalize(crops_rgb: np.ndarray, pre: PreprocessSpec = PreprocessSpec()) -> np.ndarray:
    """[...,H,W,3] uint8 RGB crops -> [...,3,H,W] float32 network input, as mmpose's PoseDataPreprocessor:
    channels in the network's order (`bgr_to_rgb=False` networks take BGR), then (x - mean) / std with
    mean/std given in that order. MMDeploy's SDK does the same from its BGR decode: `Normalize` with
    `to_rgb` (`csrc/mmdeploy/preprocess/transform/normalize.cpp`)."""
    pixels = crops_rgb if pre.bgr_to_rgb else crops_rgb[..., ::-1]
    x = (pixels.astype(np.float32) - np.array(pre.mean, np.float32)) / np.array(pre.std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def to_image_coords(keypoints: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map crop-pixel keypoints [..., 2] back into the original image."""
    inverse = cv2.invertAffineTransform(matrix)
    return keypoints @ inverse[:, :2].T + inverse[:, 2]


def load_rgb(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def preprocess_boxes(image_rgb: np.ndarray, boxes_xyxy: Sequence, spec: ModelSpec):
    """[N,3,H,W] float32 crops (mmpose's TopdownAffine + normalisation as `spec` says) and their
    [N,2,3] image->crop warp matrices."""
    crops, matrices = [], []
    pre = spec.preprocess
    for box in boxes_xyxy:
        crop_rgb, matrix = crop(image_rgb, box, spec.input_hw, pre.bbox_padding)
        crops.append(normalize(crop_rgb, pre))
        matrices.append(matrix)
    return np.stack(crops), np.stack(matrices)
