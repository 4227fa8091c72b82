"""Golden inputs: crops of real photos of people, procedural figures and seeded random tensors.

Photos and licences: pipeline/data/README.md. Crops use mmpose's affine preprocessing, so the
photo inputs are exactly what a deployed model sees. The figures are the demo checkpoint's own
kind of image (pipeline/demo/figures.py), so a model trained on them is checked on inputs where
its outputs are peaked, as a COCO model's are on the photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.preprocess import crop, load_rgb, normalize
from pipeline.spec import ModelSpec

DATA_DIR = Path(__file__).resolve().parent / "data"

# (file, person box xyxy in pixels)
PHOTO_BOXES: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("astronaut.png", (20.0, 10.0, 370.0, 512.0)),
    ("astronaut.png", (100.0, 10.0, 320.0, 300.0)),  # head and shoulders
    ("camera.png", (0.0, 60.0, 330.0, 512.0)),
)


def photo_inputs(spec: ModelSpec) -> np.ndarray:
    """[P,3,H,W] float32 crops of the bundled photos, preprocessed as `spec` says."""
    pre = spec.preprocess
    crops = [normalize(crop(load_rgb(DATA_DIR / name), box, spec.input_hw, pre.bbox_padding)[0], pre)
             for name, box in PHOTO_BOXES]
    return np.stack(crops)


FIGURE_SEED = 1000  # apart from the demo's training (0) and held-out (1) seeds


def figure_inputs(spec: ModelSpec, count: int) -> np.ndarray:
    """[count,3,H,W] float32 procedural figure crops (the same ones for any config), preprocessed as `spec` says."""
    from pipeline.demo.figures import render_batch

    if count == 0:
        return np.zeros((0, 3, *spec.input_hw), np.float32)
    return np.stack([normalize(sample.image, spec.preprocess)
                     for sample in render_batch(FIGURE_SEED, 0, count, spec.input_hw)])


def random_inputs(input_hw: tuple[int, int], count: int, seed: int) -> np.ndarray:
    """[count,3,H,W] standard-normal tensors: the range normalised pixels live in."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, 3, *input_hw)).astype(np.float32)


def golden_inputs(spec: ModelSpec, num_figures: int, num_random: int, seed: int) -> np.ndarray:
    """Photos, then figures, then random tensors: the first photos + figures inputs are images."""
    return np.concatenate([photo_inputs(spec), figure_inputs(spec, num_figures),
                           random_inputs(spec.input_hw, num_random, seed)])
