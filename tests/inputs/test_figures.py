"""Procedural figures (pipeline/inputs/figures.py): deterministic crops with labelled keypoints, and the COCO
writer of the demo data set."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from pipeline.inputs import figures

HW = (256, 192)


def test_same_seed_same_sample_whatever_the_batch():
    a = figures.render_crop(7, 5, HW)
    batch = figures.render_batch(7, 4, 3, HW)
    for other in (figures.render_crop(7, 5, HW), batch[1]):
        np.testing.assert_array_equal(a.image, other.image)
        np.testing.assert_array_equal(a.keypoints, other.keypoints)
        np.testing.assert_array_equal(a.visible, other.visible)
    assert not np.array_equal(a.image, figures.render_crop(8, 5, HW).image)
    assert not np.array_equal(a.keypoints, batch[0].keypoints)


def test_crops_have_the_model_input_shape_and_labelled_keypoints_inside():
    for i in range(20):
        s = figures.render_crop(0, i, HW)
        assert s.image.shape == (*HW, 3) and s.image.dtype == np.uint8
        assert s.keypoints.shape == (17, 2) and s.visible.shape == (17,)
        labelled = s.keypoints[s.visible > 0]
        assert len(labelled) >= 12, "most of the figure should be in the crop"
        assert (labelled >= 0).all() and (labelled[:, 0] <= HW[1] - 1).all() and (labelled[:, 1] <= HW[0] - 1).all()
        assert set(np.unique(s.visible)) <= {0, 1, 2}


def test_visible_keypoints_lie_on_drawn_pixels():
    for i in range(20):
        rng = figures.sample_rng(3, i)
        fig = figures.transform(figures.sample_figure(rng), 200.0, np.array([96.0, 150.0]))
        canvas = np.zeros((320, 192), np.uint8)
        figures.draw_figure(canvas, fig, color=(255,))
        for (x, y), v in zip(fig.keypoints, fig.visible):
            if v == 2 and 0 <= x < 191 and 0 <= y < 319:
                assert canvas[int(round(y)), int(round(x))] > 0


def test_write_coco_fields(tmp_path):
    out = figures.write_coco(tmp_path / "coco", 4, seed=5, image_size=(160, 128))
    data = json.loads((out / "annotations.json").read_text())
    assert len(data["images"]) == len(data["annotations"]) == 4
    category = data["categories"][0]
    assert category["name"] == "person" and len(category["keypoints"]) == 17
    assert all(1 <= j <= 17 for limb in category["skeleton"] for j in limb)
    images = {im["id"]: im for im in data["images"]}
    for ann in data["annotations"]:
        image = images[ann["image_id"]]
        pixels = cv2.imread(str(out / "images" / image["file_name"]))
        assert pixels.shape == (image["height"], image["width"], 3) == (160, 128, 3)
        kps = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
        assert ann["num_keypoints"] == int((kps[:, 2] > 0).sum()) > 0
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 160
        assert 0 < ann["area"] <= w * h + 1
        labelled = kps[kps[:, 2] > 0, :2]
        assert (labelled >= (x - 1, y - 1)).all() and (labelled <= (x + w + 1, y + h + 1)).all()
    assert not (tmp_path / "coco.tmp").exists()


def test_write_coco_refuses_bad_counts_and_leaves_nothing(tmp_path):
    with pytest.raises(ConfigError, match="coco_images"):
        figures.write_coco(tmp_path / "coco", 0, seed=0, image_size=(160, 128))
    assert list(tmp_path.iterdir()) == []
