"""The demo config and the SimCC training loop of the demo checkpoint (issue #3)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from pipeline.core.errors import ConfigError
from pipeline.demo.config import CONF_DIR, TrainDemoConfig, load_train_demo_config
from pipeline.demo.train import decode_simcc, deterministic, encode_simcc, evaluate, fit
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
