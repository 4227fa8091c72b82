"""PyTorch -> ONNX: the consumer contract (names, order, dims), metadata, determinism and fidelity;
ONNX supplied by the user; and loading the result the way rtmlib does."""

from __future__ import annotations

import io
import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pipeline.core.errors import InputError
from pipeline.core.io import read_npz
from pipeline.core.onnx_io import get_metadata, run_fp32, set_metadata
from pipeline.graph.export import export_onnx
from pipeline.inputs.golden import DATA_DIR
from pipeline.model.keypoints import COCO17
from pipeline.model.presets import preset_spec
from pipeline.model.rtmpose import build_network
from pipeline.model.spec import ModelSpec, PreprocessSpec
from pipeline.run.configure import load_config
from pipeline.run.steps.export import export
from pipeline.run.steps.reference import reference
from pipeline.sources.weights import build_reference_model

from conftest import REPO_ROOT, VARIANT, max_abs_diff, renamed, run_onnx, sha256


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def export_with(tmp_path: Path, *overrides: str) -> Path:
    """The export step for a config composed with these overrides; returns the ONNX path."""
    cfg = load_config(["model=rtmpose-t_coco17_256x192", "model.checkpoint=null", f"out_dir={tmp_path}", *overrides])
    return export(cfg, VARIANT)


@pytest.fixture(scope="module")
def proto(t_onnx) -> onnx.ModelProto:
    return onnx.load(str(t_onnx))


# ------------------------------------------------------------------------------------------- the contract


def test_io_contract(proto):
    (inp,) = proto.graph.input
    assert inp.name == "input"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims(inp) == ["batch", 3, 256, 192]
    assert [o.name for o in proto.graph.output] == ["simcc_x", "simcc_y"]
    assert [dims(o) for o in proto.graph.output] == [["batch", 17, 384], ["batch", 17, 512]]
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in proto.graph.output)
    onnx.checker.check_model(proto, full_check=True)


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch_runs_in_onnxruntime(batch, t_onnx, golden, torch_outputs):
    outputs = run_onnx(t_onnx, golden[:batch])
    assert outputs["simcc_x"].shape == (batch, 17, 384) and outputs["simcc_y"].shape == (batch, 17, 512)
    assert max_abs_diff(outputs, {k: v[:batch] for k, v in torch_outputs.items()}) < 1e-4


def test_onnx_matches_pytorch_to_fp32_precision(t_onnx, golden, torch_outputs):
    assert max_abs_diff(run_onnx(t_onnx, golden), torch_outputs) < 1e-4


def test_static_batch_is_baked_in(tmp_path, golden):
    path = export_with(tmp_path, "export.dynamic_batch=false", "export.static_batch=2")
    model = onnx.load(str(path))
    assert dims(model.graph.input[0]) == [2, 3, 256, 192]
    assert [dims(o) for o in model.graph.output] == [[2, 17, 384], [2, 17, 512]]
    assert get_metadata(model)["dynamic_batch"] == "false"
    assert run_onnx(path, golden[:2])["simcc_x"].shape == (2, 17, 384)
    with pytest.raises(Exception, match="(?i)invalid.*dimension|Got: 3 Expected: 2"):
        run_onnx(path, golden[:3])


@pytest.mark.parametrize("opset, ir_version", [(11, 6), (17, 8)])
def test_opset_is_configurable_and_ir_version_minimal(opset, ir_version, tmp_path, golden, torch_outputs):
    path = export_with(tmp_path, f"export.opset={opset}")
    model = onnx.load(str(path))
    assert {o.domain: o.version for o in model.opset_import}[""] == opset
    assert model.ir_version == ir_version  # the oldest IR that carries the opset (onnx's VERSION_TABLE)
    assert max_abs_diff(run_onnx(path, golden[:1]), {k: v[:1] for k, v in torch_outputs.items()}) < 1e-4


# ------------------------------------------------------------------------------------------- metadata


