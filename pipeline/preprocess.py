"""mmpose's top-down preprocessing: person box -> padded, aspect-fixed affine crop -> normalised tensor.

Upstream: mmpose `mmpose/structures/bbox/transforms.py` (bbox_xyxy2cs, get_warp_matrix) and
`mmpose/datasets/transforms/topdown_transforms.py` (TopdownAffine, no rotation at inference).
For rotation 0 the warp is a uniform scale plus a shift, which we write out directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.variants import MEAN_RGB, STD_RGB

BBOX_PADDING = 1.25


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


def crop(image_rgb: np.ndarray, box_xyxy, input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Affine crop (bilinear, zero border) and the matrix that made it."""
    center, scale = box_to_center_scale(box_xyxy, input_hw)
    matrix = warp_matrix(center, scale, input_hw)
    out = cv2.warpAffine(image_rgb, matrix, (input_hw[1], input_hw[0]), flags=cv2.INTER_LINEAR)
    return out, matrix


@dataclass(frozen=True)
class Normalization:
    """How an RGB crop becomes the network input: channels reordered to `channels` ("RGB" or "BGR":
    what the network's channels 0, 1, 2 hold), then (x - mean) / std per network channel, in float32.

    mmpose's data preprocessor is `Normalization(MEAN_RGB, STD_RGB, "RGB")`. MMDeploy's SDK decodes
    images as BGR and its `Normalize` transform converts to RGB only when `to_rgb` is true, applying
    mean/std in the resulting order (`csrc/mmdeploy/preprocess/transform/normalize.cpp`).
    """

    mean: tuple[float, float, float] = MEAN_RGB
    std: tuple[float, float, float] = STD_RGB
    channels: str = "RGB"

    def __post_init__(self) -> None:
        if self.channels not in ("RGB", "BGR") or len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"Normalization needs 3 means, 3 stds and channels RGB or BGR, got {self}")

    def apply(self, crops_rgb: np.ndarray) -> np.ndarray:
        """[N,H,W,3] (or [H,W,3]) uint8 RGB -> [N,3,H,W] (or [3,H,W]) float32 network input."""
        x = crops_rgb[..., ::-1] if self.channels == "BGR" else crops_rgb
        x = (x.astype(np.float32) - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)
        return np.ascontiguousarray(np.moveaxis(x, -1, -3))

    def describe(self) -> str:
        return (f"{self.channels} mean [{', '.join(f'{v:g}' for v in self.mean)}] "
                f"std [{', '.join(f'{v:g}' for v in self.std)}]")

    def as_dict(self) -> dict[str, object]:
        return {"channels": self.channels, "mean": list(self.mean), "std": list(self.std)}


def normalize(crop_rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> 3xHxW float32, (x - mean) / std as mmpose's data preprocessor."""
    return Normalization().apply(crop_rgb)


def to_image_coords(keypoints: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map crop-pixel keypoints [..., 2] back into the original image."""
    inverse = cv2.invertAffineTransform(matrix)
    return keypoints @ inverse[:, :2].T + inverse[:, 2]


def load_rgb(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
