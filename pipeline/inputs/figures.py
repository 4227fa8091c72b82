"""Procedural human-like figures with COCO-17 keypoints: the data the demo checkpoint learns from.

A figure is a 2-D kinematic skeleton (torso, head, two-segment arms and legs) with random
proportions, lean, yaw and joint angles, drawn with OpenCV as thick limbs, joint blobs, a head
with eyes, nose and ears, over a textured, cluttered background, then blurred and noised.
The person's left side is drawn on the image's right (the figure faces the camera).

The look is a colour-coded mannequin, designed for a 15-minute CPU training budget: saturated
limbs whose hue family says the side (left warm, right cool) and the segment, one hue per joint
type, over a desaturated background. With random colours everywhere rtmpose-t from scratch
never left the "average pose" plateau (30 px) within 20,000 images; figure/ground and side cues
let it learn localisation in that budget. Hues are jittered, so colour is a cue, not a lookup.

Every sample is a pure function of `(seed, index)` through `numpy.random.default_rng([seed, index])`,
so sample i is the same whatever the batch, order or process.

Two renderings:
- `render_crop`: the top-down crop the model sees, the figure's box padded by 1.25 (mmpose's
  `GetBBoxCenterScale` padding) and fitted to the input aspect ratio, with scale/shift jitter.
- `write_coco`: whole scenes larger than the crop, one figure each, written as a COCO keypoint
  data set (`images/*.png`, `annotations.json`) for calibration and AP evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_path
from pipeline.model.keypoints import COCO17, COCO17_SKELETON

BBOX_PADDING = 1.25  # mmpose top-down default
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel drawing, so labels and pixels agree
_ONE = 1 << _SHIFT

# COCO17 indices
NOSE, L_EYE, R_EYE, L_EAR, R_EAR = 0, 1, 2, 3, 4
L_SHO, R_SHO, L_ELB, R_ELB, L_WRI, R_WRI = 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KNE, R_KNE, L_ANK, R_ANK = 11, 12, 13, 14, 15, 16
# Face features on the head sphere: (azimuth from the front in rad, offset up in head radii).
_FACE = {NOSE: (0.0, -0.15), L_EYE: (0.45, 0.25), R_EYE: (-0.45, 0.25), L_EAR: (1.45, 0.05), R_EAR: (-1.45, 0.05)}


@dataclass(frozen=True)
class Figure:
    """One posed figure in body units (standing height about 1, y down)."""

    keypoints: np.ndarray  # [17, 2]
    visible: np.ndarray  # [17] COCO v: 2 visible, 1 hidden by the figure itself
    head_center: np.ndarray  # [2]
    head_radius: float
    limb_width: float
    colors: dict[str, tuple[int, int, int]]  # RGB per body part

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """Top-left and bottom-right of everything drawn (limbs, hands, head)."""
        margin = self.limb_width
        lo = np.minimum(self.keypoints.min(0) - margin, self.head_center - self.head_radius)
        hi = np.maximum(self.keypoints.max(0) + margin, self.head_center + self.head_radius)
        return lo, hi


# Hue in degrees per body part and per joint type (left = the person's left, drawn on the image's right).
PART_HUES = {"l_upper": 20, "l_lower": 45, "r_upper": 210, "r_lower": 185, "torso": 120}
JOINT_HUES = {"sho": 300, "elb": 60, "wri": 0, "hip": 270, "kne": 160, "ank": 90}
HUE_JITTER = 12.0  # degrees
SKIN_HUE = 28
FACE_RGB = (20, 20, 20)
BACKGROUND_SATURATION = 0.25  # the background keeps this share of its colour: the figure stands out


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _hued(rng: np.random.Generator, hue: float, saturation=(0.6, 1.0), value=(0.6, 1.0)) -> tuple[int, int, int]:
    """An RGB colour near `hue` with random saturation and brightness."""
    h = ((hue + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 360) / 2  # OpenCV's hue range is 0-180
    hsv = np.array([[[h, rng.uniform(*saturation) * 255, rng.uniform(*value) * 255]]], np.float32).round()
    return tuple(int(c) for c in cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0])


def _figure_colors(rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    colors = {part: _hued(rng, hue) for part, hue in PART_HUES.items()}
    colors.update({f"j_{joint}": _hued(rng, hue, (0.8, 1.0), (0.8, 1.0)) for joint, hue in JOINT_HUES.items()})
    colors["skin"] = _hued(rng, SKIN_HUE, (0.3, 0.6), (0.7, 1.0))
    colors["face"] = FACE_RGB
    return colors


def _limb(start: np.ndarray, down: np.ndarray, out: np.ndarray, angle: float, length: float) -> np.ndarray:
    """End of a segment leaving `start` at `angle` from `down`, rotating towards `out`."""
    return start + length * (np.cos(angle) * down + np.sin(angle) * out)


def sample_figure(rng: np.random.Generator) -> Figure:
    """Random proportions, lean, yaw and joint angles of a figure facing the camera."""
    prop = np.clip(1.0 + rng.normal(0.0, 0.07, 8), 0.8, 1.2)
    lean = rng.normal(0.0, 0.2) if rng.random() > 0.1 else rng.uniform(-1.0, 1.0)
    yaw = rng.uniform(-1.0, 1.0)
    up = np.array([np.sin(lean), -np.cos(lean)])
    right = np.array([np.cos(lean), np.sin(lean)])  # image right = the person's left
    width = max(np.cos(yaw), 0.45)

    kp = np.zeros((17, 2))
    shoulder_c = up * 0.30 * prop[0]
    for side, sho, hip in ((1.0, L_SHO, L_HIP), (-1.0, R_SHO, R_HIP)):
        kp[sho] = shoulder_c + side * right * 0.115 * prop[1] * width
        kp[hip] = side * right * 0.075 * prop[2] * width

    head_tilt = lean + rng.normal(0.0, 0.2)
    head_up = np.array([np.sin(head_tilt), -np.cos(head_tilt)])
    head_right = np.array([np.cos(head_tilt), np.sin(head_tilt)])
    head_radius = 0.062 * prop[3]
    head_center = shoulder_c + head_up * (0.13 * prop[3])
    visible = np.full(17, 2, dtype=np.int64)
    for idx, (azimuth, lift) in _FACE.items():
        kp[idx] = head_center + head_right * head_radius * np.sin(azimuth + yaw) + head_up * head_radius * lift
        if np.cos(azimuth + yaw) < -0.05:
            visible[idx] = 1  # behind the head: labelled, not drawn

    down = -up
    for side, sho, elb, wri in ((1.0, L_SHO, L_ELB, L_WRI), (-1.0, R_SHO, R_ELB, R_WRI)):
        out = side * right
        raise_angle = rng.uniform(-0.5, 2.8)
        fore = rng.uniform(0.55, 1.0, 2) if rng.random() < 0.3 else np.ones(2)
        kp[elb] = _limb(kp[sho], down, out, raise_angle, 0.17 * prop[4] * fore[0])
        bend = raise_angle + rng.uniform(-2.4, 0.9)
        kp[wri] = _limb(kp[elb], down, out, bend, 0.15 * prop[4] * fore[1])
    for side, hip, kne, ank in ((1.0, L_HIP, L_KNE, L_ANK), (-1.0, R_HIP, R_KNE, R_ANK)):
        out = side * right
        spread = rng.uniform(-0.3, 0.8) if rng.random() > 0.15 else rng.uniform(-0.4, 1.8)
        fore = rng.uniform(0.5, 1.0, 2) if rng.random() < 0.25 else np.ones(2)
        kp[kne] = _limb(kp[hip], down, out, spread, 0.24 * prop[5] * fore[0])
        bend = spread + rng.uniform(-1.3, 0.9)
        kp[ank] = _limb(kp[kne], down, out, bend, 0.23 * prop[6] * fore[1])

    limb_width = float(rng.uniform(0.03, 0.06) * prop[7])
    return Figure(kp, visible, head_center, float(head_radius), limb_width, _figure_colors(rng))


def transform(figure: Figure, scale: float, offset: np.ndarray) -> Figure:
    """Map body units to pixels: p * scale + offset."""
    return Figure(figure.keypoints * scale + offset, figure.visible, figure.head_center * scale + offset,
                  figure.head_radius * scale, figure.limb_width * scale, figure.colors)


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0] * _ONE)), int(round(p[1] * _ONE))


def _line(img: np.ndarray, a: np.ndarray, b: np.ndarray, color, width: float) -> None:
    cv2.line(img, _pt(a), _pt(b), color, max(int(round(width)), 1), cv2.LINE_AA, _SHIFT)


def _disc(img: np.ndarray, center: np.ndarray, radius: float, color) -> None:
    cv2.circle(img, _pt(center), max(int(round(radius * _ONE)), _ONE // 2), color, -1, cv2.LINE_AA, _SHIFT)


def draw_figure(img: np.ndarray, fig: Figure, color: tuple[int, ...] | None = None) -> None:
    """Draw a figure in pixel units onto `img` in place; `color` paints every part one colour (masks)."""
    c = {part: color or value for part, value in fig.colors.items()}
    kp, w = fig.keypoints, fig.limb_width
    for a, b, part in ((L_HIP, L_KNE, "l_upper"), (L_KNE, L_ANK, "l_lower"),
                       (R_HIP, R_KNE, "r_upper"), (R_KNE, R_ANK, "r_lower")):
        _line(img, kp[a], kp[b], c[part], w * 1.15)
    torso = np.stack([kp[L_SHO], kp[R_SHO], kp[R_HIP], kp[L_HIP]])
    cv2.fillConvexPoly(img, np.round(torso * _ONE).astype(np.int32), c["torso"], cv2.LINE_AA, _SHIFT)
    _line(img, (kp[L_SHO] + kp[R_SHO]) / 2, fig.head_center, c["skin"], w * 0.8)
    for sho, elb, wri, side in ((L_SHO, L_ELB, L_WRI, "l"), (R_SHO, R_ELB, R_WRI, "r")):
        _line(img, kp[sho], kp[elb], c[f"{side}_upper"], w)
        _line(img, kp[elb], kp[wri], c[f"{side}_lower"], w * 0.85)
    for joint, pair, radius in (("sho", (L_SHO, R_SHO), 0.55), ("elb", (L_ELB, R_ELB), 0.55),
                                ("hip", (L_HIP, R_HIP), 0.55), ("kne", (L_KNE, R_KNE), 0.55),
                                ("wri", (L_WRI, R_WRI), 0.7), ("ank", (L_ANK, R_ANK), 0.7)):
        for idx in pair:
            _disc(img, kp[idx], w * radius, c[f"j_{joint}"])
    _disc(img, fig.head_center, fig.head_radius, c["skin"])
    for idx in (NOSE, L_EYE, R_EYE, L_EAR, R_EAR):
        if fig.visible[idx] == 2:
            radius = fig.head_radius * (0.22 if idx in (L_EAR, R_EAR) else 0.14)
            _disc(img, kp[idx], radius, c["face"] if idx != NOSE else c["j_wri"])


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-frequency colour field plus finer texture and random clutter shapes, mostly desaturated."""
    coarse = rng.random((int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3), dtype=np.float32)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) * 255.0
    fine = rng.random((max(h // int(rng.integers(4, 17)), 2), max(w // 8, 2), 3), dtype=np.float32) - 0.5
    img += cv2.resize(fine, (w, h), interpolation=cv2.INTER_LINEAR) * rng.uniform(0.0, 90.0)
    img = np.clip(img, 0, 255).astype(np.uint8)
    size = min(h, w)
    for _ in range(int(rng.integers(0, 6))):
        kind, color = rng.integers(0, 5), _color(rng)
        p, q = rng.uniform(0, 1, 2) * (w, h), rng.uniform(0, 1, 2) * (w, h)
        if kind == 0 and rng.random() < 0.5:  # stick with a joint blob: a limb-like distractor
            q = p + rng.normal(0, 0.2 * size, 2)
            _line(img, p, q, color, rng.uniform(0.02, 0.06) * size)
            _disc(img, q, rng.uniform(0.01, 0.03) * size, _color(rng))
        elif kind <= 2:
            cv2.rectangle(img, _pt(p), _pt(q), color, -1, cv2.LINE_AA, _SHIFT)
        elif kind == 3:
            _disc(img, p, rng.uniform(0.02, 0.15) * size, color)
        else:
            _line(img, p, q, color, rng.uniform(1, 4))
    gray = img.astype(np.float32).mean(-1, keepdims=True)
    return np.clip(gray + (img - gray) * BACKGROUND_SATURATION, 0, 255).astype(np.uint8)


def _occlude(rng: np.random.Generator, img: np.ndarray, fig: Figure, visible: np.ndarray) -> None:
    """Sometimes paste a box over part of the figure; keypoints under it become v=1."""
    if rng.random() > 0.15:
        return
    lo, hi = fig.extent()
    size = (hi - lo) * rng.uniform(0.1, 0.3, 2)
    corner = lo + rng.uniform(0, 1, 2) * (hi - lo - size)
    cv2.rectangle(img, _pt(corner), _pt(corner + size), _color(rng), -1, cv2.LINE_AA, _SHIFT)
    under = np.all((fig.keypoints >= corner) & (fig.keypoints <= corner + size), axis=1)
    visible[under & (visible > 0)] = 1


def _degrade(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Contrast/brightness jitter, optional blur, sensor noise."""
    out = img.astype(np.float32) * rng.uniform(0.7, 1.2) + rng.uniform(-30, 30)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    out += rng.standard_normal(out.shape, dtype=np.float32) * rng.uniform(0.0, 6.0)
    return np.clip(out, 0, 255).astype(np.uint8)


def _visibility_in(fig: Figure, h: int, w: int, visible: np.ndarray) -> np.ndarray:
    """Keypoints outside the image are unlabelled (v=0), as in COCO."""
    kp = fig.keypoints
    inside = (kp[:, 0] >= 0) & (kp[:, 0] <= w - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= h - 1)
    return np.where(inside, visible, 0)


def _compose(rng: np.random.Generator, fig: Figure, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    img = _background(rng, h, w)
    draw_figure(img, fig)
    visible = fig.visible.copy()
    _occlude(rng, img, fig, visible)
    return _degrade(rng, img), _visibility_in(fig, h, w, visible)


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # [H, W, 3] uint8 RGB
    keypoints: np.ndarray  # [17, 2] float32 pixels, pixel centres at integers
    visible: np.ndarray  # [17] uint8 COCO v (0 outside the image, 1 hidden, 2 visible)


def sample_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def render_crop(seed: int, index: int, input_hw: tuple[int, int]) -> Sample:
    """The top-down crop: figure box fitted to the aspect, padded 1.25, jittered in scale and shift."""
    rng = sample_rng(seed, index)
    fig = sample_figure(rng)
    h, w = input_hw
    lo, hi = fig.extent()
    center, size = (lo + hi) / 2, hi - lo
    box_w = max(size[0], size[1] * w / h) * BBOX_PADDING * rng.uniform(0.8, 1.25)
    center = center + rng.uniform(-0.08, 0.08, 2) * size
    scale = w / box_w
    fig = transform(fig, scale, np.array([(w - 1) / 2, (h - 1) / 2]) - center * scale)
    img, visible = _compose(rng, fig, h, w)
    return Sample(img, fig.keypoints.astype(np.float32), visible.astype(np.uint8))


def render_batch(seed: int, start: int, count: int, input_hw: tuple[int, int]) -> list[Sample]:
    return [render_crop(seed, start + i, input_hw) for i in range(count)]


def render_scene(seed: int, index: int, image_hw: tuple[int, int]) -> tuple[Sample, np.ndarray, int]:
    """A whole scene with one figure; returns the sample, its bbox [x, y, w, h] and its mask area."""
    rng = sample_rng(seed, index)
    fig = sample_figure(rng)
    h, w = image_hw
    lo, hi = fig.extent()
    size = hi - lo
    scale = min(rng.uniform(0.45, 0.85) * h / size[1], 0.9 * w / size[0])
    free = np.array([w, h]) - size * scale
    fig = transform(fig, scale, rng.uniform(0, 1, 2) * free - lo * scale)
    mask = np.zeros((h, w), np.uint8)
    draw_figure(mask, fig, color=(255,))
    img, visible = _compose(rng, fig, h, w)
    lo, hi = np.clip(fig.extent()[0], 0, None), np.minimum(fig.extent()[1], (w - 1, h - 1))
    bbox = np.concatenate([lo, hi - lo])
    return Sample(img, fig.keypoints.astype(np.float32), visible.astype(np.uint8)), bbox, int((mask > 127).sum())


def coco_categories() -> list[dict]:
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO17),
             "skeleton": [[a + 1, b + 1] for a, b in COCO17_SKELETON]}]


def write_coco(out_dir: str | Path, num_images: int, seed: int, image_size: tuple[int, int]) -> Path:
    """Write `out_dir/images/NNNNNN.png` and `out_dir/annotations.json` atomically; returns out_dir.

    `image_size` is (H, W) of each scene. Keypoints are `[x, y, v] * 17` in pixels, bbox `[x, y, w, h]`,
    `area` the figure's drawn pixel count.
    """
    if num_images < 1:
        raise ConfigError(f"coco_images={num_images} must be at least 1")
    h, w = (int(v) for v in image_size)
    if h < 64 or w < 64:
        raise ConfigError(f"coco_image_size={list(image_size)} is too small; use at least 64x64 (H, W)")
    images, annotations = [], []
    with atomic_path(out_dir, is_dir=True) as tmp:
        (tmp / "images").mkdir()
        for i in range(num_images):
            sample, bbox, area = render_scene(seed, i, (h, w))
            name = f"{i:06d}.png"
            cv2.imwrite(str(tmp / "images" / name), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
            kps = np.concatenate([sample.keypoints, sample.visible[:, None].astype(np.float32)], axis=1)
            kps[sample.visible == 0] = 0.0  # COCO writes unlabelled keypoints as 0,0,0
            images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
            annotations.append({
                "id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                "bbox": [round(float(v), 2) for v in bbox], "area": area,
                "keypoints": [round(float(v), 2) if j % 3 != 2 else int(v) for j, v in enumerate(kps.ravel())],
                "num_keypoints": int((sample.visible > 0).sum()),
            })
        data = {"info": {"description": "procedural demo figures", "seed": seed}, "images": images,
                "annotations": annotations, "categories": coco_categories()}
        (tmp / "annotations.json").write_text(json.dumps(data, sort_keys=True) + "\n", encoding="utf-8")
    return Path(out_dir)