def test_metadata_describes_the_model(proto):
    meta = get_metadata(proto)
    assert {"variant", "model_spec", "keypoint_names", "input_size_hw", "mean", "std", "channel_order",
            "simcc_split_ratio", "checkpoint_sha256", "tool_versions", "synthetic_weights"} <= set(meta)
    assert meta["variant"] == VARIANT
    assert ModelSpec.from_dict(json.loads(meta["model_spec"])) == preset_spec(VARIANT)  # the whole description
    assert json.loads(meta["keypoint_names"]) == list(COCO17)
    assert json.loads(meta["input_size_hw"]) == [256, 192]
    assert json.loads(meta["mean"]) == list(PreprocessSpec().mean)
    assert json.loads(meta["std"]) == list(PreprocessSpec().std)
    assert meta["channel_order"] == "RGB"
    assert json.loads(meta["simcc_split_ratio"]) == 2.0
    assert json.loads(meta["synthetic_weights"]) is True
    assert meta["checkpoint_sha256"] == ""
    assert set(json.loads(meta["tool_versions"])) >= {"torch", "onnx"}


def test_checkpoint_export_records_its_hash_and_no_path(tmp_path, t_state_dict):
    checkpoint = tmp_path / "weights" / "my-rtmpose.pth"
    checkpoint.parent.mkdir()
    torch.save(t_state_dict, checkpoint)
    path = export_with(tmp_path / "out", f"model.checkpoint={checkpoint}")
    meta = get_metadata(onnx.load(str(path)))
    assert meta["checkpoint_sha256"] == sha256(checkpoint)
    assert (meta["weights_source"], json.loads(meta["synthetic_weights"])) == ("checkpoint", False)
    data = path.read_bytes()
    assert str(tmp_path).encode() not in data and b"my-rtmpose" not in data


def test_no_absolute_paths_in_the_file(t_onnx):
    data = t_onnx.read_bytes()
    for path in (REPO_ROOT, t_onnx.parent, Path.home(), Path(ort.__file__).parent):
        assert str(path).encode() not in data
    assert b"site-packages" not in data and b".py\"" not in data


def test_two_exports_are_byte_identical(t_onnx, t_cfg, tmp_path):
    model, info = build_reference_model(t_cfg.model, preset_spec(VARIANT))  # a fresh model, built again
    export_onnx(model, preset_spec(VARIANT), info, t_cfg.export, tmp_path / "again.onnx")
    assert sha256(tmp_path / "again.onnx") == sha256(t_onnx)


# ------------------------------------------------------------------------------------------- ONNX input form


def swapped_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    x, y = (onnx.ValueInfoProto.FromString(o.SerializeToString()) for o in out.graph.output)
    del out.graph.output[:]
    out.graph.output.extend([y, x])
    return out


def hand21_model() -> onnx.ModelProto:
    """An ONNX of another variant: right names, wrong K (21 keypoints)."""
    model = build_network(preset_spec("rtmpose-t_hand21_256x192")).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(1, 3, 256, 192),), buffer, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["simcc_x", "simcc_y"])
    return onnx.load_from_string(buffer.getvalue())


def onnx_config(tmp_path: Path, onnx_path: Path):
    """The file, with the preset it claims to be (which lends it COCO-17's names and the preset's name)."""
    return load_config([f"model={VARIANT}", f"model.checkpoint={onnx_path}", f"out_dir={tmp_path / 'out'}"])


def test_user_onnx_passes_through_export_relabelled(tmp_path, proto, golden):
    user = onnx.ModelProto()
    user.CopyFrom(proto)
    set_metadata(user, {"author": "someone"})  # e.g. exported by another tool
    user_path = tmp_path / "user.onnx"
    onnx.save_model(user, str(user_path))

    cfg = onnx_config(tmp_path, user_path)
    exported = onnx.load(str(export(cfg, VARIANT)))
    meta = get_metadata(exported)
    assert meta["variant"] == VARIANT
    assert meta["weights_source"] == "onnx"
    assert meta["checkpoint_sha256"] == sha256(user_path)
    assert meta["author"] == "someone"
    assert exported.graph.SerializeToString() == user.graph.SerializeToString()  # the graph is untouched

    golden = read_npz(reference(cfg, VARIANT))
    np.testing.assert_array_equal(golden["simcc_x"], run_fp32(user, golden["input"])["simcc_x"])


