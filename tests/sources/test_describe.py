"""The model is described by its file: config text, dataset meta, tensor shapes, ONNX I/O and SDK files.

Fixtures here are made in the forms the upstream tools write (mmengine's pretty_text config, mmpose's
dataset_meta, MMDeploy's SDK JSON, exporters that leave the keypoint dimension symbolic or fix the
batch); tests/sources/test_mmpose_files.py covers the files made by mmpose's own code.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.onnx_io import fixed_batch, run_fp32
from pipeline.model.keypoints import COCO17
from pipeline.model.presets import preset_spec, rtmpose_spec
from pipeline.model.rtmpose import build_network
from pipeline.model.spec import KeypointSpec, ModelSpec, generic_keypoint_names
from pipeline.model.synthetic import synthetic_state_dict
from pipeline.sources.checkpoint import load_weights, save_mmpose_checkpoint
from pipeline.sources.describe import derived_name, describe, spec_from_shapes
from pipeline.sources.mmpose_config import config_text, parse_config_text, spec_from_config

from conftest import sdk_package

VARIANT = "rtmpose-t_coco17_256x192"


def describe_file(path, **overrides) -> ModelSpec:
    return describe(ModelConfig(checkpoint=str(path), **overrides))


# ------------------------------------------------------------------------------------------ config text


def test_config_text_is_read_without_executing_anything(tmp_path):
    marker = tmp_path / "ran"
    text = (f"import os\nos.system('touch {marker}')\n"
            f"x = __import__('os').system('touch {marker}')\n"
            "codec = dict(type='SimCCLabel', input_size=(192, 256), sigma=(4.9, 5.66), simcc_split_ratio=2.0)\n"
            "model = dict(type='TopdownPoseEstimator', neg=-1.5, items=[1, (2, 3)], d={'a': None})\n"
            "lam = lambda: 1\n")
    config = parse_config_text(text)
    assert not marker.exists()
    assert set(config) == {"codec", "model"}  # the call, the import and the lambda are skipped
    assert config["model"] == {"type": "TopdownPoseEstimator", "neg": -1.5, "items": [1, (2, 3)], "d": {"a": None}}
    with pytest.raises(InputError, match="meta.cfg is not a config text"):
        parse_config_text("model = dict(")


@pytest.mark.parametrize("preset", ["rtmpose-t_coco17_256x192", "rtmpose-m_hand21_256x256",
                                    "rtmpose-x_wholebody133_384x288"])
def test_config_text_round_trips_a_description(preset):
    spec = preset_spec(preset)
    again = spec_from_config(parse_config_text(config_text(spec)), spec.name, spec.keypoints, "test")
    assert (again.backbone, again.neck, again.head, again.codec, again.preprocess) == \
        (spec.backbone, spec.neck, spec.head, spec.codec, spec.preprocess)


def rtmw_spec() -> ModelSpec:
    """RTMW-m as its cocktail14 config builds it (CSPNeXt out_indices (2, 3, 4), PAFPN, RTMWHead)."""
    config = parse_config_text(config_text(preset_spec("rtmpose-m_wholebody133_256x192")))
    model = config["model"]
    model["backbone"]["out_indices"] = (2, 3, 4)
    model["neck"] = dict(type="CSPNeXtPAFPN", in_channels=[192, 384, 768], out_channels=None, out_indices=(1, 2),
                         num_csp_blocks=2, expand_ratio=0.5, norm_cfg=dict(type="SyncBN"),
                         act_cfg=dict(type="SiLU", inplace=True))
    model["head"]["type"] = "RTMWHead"
    return spec_from_config(config, "rtmw-m", None, "test")


def test_rtmw_config_builds_the_neck_and_the_rtmw_head():
    spec = rtmw_spec()
    assert spec.neck is not None and spec.head.type == "RTMWHead"
    model = build_network(spec).eval()
    keys = set(model.state_dict())
    assert {"neck.reduce_layers.0.conv.weight", "neck.top_down_blocks.1.blocks.1.conv2.pointwise_conv.bn.bias",
            "neck.bottom_up_blocks.1.final_conv.conv.weight", "head.conv_dec.bn.running_var",
            "head.final_layer2.conv.weight", "head.mlp2.1.weight"} <= keys
    assert not any(k.startswith("neck.") and ".attention." in k for k in keys)  # the neck's CSP layers have none
    with torch.no_grad():
        simcc_x, simcc_y = model(torch.zeros(1, 3, 256, 192))
    assert simcc_x.shape == (1, 133, 384) and simcc_y.shape == (1, 133, 512)
    # The shapes alone describe the same network.
    shapes = spec_from_shapes(model.state_dict(), "rtmw-m", 2.0, None, "test")
    assert (shapes.backbone, shapes.neck, shapes.head) == (spec.backbone, spec.neck, spec.head)


@pytest.mark.parametrize("edit, key", [
    (lambda m: m["head"]["gau_cfg"].update(use_rel_bias=True), "model.head.gau_cfg.use_rel_bias=True"),
    (lambda m: m["head"]["gau_cfg"].update(pos_enc=True), "model.head.gau_cfg.pos_enc=True"),
    (lambda m: m["backbone"].update(arch="P6"), "model.backbone.arch='P6'"),
    (lambda m: m["backbone"].update(type="ResNet"), "model.backbone.type='ResNet'"),
    (lambda m: m["head"].update(type="HeatmapHead"), "model.head.type='HeatmapHead'"),
    (lambda m: m["backbone"].update(act_cfg=dict(type="ReLU")), "model.backbone.act_cfg"),
    (lambda m: m.update(type="BottomupPoseEstimator"), "model.type='BottomupPoseEstimator'"),
])
def test_configs_we_do_not_implement_are_refused_naming_the_key(edit, key):
    config = parse_config_text(config_text(preset_spec(VARIANT)))
    edit(config["model"])
    with pytest.raises(InputError, match="is not supported") as info:
        spec_from_config(config, "x", None, "my.pth")
    assert key in str(info.value) and str(info.value).startswith("my.pth: ")


# ------------------------------------------------------------------------------------------ checkpoints


def custom_spec(name: str, k: int, size_wh: tuple[int, int]) -> ModelSpec:
    """A fine-tuned model: another keypoint count and input size than any preset."""
    base = rtmpose_spec(name, "s", "coco17", (size_wh[1], size_wh[0]))
    names = tuple(f"landmark_{i}" for i in range(k))
    return dataclasses.replace(base, head=dataclasses.replace(base.head, out_channels=k),
                               keypoints=KeypointSpec("my_dataset", names, ((0, 1), (1, 2)), tuple(range(k))))


def test_a_custom_keypoint_count_and_size_converts_from_the_file_alone(tmp_path):
    spec = custom_spec("my-rtmpose-s", 38, (240, 320))
    path = tmp_path / "epoch_30.pth"
    save_mmpose_checkpoint(path, synthetic_state_dict(spec, 3), spec, experiment_name="my-rtmpose-s_20240102_030405")
    described = describe_file(path)
    assert described.name == "my-rtmpose-s"  # mmengine's timestamp stripped
    assert (described.num_keypoints, described.codec.input_size) == (38, (240, 320))
    assert described.keypoint_names == spec.keypoint_names and described.keypoints.skeleton == ((0, 1), (1, 2))
    assert (described.backbone, described.head) == (spec.backbone, spec.head)


def test_meta_cfg_that_contradicts_the_weights_is_refused(tmp_path):
    spec = custom_spec("x", 38, (192, 256))
    state = synthetic_state_dict(preset_spec(VARIANT), 0)  # 17 keypoints, t-scale
    path = tmp_path / "stale.pth"
    save_mmpose_checkpoint(path, state, spec)
    with pytest.raises(InputError, match="meta.cfg says keypoints .* 38, but the weights have 17"):
        describe_file(path)


@pytest.mark.parametrize("layout", ["ema", "prefixed-model", "fp16", "bf16", "distiller"])
def test_weight_layouts_load_to_the_same_network(layout, tmp_path):
    spec = preset_spec("rtmpose-t_hand21_256x256")
    state = synthetic_state_dict(spec, 1)
    if layout == "ema":  # mmengine's averaged model saved on its own
        obj = {"steps": torch.tensor(1234), **{f"module.{k}": v for k, v in state.items()}}
    elif layout == "prefixed-model":
        obj = {f"model.{k}": v for k, v in state.items()}
    elif layout in ("fp16", "bf16"):
        dtype = torch.float16 if layout == "fp16" else torch.bfloat16
        obj = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    else:  # DWPose's distiller before pth_transfer.py: student and teacher in one state_dict
        teacher = synthetic_state_dict(preset_spec("rtmpose-l_hand21_256x256"), 2)
        obj = {"meta": {"cfg": "model = dict(type='DWPoseDistiller', student_cfg='configs/s.py')"},
               "state_dict": {**{f"student.{k}": v for k, v in state.items()},
                              **{f"teacher.{k}": v for k, v in teacher.items()}}}
    path = tmp_path / f"{layout}.pth"
    torch.save(obj, path)
    weights = load_weights(path)
    assert weights.form == {"ema": "ema-state-dict", "distiller": "distiller-checkpoint"}.get(layout, weights.form)
    assert list(weights.state_dict) == list(state)
    assert all(v.dtype == torch.float32 for v in weights.state_dict.values() if v.is_floating_point())
    if layout in ("fp16", "bf16"):
        assert any(layout in note for note in weights.notes)
    described = describe_file(path)
    assert (described.backbone, described.head, described.num_keypoints) == (spec.backbone, spec.head, 21)
    assert described.keypoint_names == generic_keypoint_names(21)  # nothing in the file names them


def test_dataset_meta_names_and_the_preset_names_where_the_file_has_none(tmp_path):
    state = synthetic_state_dict(preset_spec(VARIANT), 0)
    bare = tmp_path / "bare.pth"
    torch.save(state, bare)
    assert describe_file(bare).keypoint_names == generic_keypoint_names(17)
    assert describe(ModelConfig(preset=VARIANT, checkpoint=str(bare))).keypoint_names == COCO17
    named = describe_file(bare, keypoint_names=[f"p{i}" for i in range(17)])
    assert named.keypoint_names[3] == "p3"
    with pytest.raises(ConfigError, match="model.keypoint_names has 3 names, but .* has 17 keypoints"):
        describe_file(bare, keypoint_names=["a", "b", "c"])


def test_overrides_fill_what_the_file_leaves_open_and_cannot_contradict_its_network(tmp_path):
    path = tmp_path / "bare.pth"
    torch.save(synthetic_state_dict(preset_spec(VARIANT), 0), path)
    bgr = describe_file(path, mean=[103.53, 116.28, 123.675], std=[57.375, 57.12, 58.395], bgr_to_rgb=False)
    assert bgr.preprocess.channel_order == "BGR" and bgr.preprocess.mean[0] == 103.53
    with pytest.raises(ConfigError, match=r"model.input_size=\[288, 384\] contradicts"):
        describe_file(path, input_size=[288, 384])


@pytest.mark.parametrize("path, meta, recorded, expected", [
    ("work_dirs/x/epoch_210.pth", {"experiment_name": "rtmpose-m_8xb256-420e_coco-256x192_20230228_120000"}, None,
     "rtmpose-m_8xb256-420e_coco-256x192"),
    ("downloads/rtmpose-m_simcc-body7_pt-body7_420e-256x192-e48f03d0_20230504.pth", {}, None,
     "rtmpose-m_simcc-body7_pt-body7_420e-256x192-e48f03d0_20230504"),
    ("mmdeploy_out/rtmpose-t/end2end.onnx", {}, None, "rtmpose-t"),
    ("x/model.onnx", {}, "my pose<script>", "my_pose_script"),
    ("x/a\nb\x00.pth", {}, None, "a_b"),
])
def test_derived_names_are_safe_folder_names(path, meta, recorded, expected):
    assert derived_name(Path(path), meta, recorded) == expected


def test_names_with_separators_or_control_characters_are_refused(tmp_path):
    for bad in ("../up", "a/b", "a.b", "tab\there", "new\nline", "-leading", "x" * 121):
        with pytest.raises(ConfigError, match="not a usable model name"):
            describe(ModelConfig(preset=VARIANT, name=bad))


# ------------------------------------------------------------------------------------------ ONNX and SDK


def raw_export(spec: ModelSpec, path: Path, dynamic: bool, opset: int = 11) -> Path:
    """An export the way MMDeploy's torch2onnx writes it: dynamic batch, K left symbolic, no metadata."""
    model = build_network(spec).eval()
    model.load_state_dict(synthetic_state_dict(spec, 5))
    h, w = spec.input_hw
    axes = {"input": {0: "batch"}, "simcc_x": {0: "batch"}, "simcc_y": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, h, w),), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["simcc_x", "simcc_y"], dynamic_axes=axes)
    return path


