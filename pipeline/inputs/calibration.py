"""Calibration inputs for INT8: person crops made with the same affine preprocessing as inference.

Sources (`calibration.source`):
- `coco`: a COCO keypoint dataset (`<dir>/annotations.json` + images); every person box is cropped.
  The default is the demo checkpoint's generated set (dvc.yaml stage `demo-data`).
- `images`: a folder of images, each used whole (the box is the full image).
- `blank`: constant grey crops. Useless for real calibration; it exists so that tests can prove
  that verification catches a model calibrated on the wrong data.
Samples are drawn with a seeded generator, so the same config gives the same tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.config import CalibrationConfig
from pipeline.core.errors import ConfigError, InputError
from pipeline.model.preprocess import crop, load_rgb, normalize
from pipeline.model.spec import ModelSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _coco_items(root: Path) -> list[tuple[Path, tuple[float, float, float, float]]]:
    annotations = root / "annotations.json"
    if not annotations.is_file():
        raise InputError(f"calibration.coco_dir={root} has no annotations.json; point it at a COCO keypoint set "
                         "or run `dvc repro demo-data`")
    data = json.loads(annotations.read_text(encoding="utf-8"))
    files = {image["id"]: image["file_name"] for image in data["images"]}
    items = []
    for ann in sorted(data["annotations"], key=lambda a: a["id"]):
        if ann.get("iscrowd", 0) or ann["bbox"][2] <= 1 or ann["bbox"][3] <= 1:
            continue
        x, y, w, h = ann["bbox"]
        name = files[ann["image_id"]]
        path = root / name if (root / name).is_file() else root / "images" / name
        items.append((path, (x, y, x + w, y + h)))
    return items


def _folder_items(root: Path) -> list[tuple[Path, None]]:
    if not root.is_dir():
        raise InputError(f"calibration.images_dir={root} is not a directory of images")
    return [(p, None) for p in sorted(root.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]


def calibration_inputs(cfg: CalibrationConfig, spec: ModelSpec) -> np.ndarray:
    """[num_samples,3,H,W] float32, preprocessed like inference inputs of `spec`."""
    input_hw, pre = spec.input_hw, spec.preprocess
    if cfg.source == "blank":
        return np.stack([normalize(np.full((*input_hw, 3), 128, np.uint8), pre)] * cfg.num_samples)
    if cfg.source == "coco":
        items: list = _coco_items(Path(cfg.coco_dir))
    else:  # images: the schema admits no other source (pipeline/config.py: CALIBRATION_SOURCES)
        if not cfg.images_dir:
            raise ConfigError("calibration.source=images needs calibration.images_dir")
        items = _folder_items(Path(cfg.images_dir))
    if not items:
        raise InputError(f"calibration.source={cfg.source}: no usable images or person boxes found")
    rng = np.random.default_rng(cfg.seed)
    chosen = rng.choice(len(items), size=min(cfg.num_samples, len(items)), replace=False)
    crops = []
    for index in sorted(int(i) for i in chosen):
        path, box = items[index]
        image = load_rgb(path)
        box = box or (0.0, 0.0, float(image.shape[1]), float(image.shape[0]))
        crops.append(normalize(crop(image, box, input_hw, pre.bbox_padding)[0], pre))
    return np.stack(crops)
