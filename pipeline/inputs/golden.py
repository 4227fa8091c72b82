"""Golden inputs: crops of real photos of people, procedural figures and seeded random tensors.

Photos and licences: pipeline/inputs/data/README.md. Crops use mmpose's affine preprocessing, so the
photo inputs are exactly what a deployed model sees. The figures are the demo checkpoint's own
kind of image (pipeline/inputs/figures.py), so a model trained on them is checked on inputs where
its outputs are peaked, as a COCO model's are on the photos.

The image crops are kept as uint8 RGB (`golden_crops`) as well as normalised: verification feeds
each side the crops normalised its own way (the reference model's preprocessing, the artifact's
recorded one), so an artifact that records the wrong preprocessing is caught end to end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.inputs.figures import render_batch
from pipeline.model.preprocess import crop, load_rgb
from pipeline.model.spec import ModelSpec

DATA_DIR = Path(__file__).resolve().parent / "data"

# (file, person box xyxy in pixels)
PHOTO_BOXES: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("astronaut.png", (20.0, 10.0, 370.0, 512.0)),
    ("astronaut.png", (100.0, 10.0, 320.0, 300.0)),  # head and shoulders
    ("camera.png", (0.0, 60.0, 330.0, 512.0)),
)


def photo_crops(spec: ModelSpec) -> np.ndarray:
    """[P,H,W,3] uint8 RGB crops of the bundled photos, cut as `spec` says (input size, box padding)."""
    return np.stack([crop(load_rgb(DATA_DIR / name), box, spec.input_hw, spec.preprocess.bbox_padding)[0]
                     for name, box in PHOTO_BOXES])



FIGURE_SEED = 1000  # apart from the demo's training (0) and held-out (1) seeds


def figure_crops(input_hw: tuple[int, int], count: int) -> np.ndarray:
    """[count,H,W,3] uint8 RGB procedural figure crops (the same ones for any config)."""

    if count == 0:
        return np.zeros((0, *input_hw, 3), np.uint8)
    return np.stack([sample.image for sample in render_batch(FIGURE_SEED, 0, count, input_hw)])

def random_inputs(input_hw: tuple[int, int], count: int, seed: int) -> np.ndarray:
    """[count,3,H,W] standard-normal tensors: the range normalised pixels live in."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, 3, *input_hw)).astype(np.float32)


def golden_crops(spec: ModelSpec, num_figures: int) -> np.ndarray:
    """[P+F,H,W,3] uint8 RGB: the photo crops, then the figure crops (the image part of the golden set)."""
    return np.concatenate([photo_crops(spec), figure_crops(spec.input_hw, num_figures)])
