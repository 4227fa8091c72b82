"""The PyTorch RTMPose: published sizes, output shapes, official key names, the presets, and the
description read back off a state_dict's shapes."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from pipeline.core.errors import ConfigError, InputError
from pipeline.model.keypoints import KEYPOINT_SETS
from pipeline.model.presets import INPUT_SIZES, all_presets, preset_spec
from pipeline.model.rtmpose import build_network
from pipeline.sources.describe import spec_from_shapes


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# mmpose's model zoo and `get_flops.py` for the released coco17 configs.
@pytest.mark.parametrize("name, published", [
    ("rtmpose-t_coco17_256x192", 3_337_007),
    ("rtmpose-s_coco17_256x192", 5_473_251),
    ("rtmpose-m_coco17_256x192", 13_587_611),
    ("rtmpose-l_coco17_256x192", 27_660_339),
    ("rtmpose-m_coco17_384x288", 13_717_659),
])
def test_parameter_count_equals_the_published_one(name, published):
    assert num_params(build_network(preset_spec(name))) == published


@pytest.mark.parametrize("keypoints", list(KEYPOINT_SETS))
@pytest.mark.parametrize("hw", INPUT_SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_tiny_model_gives_simcc_shapes(keypoints, hw):
    variant = preset_spec(f"rtmpose-t_{keypoints}_{hw[0]}x{hw[1]}")
    k, (h, w) = len(KEYPOINT_SETS[keypoints]), hw
    model = build_network(variant).eval()
    assert variant.simcc_shapes == {"simcc_x": (k, 2 * w), "simcc_y": (k, 2 * h)}
    head = model.head
    assert (head.final_layer.out_channels, head.cls_x.out_features, head.cls_y.out_features) == (k, 2 * w, 2 * h)
    assert head.mlp[1].in_features == (h // 32) * (w // 32)
    # Forward passes cost CPU time: every keypoint set at 256x192 and every size with coco17 cover
    # both ways the shapes can go wrong (K from the keypoint set; the token count from the size).
    if keypoints == "coco17" or hw == (256, 192):
        n = 2
        with torch.no_grad():
            simcc_x, simcc_y = model(torch.zeros(n, 3, h, w))
        assert tuple(simcc_x.shape) == (n, k, 2 * w)
        assert tuple(simcc_y.shape) == (n, k, 2 * h)


def test_the_head_must_fit_the_stride_32_map_of_the_input_size():
    from pipeline.model.spec import validate

    spec = preset_spec("rtmpose-t_coco17_256x192")
    odd = dataclasses.replace(spec, codec=dataclasses.replace(spec.codec, input_size=(240, 320)))
    with pytest.raises(ConfigError, match=r"does not fit input size 240x320: CSPNeXt gives a 8x10 map"):
        validate(odd)  # 240 // 32 = 7 tokens across, but the convolutions round up to 8
    fitted = dataclasses.replace(odd, head=dataclasses.replace(spec.head, in_featuremap_size=(8, 10)))
    validate(fitted)
    with torch.no_grad():
        simcc_x, simcc_y = build_network(fitted).eval()(torch.zeros(1, 3, 320, 240))
    assert simcc_x.shape == (1, 17, 480) and simcc_y.shape == (1, 17, 640)


OFFICIAL_KEYS = (
    "backbone.stem.0.conv.weight",
    "backbone.stem.2.bn.running_mean",
    "backbone.stage1.0.conv.weight",
    "backbone.stage1.1.main_conv.conv.weight",
    "backbone.stage1.1.blocks.0.conv2.depthwise_conv.conv.weight",
    "backbone.stage1.1.blocks.0.conv2.pointwise_conv.bn.weight",
    "backbone.stage1.1.attention.fc.bias",
    "backbone.stage4.1.conv1.conv.weight",  # SPP bottleneck
    "backbone.stage4.1.conv2.bn.num_batches_tracked",
    "backbone.stage4.2.final_conv.bn.running_var",
    "head.final_layer.weight",
    "head.final_layer.bias",
    "head.mlp.0.g",
    "head.mlp.1.weight",
    "head.gau.uv.weight",
    "head.gau.gamma",
    "head.gau.beta",
    "head.gau.o.weight",
    "head.gau.ln.g",
    "head.gau.res_scale.scale",
    "head.cls_x.weight",
    "head.cls_y.weight",
)


def test_state_dict_keys_are_the_official_ones(t_state_dict):
    keys = set(t_state_dict)
    assert set(OFFICIAL_KEYS) <= keys
    # Released configs use the self-attention GAU without positional/shortcut extras.
    assert not {"head.gau.w", "head.gau.a", "head.gau.b", "head.cls_x.bias", "head.mlp.1.bias"} & keys
    assert all(k.startswith(("backbone.", "head.")) for k in keys)


def test_every_batchnorm_tracks_num_batches(t_state_dict):
    running_vars = {k.rsplit(".", 1)[0] for k in t_state_dict if k.endswith(".running_var")}
    tracked = {k.rsplit(".", 1)[0] for k in t_state_dict if k.endswith(".num_batches_tracked")}
    assert running_vars and running_vars == tracked


def test_official_shapes_of_rtmpose_t_head(t_state_dict):
    assert t_state_dict["head.final_layer.weight"].shape == (17, 384, 7, 7)
    assert t_state_dict["head.mlp.1.weight"].shape == (256, 48)  # 8x6 tokens of a 256x192 input
    assert t_state_dict["head.gau.uv.weight"].shape == (2 * 512 + 128, 256)
    assert t_state_dict["head.cls_x.weight"].shape == (384, 256)
    assert t_state_dict["head.cls_y.weight"].shape == (512, 256)


@pytest.mark.parametrize("name", [
    "rtmpose-t_coco17_256x192",
    "rtmpose-s_halpe26_384x288",
    "rtmpose-m_wholebody133_256x256",
    "rtmpose-l_hand21_256x192",
    "rtmpose-t_face106_256x256",
])
def test_shapes_describe_the_network_they_came_from(name):
    preset = preset_spec(name)
    described = spec_from_shapes(build_network(preset).state_dict(), name, 2.0, None, "test")
    assert (described.backbone, described.head, described.codec.input_size) == \
        (preset.backbone, preset.head, preset.codec.input_size)


def test_shapes_of_something_else_are_refused_with_the_missing_key():
    with pytest.raises(InputError, match="backbone.stem.2.conv.weight"):
        spec_from_shapes({"fc.weight": torch.zeros(2, 2)}, "x", 2.0, None, "test")


def test_preset_names_round_trip():
    names = all_presets()
    assert len(names) == len(set(names)) == 75
    assert all(preset_spec(name).name == name for name in names)


@pytest.mark.parametrize("name, fragments", [
    ("rtmpose-q_coco17_256x192", ["scale 'q'", "t, s, m, l, x"]),
    ("rtmpose-m_coco18_256x192", ["keypoint set 'coco18'", "coco17, halpe26, wholebody133, hand21, face106"]),
    ("rtmpose-m_coco17_320x240", ["320x240", "256x192, 384x288, 256x256"]),
    ("rtmpose_m_coco17", ["rtmpose-<scale>_<keypoints>_<H>x<W>"]),
    ("rtmpose-m_coco17_256x192 ", ["rtmpose-<scale>_<keypoints>_<H>x<W>"]),
])
def test_preset_errors_name_the_allowed_choices(name, fragments):
    with pytest.raises(ConfigError, match=re.escape(fragments[0])) as info:
        preset_spec(name)
    for fragment in fragments:
        assert fragment in str(info.value)