def test_an_mmdeploy_style_onnx_with_symbolic_keypoints_is_described_by_running_it(tmp_path):
    spec = preset_spec("rtmpose-t_halpe26_256x192")
    (tmp_path / "rtmpose-t_halpe").mkdir()
    path = raw_export(spec, tmp_path / "rtmpose-t_halpe" / "end2end.onnx", dynamic=True)
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim]
    assert isinstance(dims[1], str)  # the exporter left K symbolic, as MMDeploy's files have it
    described = describe_file(path)
    # MMDeploy names the file end2end.onnx and the folder after the model
    assert (described.name, described.num_keypoints, described.codec.input_size) == ("rtmpose-t_halpe", 26, (192, 256))
    assert not described.has_network and "stem fits rtmpose-t" in described.source["architecture"]
    with pytest.raises(InputError, match="26 keypoints, 192x256 .* not model=rtmpose-t_coco17_256x192"):
        describe(ModelConfig(preset=VARIANT, checkpoint=str(path)))


def test_a_static_batch_onnx_runs_in_chunks(tmp_path):
    spec = preset_spec(VARIANT)
    path = raw_export(spec, tmp_path / "static.onnx", dynamic=False)
    model = onnx.load(str(path))
    assert fixed_batch(model) == 1
    inputs = np.random.default_rng(0).standard_normal((3, 3, 256, 192)).astype(np.float32)
    chunked = run_fp32(model, inputs)
    one_by_one = [run_fp32(model, inputs[i:i + 1])["simcc_x"] for i in range(3)]
    assert chunked["simcc_x"].shape == (3, 17, 384)
    np.testing.assert_array_equal(chunked["simcc_x"], np.concatenate(one_by_one))


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "zip"])
def test_an_sdk_folder_or_zip_is_described_by_its_pipeline_json(packed, tmp_path):
    spec = preset_spec("rtmpose-t_hand21_256x256")
    folder = sdk_package(spec, raw_export(spec, tmp_path / "e.onnx", dynamic=True),
                         tmp_path / "rtmpose-t_hand", to_rgb=False)
    source = folder
    if packed:
        source = tmp_path / "rtmpose-t_hand-sdk.zip"
        with zipfile.ZipFile(source, "w") as archive:
            for child in sorted(folder.iterdir()):
                archive.write(child, f"rtmpose-t_hand/{child.name}")
    described = describe_file(source)
    assert described.name == ("rtmpose-t_hand-sdk" if packed else "rtmpose-t_hand")
    assert (described.num_keypoints, described.codec.input_size) == (21, (256, 256))
    assert described.preprocess.channel_order == "BGR"  # pipeline.json's Normalize to_rgb=false
    assert described.source["preprocess"] == "pipeline.json"