@pytest.mark.parametrize("form", ["renamed output", "renamed input", "swapped outputs"])
def test_user_onnx_of_another_exporter_is_brought_to_the_contract(form, tmp_path, proto, golden):
    other = {
        "renamed output": lambda: renamed(renamed(proto, "simcc_x", "output0"), "simcc_y", "output1"),
        "renamed input": lambda: renamed(proto, "input", "image"),
        "swapped outputs": lambda: swapped_outputs(proto),
    }[form]()
    path = tmp_path / "other.onnx"
    onnx.save_model(other, str(path))
    cfg = onnx_config(tmp_path, path)
    exported = onnx.load(str(export(cfg, VARIANT)))
    assert [i.name for i in exported.graph.input] == ["input"]
    assert [(o.name, dims(o)) for o in exported.graph.output] == [("simcc_x", ["batch", 17, 384]),
                                                                  ("simcc_y", ["batch", 17, 512])]
    assert max_abs_diff(run_onnx(exported, golden[:2]), run_onnx(proto, golden[:2])) == 0.0


def test_user_onnx_of_another_model_is_refused_against_its_preset(tmp_path):
    path = tmp_path / "hand.onnx"
    onnx.save_model(hand21_model(), str(path))
    with pytest.raises(InputError, match=f"21 keypoints, 192x256 .* not model={VARIANT}; drop model="):
        onnx_config(tmp_path, path)
    cfg = load_config([f"model.checkpoint={path}", f"out_dir={tmp_path / 'out'}"])  # the file alone
    assert list(cfg.plan["variants"]) == ["hand"]
    exported = onnx.load(str(export(cfg, "hand")))
    assert [dims(o) for o in exported.graph.output] == [[1, 21, 384], [1, 21, 512]]


@pytest.mark.parametrize("content", ["text", "truncated"])
def test_corrupt_onnx_is_refused(content, tmp_path, t_onnx):
    data = t_onnx.read_bytes()
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"this is not an ONNX model\n" * 20 if content == "text" else data[: len(data) // 2])
    with pytest.raises(InputError, match="is not a readable ONNX model"):
        onnx_config(tmp_path, path)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- rtmlib


BOX = [20, 10, 370, 512]


# rtmlib's keypoints and scores on the shipped model against ours: tests/package/test_dropin.py
# (test_rtmlib_pose_matches_pipeline_infer); here, only that rtmlib runs the export as its users call it.
@pytest.fixture(scope="module")
def rtmlib_pose(demo_onnx):
    rtmlib = pytest.importorskip("rtmlib")
    return rtmlib.RTMPose(onnx_model=str(demo_onnx), model_input_size=(192, 256), backend="onnxruntime", device="cpu")


def test_positional_io_as_rtmlib_reads_it(t_onnx, golden):
    """rtmlib feeds `get_inputs()[0]` and unpacks `simcc_x, simcc_y = outputs` by position."""
    session = ort.InferenceSession(str(t_onnx), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: golden[:1]}
    outputs = session.run([o.name for o in session.get_outputs()], feed)
    by_name = run_onnx(t_onnx, golden[:1])
    assert outputs[0].shape == (1, 17, 384) and outputs[1].shape == (1, 17, 512)
    np.testing.assert_array_equal(outputs[0], by_name["simcc_x"])
    np.testing.assert_array_equal(outputs[1], by_name["simcc_y"])


def test_rtmlib_on_a_bgr_frame_as_its_users_call_it(rtmlib_pose):
    keypoints, scores = rtmlib_pose(cv2.imread(str(DATA_DIR / "astronaut.png")), bboxes=[BOX])
    assert keypoints.shape == (1, 17, 2) and scores.shape == (1, 17)
    assert np.all(np.isfinite(keypoints)) and np.all(np.isfinite(scores))


def test_export_is_one_self_contained_file(t_onnx, tmp_path):
    """No external-data files next to it: a copy on its own is a complete, valid model."""
    assert [p.name for p in t_onnx.parent.iterdir()] == ["model.onnx"]
    copy = tmp_path / "copy.onnx"
    shutil.copyfile(t_onnx, copy)
    onnx.checker.check_model(str(copy), full_check=True)
