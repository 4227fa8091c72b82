"""Procedural figures, the COCO writer, the demo config and the SimCC training loop (issue #3)."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch
import yaml

from pipeline.core.errors import ConfigError
from pipeline.demo.config import CONF_DIR, TrainDemoConfig, load_train_demo_config
from pipeline.demo.train import decode_simcc, deterministic, encode_simcc, evaluate, fit
from pipeline.inputs import figures
from pipeline.model.presets import rtmpose_spec
from pipeline.model.rtmpose import RTMPose, build_network

HW = (256, 192)
TINY_HW = (64, 64)


def _tiny_cfg(**kw) -> TrainDemoConfig:
    base = dict(num_train_images=96, batch_size=8, warmup_steps=2, eval_images=16, progress="off")
    return TrainDemoConfig(**{**base, **kw})


def _tiny_model(seed: int) -> RTMPose:
    torch.manual_seed(seed)
    return build_network(rtmpose_spec("tiny", "t", "coco17", TINY_HW))


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


def test_simcc_encode_decode_round_trip():
    keypoints = torch.tensor([[[10.25, 20.0], [191.0, 0.0], [95.5, 130.75]]])
    visible = torch.tensor([[2.0, 2.0, 0.0]])
    tx, ty, weight = encode_simcc(keypoints, visible, HW, (4.9, 5.66))
    assert tx.shape == (1, 3, 384) and ty.shape == (1, 3, 512)
    decoded, score = decode_simcc(tx, ty)
    assert torch.allclose(decoded, keypoints, atol=0.25)
    assert weight.tolist() == [[1.0, 1.0, 0.0]] and torch.all(score > 0.9)


def test_yaml_is_the_dataclass_defaults():
    raw = yaml.safe_load((CONF_DIR / "train_demo.yaml").read_text())
    assert set(raw) == {f.name for f in dataclasses.fields(TrainDemoConfig)}
    assert dataclasses.asdict(load_train_demo_config()) == dataclasses.asdict(TrainDemoConfig())


def test_config_overrides_and_misspelled_keys():
    cfg = load_train_demo_config(["num_train_images=64", "lr=0.001"])
    assert cfg.num_train_images == 64 and cfg.lr == 0.001 and cfg.steps == 64 // cfg.batch_size
    with pytest.raises(ConfigError, match="num_train_image"):
        load_train_demo_config(["+num_train_image=64"])
    with pytest.raises(ConfigError, match="variant"):
        load_train_demo_config(["variant=rtmpose-q_coco17_256x192"])


def test_training_lowers_the_loss_and_is_deterministic():
    cfg = _tiny_cfg(lr=2e-3)
    with deterministic(2):
        model = _tiny_model(0)
        losses = fit(model, cfg, TINY_HW)
        metrics = evaluate(model, cfg, TINY_HW)
        replay = _tiny_model(0)
        assert fit(replay, cfg, TINY_HW) == losses
    assert len(losses) == cfg.steps == 12
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    for key, value in model.state_dict().items():
        assert torch.equal(value, replay.state_dict()[key]), key
    assert {"mean_error_px", "peak_prob", "score"} <= set(metrics) and metrics["eval_images"] == 16