def test_an_sdk_package_whose_decoder_uses_dark_is_refused(tmp_path):
    """MMDeploy writes the codec's settings into pipeline.json; a DARK decoder is refused as in meta.cfg (#21)."""
    spec = preset_spec("rtmpose-t_hand21_256x256")
    folder = sdk_package(spec, raw_export(spec, tmp_path / "e.onnx", dynamic=True), tmp_path / "sdk")
    pipeline = json.loads((folder / "pipeline.json").read_text())
    pipeline["pipeline"]["tasks"][2]["params"]["use_dark"] = True
    (folder / "pipeline.json").write_text(json.dumps(pipeline))
    with pytest.raises(InputError, match=r"pipeline.json SimCCLabel use_dark=True: DARK refinement is not implemented"):
        describe_file(folder)

def test_an_sdk_net_outside_its_folder_is_refused(tmp_path):
    spec = preset_spec(VARIANT)
    folder = sdk_package(spec, raw_export(spec, tmp_path / "e.onnx", dynamic=True), tmp_path / "sdk")
    deploy = json.loads((folder / "deploy.json").read_text())
    deploy["models"][0]["net"] = "../e.onnx"
    (folder / "deploy.json").write_text(json.dumps(deploy))
    with pytest.raises(InputError, match="points outside the folder"):
        describe_file(folder)


def test_a_folder_that_is_not_an_sdk_model_says_what_is_missing(tmp_path):
    with pytest.raises(InputError, match="folder without deploy.json and pipeline.json"):
        describe_file(tmp_path)


def test_our_own_onnx_records_the_whole_description(tmp_path):
    from pipeline.config import ExportConfig
    from pipeline.graph.export import export_onnx
    from pipeline.sources.weights import WeightsInfo

    spec = custom_spec("mine", 38, (240, 320))
    model = build_network(spec).eval()
    path = tmp_path / "mine.onnx"
    export_onnx(model, spec, WeightsInfo("synthetic", "test", "", ""), ExportConfig(), path)
    described = describe_file(path)
    assert (described.name, described.keypoints, described.codec) == ("mine", spec.keypoints, spec.codec)
